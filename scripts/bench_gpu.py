"""The fast path on a CUDA GPU: minienc's packed float16 / bfloat16 execution (variable-length flash attention)
against sentence-transformers on the same GPU, in one process, runs alternated, medians reported.

    python scripts/bench_gpu.py [--model DIR] [--repeats 5] [--batch-size 32]

The corpora are scripts/bench.py's. sentence-transformers runs in float32, float16 and bfloat16 with batch_size
texts a batch; minienc's packed execution fills batches by token budget, with the linear layers in row blocks
(batch-invariant) or not (None: one kernel call per matrix), for the settings in PACKED. "max diff" is the
largest difference of any vector entry from sentence-transformers' float32 vectors (all unit-normalized).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench import corpora, default_model  # scripts/bench.py
from minienc.heads.pipeline import ROW_BLOCKS, TOKEN_BUDGETS

# minienc packed runs: (dtype, token budget, row block); row blocks keep a text's vector independent of its batch.
# The CPU's sizes, then the GPU's, then the GPU's batches without row blocks.
CPU, GPU = (TOKEN_BUDGETS["cpu"], ROW_BLOCKS["cpu"]), (TOKEN_BUDGETS["cuda"], ROW_BLOCKS["cuda"])
PACKED = [(dtype, *sizes) for dtype in ("float16", "bfloat16") for sizes in (CPU, GPU, (GPU[0], None))]


def systems(folder: Path, batch_size: int) -> tuple[dict, dict]:
    """(name -> encode(texts) returning (n, dim) float32 unit vectors, every model on the GPU; name -> minienc's
    row-blocked packed models)."""
    from sentence_transformers import SentenceTransformer

    import minienc

    runners, blocked = {}, {}
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        st = SentenceTransformer(str(folder), device="cuda", model_kwargs={"dtype": dtype})
        runners[f"sentence-transformers {name}"] = lambda texts, st=st: st.encode(texts, batch_size=batch_size)
    for dtype, budget, row_block in PACKED:
        model = minienc.SentenceEncoder.from_pretrained(folder, device="cuda", dtype=dtype, row_block=row_block)
        system = f"minienc packed {dtype}, {budget} tokens, row_block={row_block}"
        runners[system] = lambda texts, m=model, budget=budget: m.encode(texts, token_budget=budget)
        if row_block is not None:
            blocked[system] = model
    padded = minienc.SentenceEncoder.from_pretrained(folder, device="cuda", dtype="float16", execution="padded")
    runners["minienc padded float16"] = lambda texts: padded.encode(texts, batch_size=batch_size)
    return runners, blocked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 is float32
    runners, blocked = systems(args.model or default_model(), args.batch_size)
    print(f"# {torch.cuda.get_device_name()}; torch {torch.__version__}; batch size {args.batch_size}; "
          f"median of {args.repeats} alternated runs\n")
    print("| corpus | texts | system | median ms | vs ST float16 | max diff vs ST float32 |")
    print("|---|---|---|---|---|---|")
    for name, texts in corpora().items():
        outputs = {system: run(texts) for system, run in runners.items()}  # warm-up, and the vectors to compare
        times: dict[str, list[float]] = {system: [] for system in runners}
        for repeat in range(args.repeats):
            order = list(runners)[repeat % len(runners):] + list(runners)[: repeat % len(runners)]
            for system in order:
                torch.cuda.synchronize()
                start = time.perf_counter()
                runners[system](texts)  # returns NumPy: the GPU work is done when it returns
                times[system].append(time.perf_counter() - start)
        baseline = statistics.median(times["sentence-transformers float16"])
        for system, observed in times.items():
            median = statistics.median(observed)
            diff = np.abs(outputs[system] - outputs["sentence-transformers float32"]).max()
            print(f"| {name} | {len(texts)} | {system} | {median * 1000:.1f} | {baseline / median:.2f}x | {diff:.1e} |")
        sys.stdout.flush()
    for system, model in blocked.items():  # which calls of several row blocks the probes refused on this GPU
        refused = sorted({blocks for (_, blocks), merges in model.kernel.merged.items() if not merges})
        print(f"# {system}: batch_invariant {model.batch_invariant}; merged calls refused by the probe: "
              f"{refused or 'none'}")


if __name__ == "__main__":
    main()
