"""Similarity of embeddings, by the names sentence-transformers uses for `similarity_fn_name`.

Each reproduces sentence-transformers v6.x util/similarity.py op for op: matrices compare every row of `a` with every
row of `b`, (n, m); pairwise functions compare a[i] with b[i], (n,). Euclidean and manhattan are negative
distances, so that for every function a larger value means more similar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Embeddings = torch.Tensor | np.ndarray | Sequence[torch.Tensor] | Sequence[np.ndarray]


def as_float_tensor(x: Embeddings) -> torch.Tensor:
    """A tensor from an array, a tensor or a list of either; half precision widened to float32, since a product
    rounded to 16 bits turns nearby scores into ties."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        x = torch.stack([torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in x])
    if x.is_floating_point() and torch.finfo(x.dtype).bits < 32:
        x = x.float()
    return x


def as_matrix(x: Embeddings) -> torch.Tensor:
    x = as_float_tensor(x)
    return x[None] if x.dim() == 1 else x  # one vector -> (1, D)


def cosine(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_matrix(a), as_matrix(b)
    return torch.mm(F.normalize(a, p=2, dim=-1), F.normalize(b, p=2, dim=-1).transpose(0, 1))


def dot(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_matrix(a), as_matrix(b)
    return torch.mm(a, b.transpose(0, 1))


def euclidean(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return -torch.cdist(as_matrix(a), as_matrix(b), p=2.0)


def manhattan(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return -torch.cdist(as_matrix(a), as_matrix(b), p=1.0)


def pairwise_cosine(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return pairwise_dot(F.normalize(as_float_tensor(a), p=2, dim=-1), F.normalize(as_float_tensor(b), p=2, dim=-1))


def pairwise_dot(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return (as_float_tensor(a) * as_float_tensor(b)).sum(dim=-1)


def pairwise_euclidean(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return -torch.linalg.vector_norm(as_float_tensor(a) - as_float_tensor(b), dim=-1)


def pairwise_manhattan(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return -torch.sum(torch.abs(as_float_tensor(a) - as_float_tensor(b)), dim=-1)


SimilarityFn = Callable[[Embeddings, Embeddings], torch.Tensor]
# similarity_fn_name -> (all pairs, pairwise)
SIMILARITIES: dict[str, tuple[SimilarityFn, SimilarityFn]] = {
    "cosine": (cosine, pairwise_cosine),
    "dot": (dot, pairwise_dot),
    "euclidean": (euclidean, pairwise_euclidean),
    "manhattan": (manhattan, pairwise_manhattan),
}


def check_similarity(name: str) -> str:
    if name not in SIMILARITIES:
        raise ValueError(f"unknown similarity_fn_name {name!r}; choose one of {sorted(SIMILARITIES)}")
    return name
