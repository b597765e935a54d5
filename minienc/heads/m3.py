"""bge-m3's three outputs from one XLM-R forward pass: a dense vector, lexical weights, and ColBERT vectors.

Reproduces FlagEmbedding v1.4.2 `M3Embedder` (FlagEmbedding/inference/embedder/encoder_only/m3.py) and the heads of
`EncoderOnlyEmbedderM3ModelForInference` (FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py), with the
same names, defaults and return types. The data flow, for each text:

    text -> tokens (<s> ... </s>) -> the encoder (model/bert.py) -> hidden states h (n, H)
      dense:   h[0], the <s> (CLS) token, L2-normalized                      -> (H,)
      sparse:  relu(sparse_linear(h)), one weight per token (Linear H -> 1);
               per token id the largest weight, special tokens dropped        -> {"token id": weight}
      colbert: colbert_linear(h[1:]), every token but <s> (Linear H -> D),
               each L2-normalized                                             -> (n - 1, D)

The encoder and tokenizer run on the text pipeline (heads/pipeline.py), packed by default; padded execution gives
FlagEmbedding's bits. The two heads ship as pickles, which formats/m3.py converts once (`convert_heads`) and reads.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..formats.m3 import HEADS, read_head, unused_token_ids
from ..formats.sentence import read_sentence_folder
from ..loading.tokenizer import TextTokenizer
from ..model.bert import BertModel
from ..model.linear import Linear
from ..model.pooling import l2_normalize
from ..runtime.batching import Tokens
from .pipeline import (Hidden, RunOptions, TextPipeline, check_options, check_texts, check_unicode, load_encoder,
                       load_tokenizer, report_truncation, to_numpy)

SCORE_MODES = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")
MAX_LENGTH = 512  # FlagEmbedding's query_max_length and passage_max_length


@dataclass
class TextOutput:
    """One text's three outputs as tensors."""

    ids: np.ndarray            # (n,) token ids
    dense: torch.Tensor        # (H,)
    weights: torch.Tensor      # (n,) relu(sparse_linear(h)), one weight per token
    colbert: torch.Tensor      # (n - 1, D)


# reproduces FlagEmbedding v1.4.2 M3Embedder.encode_single_device._process_token_weights
def lexical_weights(weights: np.ndarray, ids: np.ndarray, unused: frozenset[int]) -> defaultdict:
    """{str(token id): its largest weight in the text}, for weights > 0, special tokens left out. A defaultdict(int)
    with NumPy scalar values, as FlagEmbedding returns it."""
    result: defaultdict = defaultdict(int)
    for w, idx in zip(weights, ids.tolist()):
        if idx not in unused and w > 0:
            key = str(idx)
            if w > result[key]:
                result[key] = w
    return result


# reproduces FlagEmbedding v1.4.2 M3Embedder.compute_lexical_matching_score
def compute_lexical_matching_score(lexical_weights_1: dict | list[dict], lexical_weights_2: dict | list[dict]):
    """Sum of w1 * w2 over the token ids two texts share: one score for two dicts, an (n, m) array for two lists."""
    def single(lw1: dict, lw2: dict):
        scores = 0
        for token, weight in lw1.items():
            if token in lw2:
                scores += weight * lw2[token]
        return scores

    if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
        return single(lexical_weights_1, lexical_weights_2)
    if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
        return np.array([[single(lw1, lw2) for lw2 in lexical_weights_2] for lw1 in lexical_weights_1])
    raise ValueError("The input format of lexical_weights is not correct: give two dicts or two lists of dicts")


def best_matches(q_reps: torch.Tensor, p_reps: torch.Tensor) -> torch.Tensor:
    """(n_q,): each query vector's largest dot product with a passage vector (ColBERT's MaxSim)."""
    token_scores = torch.einsum("in,jn->ij", q_reps, p_reps)  # (n_q, n_p)
    return token_scores.max(-1).values


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


# reproduces FlagEmbedding v1.4.2 M3Embedder.colbert_score
def colbert_score(q_reps: np.ndarray | torch.Tensor, p_reps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The mean over query vectors (n_q, D) of each one's best match among the passage's (n_p, D): a 0-d tensor."""
    q_reps, p_reps = as_tensor(q_reps), as_tensor(p_reps)
    return torch.sum(best_matches(q_reps, p_reps)) / q_reps.size(0)


def default(value: int | None, fallback: int) -> int:
    """FlagEmbedding's `if value is None: value = default`: 0 is a value (and refused later), not "the default"."""
    return fallback if value is None else value


def check_max_length(max_length: int, limit: int) -> None:
    if not 2 <= max_length <= limit:
        raise ValueError(f"max_length must be from 2 (<s> and </s>) to the model's {limit} positions, got {max_length}")


def check_pairs(sentence_pairs: Any) -> tuple[list[tuple[str, str]], bool]:
    """(pairs, was_one_pair) from one (query, passage) pair or a list of them; a malformed pair is an error naming
    its index."""
    if not isinstance(sentence_pairs, (list, tuple)):
        raise TypeError(f"compute_score() takes a (query, passage) pair or a list of them, got "
                        f"{type(sentence_pairs).__name__}")
    one_pair = len(sentence_pairs) == 2 and all(isinstance(text, str) for text in sentence_pairs)
    pairs = [sentence_pairs] if one_pair else sentence_pairs
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"pair {i} is {pair!r}: compute_score() takes (query, passage) pairs of two str")
        for side, text in zip(("query", "passage"), pair):
            if not isinstance(text, str):
                raise TypeError(f"pair {i}: the {side} is {type(text).__name__}, not str")
            check_unicode(text, f"pair {i}: the {side}")
    return [tuple(pair) for pair in pairs], one_pair


class M3Encoder(TextPipeline):
    """FlagEmbedding's M3Embedder on the text pipeline (heads/pipeline.py), with bge-m3's two heads."""

    def __init__(self, encoder: nn.Module, tokenizer: TextTokenizer, colbert_linear: Linear, sparse_linear: Linear,
                 unused_ids: frozenset[int], options: RunOptions = RunOptions(), normalize: bool = True,
                 batch_size: int = 256, query_max_length: int = MAX_LENGTH, passage_max_length: int = MAX_LENGTH,
                 return_dense: bool = True, return_sparse: bool = False, return_colbert_vecs: bool = False):
        super().__init__(encoder, tokenizer, options)
        self.colbert_linear = colbert_linear.to(self.device)
        self.sparse_linear = sparse_linear.to(self.device)
        self.unused_ids = unused_ids
        self.normalize = normalize
        self.batch_size = batch_size
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.return_dense, self.return_sparse, self.return_colbert_vecs = (return_dense, return_sparse,
                                                                           return_colbert_vecs)
        self.set_matmul(self.matmul_name, self.row_block)

    @classmethod
    def build(cls, folder: Path, options: RunOptions, *, normalize_embeddings: bool | None = True,
              batch_size: int = 256, query_max_length: int = MAX_LENGTH, passage_max_length: int = MAX_LENGTH,
              return_dense: bool = True, return_sparse: bool = False, return_colbert_vecs: bool = False) -> M3Encoder:
        """A bge-m3 folder: XLM-R weights, tokenizer.json, the heads as .safetensors (formats/m3.py). The settings are
        FlagEmbedding's: normalize_embeddings (None: as the folder's Normalize says), and what encode() and
        compute_score() use when given None (batch_size, the max lengths, capped at the positions, return_*)."""
        config = read_sentence_folder(folder)
        if config.dense:
            raise ValueError(f"{folder}: M3Encoder's dense vector is the CLS hidden state, not a Dense module's")
        transformer = config.transformer or folder
        encoder = load_encoder(transformer, options)
        if not isinstance(encoder, BertModel):  # XLM-R: its CLS token is the dense vector
            raise ValueError(f"{folder}: bge-m3's heads sit on XLM-R (BertModel), not {encoder.config.model_type!r}")
        tokenizer = load_tokenizer(transformer, encoder, config.max_seq_length, config.tokenizer_max_length,
                                   config.lowercase)
        colbert_linear, sparse_linear = (read_head(folder, name, encoder.config.hidden_size,
                                                   next(encoder.parameters()).dtype) for name in HEADS)
        limit = encoder.config.max_tokens
        normalize = config.normalize if normalize_embeddings is None else normalize_embeddings
        return cls(encoder, tokenizer, colbert_linear, sparse_linear, unused_token_ids(folder, tokenizer.tokenizer),
                   options, normalize, batch_size, min(query_max_length, limit), min(passage_max_length, limit),
                   return_dense, return_sparse, return_colbert_vecs)

    def tokenize(self, texts: list[str], max_length: int) -> list[Tokens]:
        """Each text's tokens, <s> and </s> included, cut to max_length as FlagEmbedding's tokenizer call cuts them."""
        check_max_length(max_length, self.encoder.config.max_tokens)
        with self.tokenizer.truncating_at(max_length):
            tokenized = self.tokenizer.tokenize(texts)
        report_truncation(tokenized, max_length, name="max_length")
        return tokenized

    @torch.inference_mode()
    def outputs(self, texts: list[str], max_length: int, batch_size: int, token_budget: int | None,
                by_length: bool = True) -> list[TextOutput]:
        """Every text through the encoder and both heads; returned in input order. Padded batches, as FlagEmbedding
        makes them for its bits: longest first in np.argsort's order (by_length: encode), or in input order
        (compute_score)."""
        token_budget = self.token_budget if token_budget is None else token_budget
        check_options("sentence_embedding", batch_size, token_budget, "float32", None, self.device)
        tokenized = self.tokenize(texts, max_length)
        lengths = [len(t.ids) for t in tokenized]
        order = (lambda: np.argsort([-n for n in lengths]).tolist()) if by_length else (lambda: list(range(len(texts))))
        return self.encode_loop(tokenized, lambda indices: self.heads_step([tokenized[i] for i in indices]), batch_size,
                                token_budget, order)

    def heads_step(self, texts: list[Tokens]) -> list[TextOutput]:
        """One batch through the encoder and both heads."""
        return apply_heads(self.run(texts), texts, self.colbert_linear, self.sparse_linear, self.normalize)

    def encode(
        self,
        sentences: str | list[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        *,
        token_budget: int | None = None,
    ) -> dict[str, Any]:
        """FlagEmbedding's M3Embedder.encode: {"dense_vecs": (n, H) float array, "lexical_weights": [{"token id":
        weight}], "colbert_vecs": [(n_tokens - 1, D) arrays]}, None for an output not asked for; for one str, one
        text's items. None arguments take the model's defaults (max_length: passage_max_length). Batches: padded,
        batch_size texts; packed, up to token_budget tokens."""
        texts, single = check_texts(sentences)
        want_dense = self.return_dense if return_dense is None else return_dense
        want_sparse = self.return_sparse if return_sparse is None else return_sparse
        want_colbert = self.return_colbert_vecs if return_colbert_vecs is None else return_colbert_vecs
        if not (want_dense or want_sparse or want_colbert):
            raise ValueError("Must choose one or more from `return_colbert_vecs`, `return_sparse`, `return_dense`")
        found = self.outputs(texts, default(max_length, self.passage_max_length), default(batch_size, self.batch_size),
                             token_budget)
        hidden_size = self.encoder.config.hidden_size
        dense = to_numpy(torch.stack([o.dense for o in found])) if found else np.zeros((0, hidden_size), np.float32)
        result = {
            "dense_vecs": dense if want_dense else None,
            "lexical_weights": [self.lexical_weights(o) for o in found] if want_sparse else None,
            "colbert_vecs": [to_numpy(o.colbert) for o in found] if want_colbert else None,
        }
        if single:
            return {key: None if value is None else value[0] for key, value in result.items()}
        return result

    def encode_queries(self, queries: str | list[str], batch_size: int | None = None, max_length: int | None = None,
                       return_dense: bool | None = None, return_sparse: bool | None = None,
                       return_colbert_vecs: bool | None = None, *, token_budget: int | None = None) -> dict[str, Any]:
        """encode() with query_max_length (FlagEmbedding's query instruction, None for bge-m3, is not supported)."""
        return self.encode(queries, batch_size, default(max_length, self.query_max_length), return_dense,
                           return_sparse, return_colbert_vecs, token_budget=token_budget)

    encode_corpus = encode  # passage_max_length, as encode()

    def lexical_weights(self, output: TextOutput) -> defaultdict:
        return lexical_weights(to_numpy(output.weights), output.ids, self.unused_ids)

    compute_lexical_matching_score = staticmethod(compute_lexical_matching_score)
    colbert_score = staticmethod(colbert_score)

    @torch.inference_mode()
    def compute_score(
        self,
        sentence_pairs: list[tuple[str, str]] | tuple[str, str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: list[float] | None = None,
        *,
        token_budget: int | None = None,
    ) -> dict[str, list[float] | float] | list:
        """FlagEmbedding's M3Embedder.compute_score: for each (query, passage) pair its dense, sparse and ColBERT
        scores and two weighted means, {mode: [score per pair]} (for one pair, {mode: score}). Weights are for
        [dense, sparse, colbert], default [1, 1, 1]. batch_size groups the pairs as FlagEmbedding batches them,
        which changes ColBERT scores (see below); token_budget: packed execution's batches."""
        # reproduces FlagEmbedding v1.4.2 M3Embedder.compute_score_single_device
        pairs, one_pair = check_pairs(sentence_pairs)
        if not pairs:
            return []
        weights = check_weights(weights_for_different_modes)
        batch_size = self.batch_size if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        scores: dict[str, list[float]] = {mode: [] for mode in SCORE_MODES}
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]  # each side one batch, in input order, as FlagEmbedding
            queries = self.outputs([q for q, _ in batch], default(max_query_length, self.query_max_length),
                                   len(batch), token_budget, by_length=False)
            passages = self.outputs([p for _, p in batch], default(max_passage_length, self.passage_max_length),
                                    len(batch), token_budget, by_length=False)
            for mode, values in pair_scores(queries, passages, self.unused_ids, weights).items():
                scores[mode] += values
        return {mode: values[0] for mode, values in scores.items()} if one_pair else scores


def check_weights(weights: list[float] | None) -> list[float]:
    """compute_score's weights_for_different_modes: [dense, sparse, colbert], default [1, 1, 1]."""
    if weights is None:
        return [1.0, 1.0, 1.0]
    if len(weights) != 3:
        raise ValueError(f"weights_for_different_modes is [dense, sparse, colbert], 3 numbers; got {weights}")
    return list(weights)


# reproduces FlagEmbedding v1.4.2 M3Embedder.compute_score_single_device, one batch of pairs
def pair_scores(queries: list[TextOutput], passages: list[TextOutput], unused: frozenset[int],
                weights: list[float]) -> dict[str, list[float]]:
    """Each pair's score in every mode of SCORE_MODES, for one batch of queries and their passages."""
    # compute_dense_score: every query against every passage, (B, B); each pair's score on the diagonal
    dense = (torch.stack([q.dense for q in queries]) @ torch.stack([p.dense for p in passages]).T).diagonal()
    # compute_sparse_score: the product of two vocabulary-sized vectors, nonzero where lexical weights are
    sparse = [compute_lexical_matching_score(lexical_weights(to_numpy(q.weights), q.ids, unused),
                                             lexical_weights(to_numpy(p.weights), p.ids, unused))
              for q, p in zip(queries, passages)]
    sparse = torch.tensor([float(score) for score in sparse], dtype=torch.float32, device=dense.device)
    # compute_colbert_score
    longest = max(len(p.ids) for p in passages)
    colbert = []
    for q, p in zip(queries, passages):
        best = best_matches(q.colbert, p.colbert)  # (n_q - 1,)
        if len(p.ids) < longest:
            # FlagEmbedding pads the batch's passages to the longest, and the padding's ColBERT vectors (zeros,
            # after the mask) join the max: in a shorter passage no query token's best match is below 0
            best = best.clamp(min=0)
        colbert.append(best.sum() / best.shape[0])
    dense, colbert = dense.float(), torch.stack(colbert).float()
    return {
        "colbert": colbert.tolist(),
        "sparse": sparse.tolist(),
        "dense": dense.tolist(),
        "sparse+dense": ((sparse * weights[1] + dense * weights[0]) / (weights[1] + weights[0])).tolist(),
        "colbert+sparse+dense": ((colbert * weights[2] + sparse * weights[1] + dense * weights[0])
                                 / sum(weights)).tolist(),
    }


def apply_heads(hidden: Hidden, texts: list[Tokens], colbert_linear: Linear, sparse_linear: Linear,
                normalize: bool) -> list[TextOutput]:
    """A batch's hidden states -> each text's three outputs: the <s> vector, a weight per token, ColBERT vectors."""
    dense = hidden.pool(("cls",))  # (B, H): the <s> token
    dense = l2_normalize(dense) if normalize else dense
    # The heads run on the batch padded to its longest text, as FlagEmbedding runs them: padded execution thus
    # gives its bits; packed execution's row blocks make each row's result independent of the others.
    states = pad_sequence(hidden.rows(), batch_first=True)  # (B, T, H)
    # reproduces FlagEmbedding v1.4.2 EncoderOnlyEmbedderM3Model._sparse_embedding (return_embedding=False)
    weights = torch.relu(sparse_linear(states)).squeeze(-1)  # (B, T): one weight per token
    # reproduces EncoderOnlyEmbedderM3Model._colbert_embedding, then forward()'s F.normalize; the attention mask it
    # multiplies by is 1 on the real tokens, the only ones kept below
    colbert = colbert_linear(states[:, 1:])  # (B, T - 1, D): every token but <s>
    colbert = F.normalize(colbert, dim=-1) if normalize else colbert
    return [TextOutput(t.ids, dense[row].clone(), weights[row, :n].clone(), colbert[row, : n - 1].clone())
            for row, (t, n) in enumerate(zip(texts, hidden.lengths))]
