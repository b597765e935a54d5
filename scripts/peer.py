"""The benchmark's side of scripts/peer_worker.py: a sentence-transformers backend (ONNX Runtime, OpenVINO) running
in its own virtual environment (built by scripts/peers.sh), driven over a pipe.

    with Peer("openvino", model_folder, threads=2) as peer:
        seconds, vectors = peer.encode(texts)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path.home() / ".cache" / "minienc-peers"  # scripts/peers.sh's default
VENVS = {"onnx": "onnx", "onnx-qint8": "onnx", "openvino": "openvino", "openvino-f32": "openvino"}  # backend -> venv
LABELS = {"onnx": "ST ONNX fp32", "onnx-qint8": "ST ONNX qint8", "openvino": "ST OpenVINO", "openvino-f32": "ST OpenVINO f32"}


def label(backend: str, info: dict) -> str:
    """The backend's name in tables; OpenVINO's with the precision it chose for this CPU."""
    return f"{LABELS[backend]} ({info['precision'].split()[0]})" if backend == "openvino" else LABELS[backend]


def available(root: Path = ROOT) -> list[str]:
    """The backends whose venv scripts/peers.sh has built under root."""
    return [backend for backend, venv in VENVS.items() if (root / venv / "bin" / "python").exists()]


class Peer:
    def __init__(self, backend: str, model: Path, threads: int, batch_size: int = 32, root: Path = ROOT,
                 cache: Path | None = None, max_seq_length: int | None = None):
        """cache: where the worker keeps its copy of the model and the export (default ROOT/models: one model);
        max_seq_length: the tokens each text is cut at (default: the folder's)."""
        self.backend, self.scratch = backend, Path(tempfile.mkdtemp(prefix="minienc-peer-"))
        python = root / VENVS[backend] / "bin" / "python"
        worker = Path(__file__).with_name("peer_worker.py")
        self.process = subprocess.Popen(
            [str(python), str(worker), "--model", str(model), "--backend", backend, "--threads", str(threads),
             "--batch-size", str(batch_size), "--cache", str(cache or root / "models"),
             *(["--max-seq-length", str(max_seq_length)] if max_seq_length else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.info = self.reply()  # {"ready": true, "versions": ..., "precision": ..., "exported": ...}

    def reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"peer {self.backend} exited with status {self.process.wait()}; run scripts/"
                               f"peer_worker.py by hand with its venv's python to see why")
        return json.loads(line)

    def encode(self, texts: list[str]) -> tuple[float, np.ndarray]:
        """(seconds of the backend's encode alone, (n, dim) float32 vectors); the worker's peak resident memory so
        far is then self.peak_gib."""
        texts_file, vectors = self.scratch / "texts.json", self.scratch / "vectors.npy"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        self.process.stdin.write(json.dumps({"texts_file": str(texts_file), "vectors_out": str(vectors)}) + "\n")
        self.process.stdin.flush()
        reply = self.reply()
        self.peak_gib = reply.get("peak_gib")
        return reply["seconds"], np.load(vectors)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
