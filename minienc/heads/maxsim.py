"""MaxSim: scoring a query's token vectors against a document's (ColBERT's late interaction), as
sentence-transformers v6.2 multi_vector_encoder scores them; "meanmaxsim" divides by the query's token count.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from .similarity import Embeddings

EMPTY_DOCUMENT_SCORE = -1e9  # sentence-transformers' score for a document with no token left to match

def token_matrices(x: Embeddings) -> list[torch.Tensor]:
    """Multi-vector embeddings as a list of (n_i, D) float tensors, from: a list of tensors or arrays; one (n, D)
    matrix (one item); or a padded (B, T, D) tensor whose all-zero rows are padding (sentence-transformers' rule).
    Half precision and integer (quantized) values are widened to float32."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        if x.dim() not in (2, 3):
            raise ValueError(f"multi-vector embeddings are (tokens, dim) or (items, tokens, dim), got {tuple(x.shape)}")
        items = [x] if x.dim() == 2 else [row[row.ne(0).any(dim=-1)] for row in x]
    else:
        items = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in x]
    return [v if v.is_floating_point() and torch.finfo(v.dtype).bits >= 32 else v.float() for v in items]


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
