"""One text's bfloat16 attention alone: minienc's `bfloat16_math` (blocks of queries) against PyTorch's flash kernel, on
the attention shapes of the families at their real size, at several block sizes.

    python scripts/attention_blocks.py [--lengths 128 512 1024 2048] [--mib 1 2 4 8] [--calls 12]

Each cell: the time of the family's own `sdpa` form on one text (PyTorch's flash kernel, handed the mask and the keys
as the family hands them: a decoder is_causal and shared key heads; EmbeddingGemma's layers a mask, global ones all
True, so its keys repeated) over bfloat16_math's with the text's mask, on the same random bfloat16 inputs (higher:
the blocks faster). --mib sets `SCORES_BYTES`, the bytes of one block's scores for all heads; the last column is one
block, the whole matrices. docs/performance.md holds a run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import minienc.runtime.attention as runtime
from minienc.model.attention import band, causal_sdpa, causal_triangle, upcast_sdpa

# name -> (query heads, key heads, head size, the text's mask: "causal", "all", a band's radius, or None)
SHAPES = {
    "Qwen3-0.6B (16 / 8 x 128, causal)": (16, 8, 128, "causal"),
    "EmbeddingGemma global (3 / 1 x 256)": (3, 1, 256, "all"),
    "EmbeddingGemma local (band of 256 each way)": (3, 1, 256, 256),
    "ModernBERT global (12 x 64)": (12, 12, 64, None),
    "ModernBERT local (band of 64 each way)": (12, 12, 64, 64),
}
WHOLE = 1 << 40  # SCORES_BYTES that holds every length: one block


def median_ms(fn, calls: int) -> float:
    """Median time of fn() in milliseconds, after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def cell(heads: int, kv_heads: int, hs: int, kind, T: int, mib: list[int], calls: int) -> list[float]:
    """flash / bfloat16_math at each block size, for one shape and length."""
    q = torch.randn(1, T, heads, hs).bfloat16().transpose(1, 2)  # (1, nh, T, hs), laid out as a projection gives it
    k, v = (torch.randn(1, kv_heads, T, hs).bfloat16() for _ in range(2))
    scale = hs**-0.5
    masks = {None: None, "causal": causal_triangle(T, "cpu"), "all": torch.ones(1, 1, T, T, dtype=torch.bool)}
    mask = masks[kind] if kind in masks else band(T, kind, "cpu")
    if kind == "causal":  # transformers' rule for a decoder: no mask, the kernel's is_causal
        flash = median_ms(lambda: causal_sdpa(q, k, v, None, scale), calls)
    else:
        flash = median_ms(lambda: upcast_sdpa(q, k, v, mask, scale), calls)
    ratios = []
    for size in [*mib, None]:
        runtime.SCORES_BYTES = WHOLE if size is None else size << 20
        ratios.append(flash / median_ms(lambda: runtime.bfloat16_math(q, k, v, mask, scale), calls))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--mib", type=int, nargs="+", default=[1, 2, 4, 8], help="block sizes, MiB of scores")
    parser.add_argument("--calls", type=int, default=12)
    args = parser.parse_args()
    print(f"# {torch.get_num_threads()} threads; torch {torch.__version__}; flash kernel time / bfloat16_math time\n")
    print("| shape | tokens | " + " | ".join(f"{size} MiB" for size in args.mib) + " | whole |")
    print("|---|---|" + "---|" * (len(args.mib) + 1))
    with torch.inference_mode():
        for name, (heads, kv_heads, hs, kind) in SHAPES.items():
            for T in args.lengths:
                ratios = cell(heads, kv_heads, hs, kind, T, args.mib, args.calls)
                print(f"| {name} | {T} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
