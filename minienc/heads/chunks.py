"""Long documents: a text longer than max_seq_length, embedded whole, in overlapping windows.

encode() truncates: a 2,000-token document becomes its first 256 tokens. Here the text is cut into windows of
chunk_size tokens (each with its own [CLS] / [SEP]), each window overlapping the previous one by `overlap` tokens
so that no sentence is only ever seen cut in two; every window goes through the pipeline as a text of its own
(tokenize -> encoder -> pool -> Dense -> normalize), and the windows' vectors are returned per text, or aggregated:

    "mean"  the mean of the L2-normalized window vectors: one vector per text, every part of it counted
    None    the (n_windows, dim) matrix: a multi-vector document, scored by its best window (best_window below)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..model.pooling import l2_normalize
from .pipeline import check_options, check_texts

AGGREGATES = ("mean", None)


def encode_chunks(
    model: Any,
    sentences: str | list[str],
    chunk_size: int | None = None,
    overlap: int = 32,
    aggregate: str | None = "mean",
    batch_size: int = 32,
    token_budget: int | None = None,
) -> np.ndarray | list[np.ndarray]:
    """model: a SentenceEncoder. chunk_size defaults to its max_seq_length. "mean": (n, dim), or (dim,) for one str;
    None: one (n_windows, dim) array per text (a list, or one array for one str)."""
    texts, single = check_texts(sentences)
    token_budget = model.token_budget if token_budget is None else token_budget
    check_options("sentence_embedding", batch_size, token_budget, "float32", None, model.device)
    size = model.max_seq_length if chunk_size is None else chunk_size
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not 3 <= size <= model.encoder.config.max_tokens:
        raise ValueError(f"chunk_size must be from 3 to the model's {model.encoder.config.max_tokens} positions, "
                         f"got {size}")
    room = size - model.tokenizer.tokenizer.num_special_tokens_to_add(False)  # text tokens a window holds
    if not 0 <= overlap <= room // 2:
        raise ValueError(f"overlap must be from 0 to half of a window's {room} text tokens ({room // 2}), got {overlap}")
    windows = model.tokenizer.windows(texts, size, overlap)  # per text: its windows
    flat = [w for text_windows in windows for w in text_windows]
    vectors, _ = model.embed_all(flat, model.get_sentence_embedding_dimension(), batch_size,
                                 token_budget)  # (total windows, dim)
    per_text = torch.split(vectors.float().cpu(), [len(w) for w in windows])
    if aggregate == "mean":
        dim = model.get_sentence_embedding_dimension()
        empty = np.empty((0, dim), np.float32)
        result = np.stack([l2_normalize(v).mean(dim=0).numpy() for v in per_text]) if texts else empty
    else:
        result = [v.numpy() for v in per_text]
    return result[0] if single else result


def best_window(query: np.ndarray, windows: np.ndarray) -> float:
    """A query vector's score against a multi-vector document: its best cosine with any window."""
    q = l2_normalize(torch.from_numpy(query).float()[None])
    return float((l2_normalize(torch.from_numpy(windows).float()) @ q.T).max())
