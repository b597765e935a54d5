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
    """A tensor from an array, a tensor or a list of either (an empty list: no rows); half precision and integers
    widened to float32: a product rounded to 16 bits turns nearby scores into ties, and quantized embeddings
    (encode(precision="int8")) would overflow their own type (sentence-transformers multiplies them in it)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        rows = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in x]
        x = torch.stack(rows) if rows else torch.empty(0, 0)
    if not x.is_floating_point() or torch.finfo(x.dtype).bits < 32:
        x = x.float()
    return x


def as_matrix(x: Embeddings) -> torch.Tensor:
    x = as_float_tensor(x)
    if x.dim() == 1:
        return x[None] if len(x) else x.reshape(0, 0)  # one vector -> (1, D); an empty 1-D tensor -> no rows
    return x


def as_matrices(a: Embeddings, b: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as (rows, D) matrices; no vectors at all (an empty list, array or 1-D tensor) are zero rows of the
    other's width."""
    a, b = as_matrix(a), as_matrix(b)
    a = a if len(a) else a.new_empty(0, b.shape[1])
    b = b if len(b) else b.new_empty(0, a.shape[1])
    return a, b


def cosine(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_matrices(a, b)
    return torch.mm(F.normalize(a, p=2, dim=-1), F.normalize(b, p=2, dim=-1).transpose(0, 1))


def dot(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_matrices(a, b)
    return torch.mm(a, b.transpose(0, 1))


def euclidean(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return -torch.cdist(*as_matrices(a, b), p=2.0)


def manhattan(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return -torch.cdist(*as_matrices(a, b), p=1.0)


def check_pairwise(a: torch.Tensor, b: torch.Tensor) -> None:
    """A pairwise function compares a[i] with b[i]: as many vectors in each, no broadcasting of one against many."""
    if a.shape[:-1] != b.shape[:-1]:
        count = lambda t: "one vector" if t.dim() == 1 else f"{len(t)} vector{'' if len(t) == 1 else 's'}"  # noqa: E731
        raise ValueError(f"pairwise similarity compares a[i] with b[i]: got {count(a)} and {count(b)}")


def as_pairs(a: Embeddings, b: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b for a pairwise function (check_pairwise), as float tensors."""
    a, b = as_float_tensor(a), as_float_tensor(b)
    check_pairwise(a, b)
    return a, b


def pairwise_cosine(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_pairs(a, b)
    return pairwise_dot(F.normalize(a, p=2, dim=-1), F.normalize(b, p=2, dim=-1))


def pairwise_dot(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_pairs(a, b)
    return (a * b).sum(dim=-1)


def pairwise_euclidean(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_pairs(a, b)
    return -torch.linalg.vector_norm(a - b, dim=-1)


def pairwise_manhattan(a: Embeddings, b: Embeddings) -> torch.Tensor:
    a, b = as_pairs(a, b)
    return -torch.sum(torch.abs(a - b), dim=-1)


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
