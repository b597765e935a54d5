"""What packed execution's row blocks cost: seconds per corpus and for one short query, for several row_block values
(None: one kernel call per matrix, not batch-invariant), on one model, alternated in one process.

    python scripts/row_block.py [--model DIR] [--dtype float32] [--repeats 3] [--blocks 0 32 64 128 256]

(0 means None)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import minienc
from bench import corpora, cpu_name, default_model  # scripts/bench.py: the same corpora


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, nargs="*", default=[0, 32, 64, 128, 256])
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, ... (as from_pretrained takes it)")
    args = parser.parse_args()
    blocks = [b or None for b in args.blocks]
    models = {b: minienc.SentenceEncoder.from_pretrained(args.model or default_model(), row_block=b, dtype=args.dtype)
              for b in blocks}
    print(f"# {cpu_name()}; {torch.get_num_threads()} threads; "
          f"matmul {models[blocks[0]].matmul_name}; {args.dtype}; median of {args.repeats}")
    print("| row_block | " + " | ".join(f"{name} s" for name in ("short", "mixed", "long")) + " | one query ms |")
    print("|---" * 5 + "|")
    rows = {b: [] for b in blocks}
    for name, texts in corpora().items():
        times = {b: [] for b in blocks}
        for repeat in range(args.repeats + 1):  # the first round warms up (oneDNN kernels, the row-block probes)
            for b in blocks:
                start = time.perf_counter()
                models[b].encode(texts)
                if repeat:
                    times[b].append(time.perf_counter() - start)
        for b in blocks:
            rows[b].append(f"{statistics.median(times[b]):.2f}")
    for b in blocks:
        models[b].encode("what is the capital of France?")
        start = time.perf_counter()
        for _ in range(50):
            models[b].encode("what is the capital of France?")
        rows[b].append(f"{(time.perf_counter() - start) / 50 * 1000:.1f}")
        print(f"| {b} | " + " | ".join(rows[b]) + " |")


if __name__ == "__main__":
    main()
