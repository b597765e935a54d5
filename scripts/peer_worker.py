"""Serves sentence-transformers on its ONNX Runtime or OpenVINO backend to scripts/bench.py, one process per backend.

    VENV/bin/python scripts/peer_worker.py --model DIR --backend {onnx,onnx-qint8,openvino,openvino-f32} --threads N \
        --batch-size 32 --cache DIR [--max-seq-length N]

Run with the python of a venv that scripts/peers.sh built: those backends pin versions of transformers that the
test environment cannot hold, so this file imports nothing from minienc, only the standard library, numpy and
sentence-transformers (with torch and the backend's own runtime, for thread counts and the precision report).

The model folder is copied once into --cache/<backend>, because exporting writes into the folder it loads from
(onnx/model.onnx, onnx/model_qint8_avx512_vnni.onnx, openvino/openvino_model.xml). Later runs load the export.

Protocol, one JSON object per line. stdout carries nothing else (every library's output is sent to stderr):
  worker  -> {"ready": true, "versions": {package: version}, "precision": "...", "exported": bool}    once, after
             loading; exported: this process wrote the export (its peak memory then includes the export's)
  bench   -> {"texts_file": "/path/texts.json", "vectors_out": "/path/vectors.npy" or null}
             texts_file holds a JSON list of strings
  worker  -> {"seconds": s, "peak_gib": g}    the time of model.encode alone, and the worker's peak resident memory
             so far (VmHWM, GiB); the (n, dim) float32 vectors go to vectors_out
End of input ends the worker with status 0; any error is reported on stderr with a non-zero status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

# onnx-qint8: the ONNX export, dynamically quantized to int8; openvino: OpenVINO's default precision for this CPU
# (bf16 where the CPU has bf16 instructions); openvino-f32: OpenVINO held to float32
BACKENDS = ["onnx", "onnx-qint8", "openvino", "openvino-f32"]
PACKAGES = ["sentence-transformers", "transformers", "torch", "numpy", "optimum", "optimum-onnx", "onnxruntime",
            "optimum-intel", "openvino"]


def protocol_channel() -> TextIO:
    """The real stdout, kept for the protocol; file descriptor 1 then points at stderr, so that prints and
    progress from Python and from the C++ runtimes alike cannot corrupt the protocol."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def cached_copy(model: Path, cache: Path, backend: str) -> Path:
    """cache/backend: a copy of the model folder that this backend may export into, made once."""
    copy, source = cache / backend, str(model.resolve())
    marker = copy / ".peer_worker_source"  # which folder the copy came from
    if copy.exists():
        if not marker.exists() or marker.read_text() != source:
            raise SystemExit(f"peer_worker: {copy} is not a copy of {source}; delete it or pass another --cache")
        return copy
    partial = cache / f".{backend}.partial"  # renamed into place only once complete
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(model, partial)
    (partial / ".peer_worker_source").write_text(source)
    partial.rename(copy)
    return copy


def quantization_config() -> str:
    """The best of sentence-transformers' dynamic int8 configurations for this CPU."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def load(folder: Path, backend: str, threads: int):
    """(SentenceTransformer, precision) on `backend`, exporting it into `folder` the first time."""
    from sentence_transformers import SentenceTransformer

    def open_model(st_backend: str, model_kwargs: dict) -> SentenceTransformer:
        return SentenceTransformer(str(folder), backend=st_backend, device="cpu", model_kwargs=model_kwargs,
                                   local_files_only=True)

    if backend.startswith("openvino"):
        # optimum-intel hands ov_config to core.compile_model; its default performance hint is LATENCY (one stream)
        ov_config = {"INFERENCE_NUM_THREADS": threads}
        if backend == "openvino-f32":
            ov_config["INFERENCE_PRECISION_HINT"] = "f32"
        model = open_model("openvino", {"ov_config": ov_config})
        if not (folder / "openvino" / "openvino_model.xml").exists():
            model.save_pretrained(str(folder))  # writes openvino/openvino_model.xml, .bin
        # the precision OpenVINO picked for this CPU: bf16 where the CPU has bf16 instructions, so its vectors are
        # not bit-for-bit an fp32 model's
        compiled = model.transformers_model.request  # the openvino.CompiledModel that runs
        return model, f"{compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()} (INFERENCE_PRECISION_HINT)"

    import onnxruntime

    def onnx_kwargs(file_name: str | None = None) -> dict:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # one operator over N threads
        options.inter_op_num_threads = 1  # operators run one after another
        kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
        return kwargs if file_name is None else {**kwargs, "file_name": file_name}

    def fp32() -> SentenceTransformer:
        # no file_name: sentence-transformers then loads onnx/model.onnx, or exports it when missing (given a
        # file_name, optimum would look for the export's source files in the onnx/ subfolder)
        model = open_model("onnx", onnx_kwargs())
        if not (folder / "onnx" / "model.onnx").exists():
            model.save_pretrained(str(folder))  # writes onnx/model.onnx
        return model

    if backend == "onnx":
        return fp32(), "fp32"

    # onnx-qint8: dynamic quantization of the fp32 export; the file is named after the weights' type and the config,
    # e.g. onnx/model_qint8_avx512_vnni.onnx (avx2 quantizes weights to unsigned int8: model_quint8_avx2.onnx)
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    config = quantization_config()
    pattern = f"model_*int8_{config}.onnx"
    if not list((folder / "onnx").glob(pattern)):
        export_dynamic_quantized_onnx_model(fp32(), quantization_config=config, model_name_or_path=str(folder))
    quantized = sorted((folder / "onnx").glob(pattern))
    if len(quantized) != 1:
        raise SystemExit(f"peer_worker: expected one onnx/{pattern} in {folder}, found {quantized}")
    file_name = quantized[0].relative_to(folder).as_posix()
    return open_model("onnx", onnx_kwargs(file_name)), f"int8 weights, dynamic int8 activations ({file_name})"


def exports(folder: Path) -> set[str]:
    """The export files in the folder (onnx/, openvino/)."""
    return {str(path) for kind in ("onnx", "openvino") for path in (folder / kind).glob("*")}


def peak_resident() -> float:
    """This process's peak resident memory so far, GiB (VmHWM)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 2**20  # KiB -> GiB


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="sentence-transformers model folder")
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", type=Path, required=True, help="folder for the per-backend copies of the model")
    parser.add_argument("--max-seq-length", type=int, default=None, help="tokens per text (default: the folder's)")
    args = parser.parse_args()

    protocol = protocol_channel()
    # before the runtimes load: OpenMP pools size themselves once; the Hub is unreachable, so never ask it
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    folder = cached_copy(args.model, args.cache, args.backend)
    before = exports(folder)
    model, precision = load(folder, args.backend, args.threads)
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    ready = {"ready": True, "versions": versions(), "precision": precision, "exported": exports(folder) != before}
    print(json.dumps(ready), file=protocol, flush=True)

    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            texts = json.loads(Path(request["texts_file"]).read_text())
        except (ValueError, KeyError, OSError) as error:
            problem = f"{type(error).__name__}: {error}"
            raise SystemExit(f"peer_worker: request {number} ({line.strip()[:200]!r}): {problem}") from error
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=False,
                               show_progress_bar=False)
        seconds = time.perf_counter() - start
        if request.get("vectors_out"):
            np.save(request["vectors_out"], np.asarray(vectors, dtype=np.float32))
        print(json.dumps({"seconds": seconds, "peak_gib": peak_resident()}), file=protocol, flush=True)


if __name__ == "__main__":
    main()
