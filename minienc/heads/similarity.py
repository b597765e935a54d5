"""Similarity of embeddings, by the names sentence-transformers uses for `similarity_fn_name`: for one vector per text
(SentenceEncoder), sparse vectors (SparseEncoder) and one vector per token (MultiVectorEncoder's MaxSim).

Each reproduces sentence-transformers v6.x util/similarity.py op for op: matrices compare every row of `a` with every
row of `b`, (n, m); pairwise functions compare a[i] with b[i], (n,). Euclidean and manhattan are negative
distances, so that for every function a larger value means more similar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Embeddings = torch.Tensor | np.ndarray | Sequence[torch.Tensor] | Sequence[np.ndarray]


def widened(x: torch.Tensor) -> torch.Tensor:
    """Half precision and integers as float32, for every similarity below: a product rounded to 16 bits turns nearby
    scores into ties, and quantized embeddings (encode(precision="int8")) would overflow their own type
    (sentence-transformers multiplies them in it)."""
    return x if x.is_floating_point() and torch.finfo(x.dtype).bits >= 32 else x.float()


# --- one vector per text ----------------------------------------------------------------------------------------------


def as_float_tensor(x: Embeddings) -> torch.Tensor:
    """A tensor from an array, a tensor or a list of either (an empty list: no rows), widened."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        rows = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in x]
        x = torch.stack(rows) if rows else torch.empty(0, 0)
    return widened(x)


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


# --- sparse vectors (SPLADE) ------------------------------------------------------------------------------------------


def as_float(x: Any) -> torch.Tensor:
    """A float tensor, sparse kept sparse, from a tensor, an array or a list of either (one row each), half
    precision widened to float32 (as sentence-transformers v6.2 util._convert_to_float_tensor), and integers too."""
    if isinstance(x, (list, tuple)):
        rows = [v.coalesce().float() if isinstance(v, torch.Tensor) and v.is_sparse else torch.as_tensor(v) for v in x]
        x = torch.stack(rows) if rows else torch.empty(0)
    return widened(torch.as_tensor(x))


def as_rows(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as (rows, V), sparse kept sparse: one vector is one row; no vectors (the empty 1-D tensor encode()
    gives for no texts, or an empty list) are zero rows of the other's width."""
    a, b = as_float(a), as_float(b)
    a, b = (a.unsqueeze(0) if a.dim() == 1 and len(a) else a), (b.unsqueeze(0) if b.dim() == 1 and len(b) else b)
    a = a if len(a) else torch.zeros(0, b.shape[-1], device=b.device).to_sparse()
    b = b if len(b) else torch.zeros(0, a.shape[-1], device=a.device).to_sparse()
    return a, b


def sparse_dot(a: Any, b: Any) -> torch.Tensor:
    a, b = as_rows(a, b)
    return torch.mm(a, b.transpose(0, 1)).to_dense()  # sparse x sparse stays sparse until here


def sparse_pairwise_dot(a: Any, b: Any) -> torch.Tensor:
    a, b = as_float(a), as_float(b)
    check_pairwise(a, b)
    return (a * b).sum(dim=-1).to_dense()


def densified(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[Any, Any], torch.Tensor]:
    return lambda a, b: fn(as_float(a).to_dense(), as_float(b).to_dense())


# similarity_fn_name -> (all pairs (n, m), pairwise (n,)). Dot products keep sparse inputs sparse, as
# sentence-transformers v6.2 util.dot_score does; the others are those above, on dense copies.
SPARSE_SIMILARITIES = {
    "dot": (sparse_dot, sparse_pairwise_dot),
    **{name: (densified(all_pairs), densified(pairwise))
       for name, (all_pairs, pairwise) in SIMILARITIES.items() if name != "dot"},
}


# --- one vector per token (ColBERT's late interaction) ----------------------------------------------------------------
# MaxSim, as sentence-transformers v6.2 multi_vector_encoder scores it; "meanmaxsim" divides by the query's tokens.

EMPTY_DOCUMENT_SCORE = -1e9  # sentence-transformers' score for a document with no token left to match

def token_matrices(x: Embeddings) -> list[torch.Tensor]:
    """Multi-vector embeddings as a list of (n_i, D) float tensors, from: a list of tensors or arrays; one (n, D)
    matrix (one item); or a padded (B, T, D) tensor whose all-zero rows are padding (sentence-transformers' rule).
    Each widened."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        if x.dim() not in (2, 3):
            raise ValueError(f"multi-vector embeddings are (tokens, dim) or (items, tokens, dim), got {tuple(x.shape)}")
        items = [x] if x.dim() == 2 else [row[row.ne(0).any(dim=-1)] for row in x]
    else:
        items = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in x]
    return [widened(v) for v in items]


# reproduces sentence-transformers v6.2 util/similarity.py maxsim / _maxsim_score_documents (one query at a time)
def maxsim(a: Embeddings, b: Embeddings, length_normalize: bool = False) -> torch.Tensor:
    """(n_a, n_b) float32: sum over each query's tokens of the max dot product with any of the document's tokens.
    A document with no tokens scores EMPTY_DOCUMENT_SCORE; length_normalize divides by the query's token count."""
    queries, documents = token_matrices(a), token_matrices(b)
    device = documents[0].device if documents else torch.device("cpu")
    scores = torch.zeros(len(queries), len(documents), dtype=torch.float32, device=device)
    if not queries or not documents:
        return scores
    lengths = torch.tensor([len(d) for d in documents], device=device)
    padded = nn.utils.rnn.pad_sequence(documents, batch_first=True)  # (n_b, T, D), zero padding
    padding = torch.arange(padded.shape[1], device=device)[None, :] >= lengths[:, None]  # (n_b, T)
    for i, query in enumerate(queries):
        if padded.shape[1] == 0 or len(query) == 0:
            continue  # nothing to match: 0, or the empty-document score below
        dots = torch.einsum("sh,bth->bst", query.to(device), padded)  # (n_b, s, T)
        dots.masked_fill_(padding[:, None, :], torch.finfo(dots.dtype).min)  # padding never wins the max
        scores[i] = dots.max(dim=-1).values.float().sum(dim=-1)
    scores[:, lengths == 0] = EMPTY_DOCUMENT_SCORE
    if length_normalize:
        scores /= torch.tensor([max(len(q), 1) for q in queries], dtype=torch.float32, device=device)[:, None]
    return scores


def maxsim_pairwise(a: Embeddings, b: Embeddings, length_normalize: bool = False) -> torch.Tensor:
    """(n,) float32: maxsim of a[i] with b[i] (sentence-transformers v6.2 maxsim_pairwise)."""
    queries, documents = token_matrices(a), token_matrices(b)
    if len(queries) != len(documents):
        raise ValueError(f"pairwise scoring needs as many queries as documents, got {len(queries)} and "
                         f"{len(documents)}")
    return torch.stack([maxsim([q], [d], length_normalize)[0, 0] for q, d in zip(queries, documents)]) if queries \
        else torch.zeros(0)


def mean_maxsim(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return maxsim(a, b, length_normalize=True)


def mean_maxsim_pairwise(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return maxsim_pairwise(a, b, length_normalize=True)


# similarity_fn_name -> (all pairs, pairwise), the names sentence-transformers' MultiVectorEncoder accepts
MULTIVECTOR_SIMILARITIES = {"maxsim": (maxsim, maxsim_pairwise), "meanmaxsim": (mean_maxsim, mean_maxsim_pairwise)}


def check_multivector_similarity(name: str) -> str:
    if name not in MULTIVECTOR_SIMILARITIES:
        raise ValueError(f"a multi-vector model scores with {sorted(MULTIVECTOR_SIMILARITIES)}, not {name!r} "
                         f"(cosine, dot, ... compare one vector per text)")
    return name
