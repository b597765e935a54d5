"""Quantized embeddings, as sentence-transformers' `quantize_embeddings` makes them (v6.x util/quantization.py).

- int8 / uint8: each dimension's range [min, max] over the embeddings given is cut into 255 equal steps, and each
  value becomes the index of its step (uint8), or that index - 128 (int8). The ranges come from the embeddings
  themselves, so they need more than one.
- binary / ubinary: one bit per dimension, 1 where the value is positive, packed 8 to a byte (ubinary: uint8;
  binary: the byte - 128 as int8).
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize(embeddings: np.ndarray, precision: str) -> np.ndarray:
    """(n, D) float embeddings -> (n, D) int8 / uint8, or (n, ceil(D / 8)) for the binary precisions."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("binary"):
        bits = np.packbits(embeddings > 0, axis=-1)
        return (bits - 128).astype(np.int8) if precision == "binary" else bits
    if embeddings.ndim == 1 or embeddings.shape[0] < 2:
        raise ValueError(f"{precision} quantization takes each dimension's range from the embeddings themselves: "
                         f"it needs at least 2, got {1 if embeddings.ndim == 1 else embeddings.shape[0]}")
    starts = np.min(embeddings, axis=0).astype(np.float32)
    steps = (np.max(embeddings, axis=0).astype(np.float32) - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    steps_taken = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return steps_taken.astype(np.uint8) if precision == "uint8" else (steps_taken - 128).astype(np.int8)
