"""Runs FlagEmbedding's own M3Embedder for tests/test_m3.py, in a venv that has FlagEmbedding (scripts/peers.sh
builds one: its pins clash with the test environment's transformers). Reads a JSON request on stdin, writes JSON
on stdout; float32 values travel as Python floats, which hold them exactly.

    request: {"folder": str, "colbert_dim": int, "threads": int, "texts": [str], "encode": [{"max_length": int}],
              "pairs": [[str, str]], "score": [{"batch_size": int, "max_query_length": int, ...}]}
"""

import json
import sys

import numpy as np
import torch
from FlagEmbedding import BGEM3FlagModel  # M3Embedder's public name


def plain(value):
    """NumPy arrays, scalars and dicts of them -> JSON-ready lists, floats and dicts."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return float(value) if isinstance(value, (np.floating, float)) else value


def main() -> None:
    request = json.load(sys.stdin)
    torch.set_num_threads(request["threads"])
    model = BGEM3FlagModel(request["folder"], use_fp16=False, devices="cpu", colbert_dim=request["colbert_dim"])
    encoded = [model.encode(request["texts"], return_dense=True, return_sparse=True, return_colbert_vecs=True,
                            **options) for options in request["encode"]]
    scores = [model.compute_score([tuple(pair) for pair in request["pairs"]], **options)
              for options in request["score"]]
    json.dump({"encode": plain(encoded), "score": plain(scores)}, sys.stdout)


if __name__ == "__main__":
    main()
