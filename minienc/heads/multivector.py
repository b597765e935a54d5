"""Multi-vector (ColBERT, late-interaction) embeddings: one vector per token, and MaxSim to score them.

Reproduces sentence-transformers v6.2 MultiVectorEncoder for the folders it saves, and for those it converts on
loading: PyLate's (config_sentence_transformers.json model_type "ColBERT") and a sentence-transformers model with a
Dense head (its pooling dropped, the Dense applied to every token). One text's path:

    text -> prompt prepended as text: the folder's "query" / "document" prompt, e.g. "[Q] " / "[D] "
         -> tokens, cut at the task's length (query_length / document_length, else max_seq_length)
         -> queries with query expansion: [MASK] tokens appended up to the expansion length; attention sees them
            or not (attend), but they always get vectors, which ColBERT scores like the query's own tokens
         -> the encoder (model/bert.py) -> last hidden states (n, H)
         -> Dense projection(s) (n, D)
         -> scoring mask: documents drop their skiplist tokens (punctuation, in PyLate's models)
         -> L2-normalize each token vector -> (n_kept, D)

Scoring (heads/similarity.py): MaxSim(q, d) = sum over q's token vectors of the largest dot product with any of d's;
"meanmaxsim" divides it by q's number of tokens. Reading the folder is formats/multivector.py. The encoder and
tokenizer run on the text pipeline (heads/pipeline.py), so packed execution is the default; execution="padded" runs
sentence-transformers' padded batches. Queries expanded with attend=False always run padded: their [MASK] tokens
read the text but the text must not read them, which a packed row (one text, everything visible) cannot express; so
do RoBERTa-family queries expanded with the pad token, which transformers gives the padding position.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..formats.multivector import (MultiVectorConfig, QueryExpansion, read_multivector_folder, register_prefix_tokens,
                                   resolve_expansion)
from ..formats.sentence import tokenizer_limit
from ..loading.tokenizer import TextTokenizer
from ..model.bert import EncoderConfig
from ..model.pooling import l2_normalize
from ..runtime.batching import Tokens, padded_order
from .pipeline import RunOptions, TextPipeline, load_encoder, load_tokenizer, report_truncation, to_numpy
from .sentence import dense_layers
from .similarity import MULTIVECTOR_SIMILARITIES, Embeddings, check_multivector_similarity


def runs_padded(expansion: QueryExpansion | None, config: EncoderConfig) -> bool:
    """Whether expanded queries need padded execution: their expansion tokens are ones attention must not see, or
    (RoBERTa family) the pad token, which takes the padding position in transformers."""
    return expansion is not None and (not expansion.attend or (
        config.positions_from_input_ids and expansion.token_id == config.pad_token_id))


def vocabulary_ids(tokenizer: TextTokenizer, words: tuple[str, ...]) -> torch.Tensor:
    """The ids of the words that are in the vocabulary, sorted (a skiplist word not in it is unused)."""
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    return torch.tensor(sorted({vocab[w] for w in words if w in vocab}), dtype=torch.long)


class MultiVectorEncoder(TextPipeline):
    """One vector per token: the text pipeline (heads/pipeline.py), Dense projection(s) on every token, the scoring
    mask, normalization. encode_query / encode_document pick the task's length, expansion and skiplist."""

    def __init__(self, encoder: nn.Module, tokenizer: TextTokenizer, config: MultiVectorConfig,
                 expansion: QueryExpansion | None, options: RunOptions = RunOptions()):
        super().__init__(encoder, tokenizer, options, config.prompts, config.default_prompt_name)
        dtype = next(encoder.parameters()).dtype
        self.dense = dense_layers(config.dense, encoder.config.hidden_size, dtype, self.device)
        self.normalize, self.masking = config.normalize, config.masking
        self.query_length, self.document_length, self.query_expansion = (config.query_length, config.document_length,
                                                                         expansion)
        self.queries_padded = runs_padded(expansion, encoder.config)
        self.skiplist_ids = vocabulary_ids(tokenizer, config.skiplist_words)
        self.skiplist_tasks = config.skiplist_tasks
        self.keep_only_token_ids = torch.tensor(config.keep_only_token_ids, dtype=torch.long)
        self.similarity_fn_name = check_multivector_similarity(config.similarity_fn_name)
        self.set_matmul(self.matmul_name, self.row_block)

    @classmethod
    def build(cls, folder: Path, options: RunOptions, *, similarity_fn_name: str | None = None
              ) -> MultiVectorEncoder:
        """A MultiVectorEncoder or PyLate folder (e.g. answerdotai/answerai-colbert-small-v1), read as
        formats/multivector.py says; similarity_fn_name "maxsim" or "meanmaxsim" overrides the folder's."""
        config = read_multivector_folder(folder)
        known = config.similarity_fn_name if config.similarity_fn_name in MULTIVECTOR_SIMILARITIES else "maxsim"  # as ST
        config = replace(config, similarity_fn_name=known if similarity_fn_name is None else similarity_fn_name)
        encoder, transformer = load_encoder(config.transformer, options), config.transformer
        tokenizer = load_tokenizer(transformer, encoder, config.max_seq_length, tokenizer_limit(transformer),
                                   config.lowercase)
        register_prefix_tokens(tokenizer.tokenizer, config.prefix_tokens)
        expansion = resolve_expansion(config.query_expansion, tokenizer.tokenizer, transformer, config.query_length)
        return cls(encoder, tokenizer, config, expansion, options)

    @property
    def batch_invariant(self) -> bool:
        """As TextPipeline.batch_invariant, for every text: False where expanded queries must run padded."""
        return super().batch_invariant and not self.queries_padded

    def get_embedding_dimension(self) -> int:
        """The length of each token vector."""
        return self.dense[-1].linear.out_features if len(self.dense) else self.encoder.config.hidden_size

    def task_length(self, task: str | None) -> int:
        """Tokens kept per text for `task`, special tokens included (sentence-transformers' Transformer.preprocess)."""
        expansion = self.query_expansion if task == "query" else None
        if expansion is not None and expansion.strategy == "fixed":
            return expansion.length
        length = {"query": self.query_length, "document": self.document_length}.get(task or "")
        if expansion is not None and length is not None:
            return max(length, expansion.length)
        return length or self.max_seq_length

    def tokenize(self, texts: list[str], task: str | None) -> tuple[list[Tokens], list[int]]:
        """Each text's tokens, cut at the task's length and, for queries, expanded; and how many of them attention
        sees (all but the expansion tokens, when attend is False)."""
        with self.tokenizer.truncating_at(self.task_length(task)):
            tokenized = self.tokenizer.tokenize(texts)
        report_truncation(tokenized, self.task_length(task))
        expansion = self.query_expansion if task == "query" else None
        if expansion is None:
            return tokenized, [len(t.ids) for t in tokenized]
        expanded = []
        for t in tokenized:
            extra = max(expansion.length - len(t.ids), 0)
            expanded.append(Tokens(np.concatenate([t.ids, np.full(extra, expansion.token_id, dtype=np.int32)]),
                                   np.concatenate([t.type_ids, np.zeros(extra, dtype=np.int32)]), t.truncated))
        return expanded, [len(e.ids) if expansion.attend else len(t.ids) for t, e in zip(tokenized, expanded)]

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dense head(s), then normalization, on every token: (..., H) -> (..., D)."""
        for layer in self.dense:
            hidden = layer(hidden)
        return l2_normalize(hidden) if self.normalize else hidden

    def scoring_mask(self, ids: np.ndarray, attended: int, task: str | None) -> torch.Tensor:
        """(n,) bool: the tokens that keep a vector (sentence-transformers v6.2 MultiVectorMask.forward); without
        that module, the tokens attention saw."""
        ids = torch.from_numpy(ids).long()
        keep = torch.arange(len(ids)) < (len(ids) if self.masking else attended)
        if (task or "document") in self.skiplist_tasks and len(self.skiplist_ids):
            keep &= ~torch.isin(ids, self.skiplist_ids)
        if task != "query" and len(self.keep_only_token_ids):
            keep &= torch.isin(ids, self.keep_only_token_ids)
        return keep.to(self.device)

    @torch.inference_mode()
    def embed(self, texts: list[Tokens], attended: list[int], task: str | None) -> list[torch.Tensor]:
        """One batch through the pipeline: each text's token vectors, (n_kept, D). Text i's first attended[i]
        tokens are what attention sees; the rest (query expansion, attend=False) only look."""
        hidden = self.run(texts, attended, padded=task == "query" and self.queries_padded)
        rows = hidden.rows(self.project(hidden.states))  # each text's (n, D)
        return [v[self.scoring_mask(t.ids, n, task)] for v, t, n in zip(rows, texts, attended)]

    def encode(
        self,
        sentences: str | list[str] | tuple[str, ...] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str = "token_embeddings",
        convert_to_numpy: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = False,
        *,
        task: str | None = None,
        token_budget: int | None = None,
    ) -> Any:
        """One (n_tokens, D) tensor per text (an array with convert_to_numpy), in input order; for one str, that
        tensor alone. task "query" / "document" picks the length, expansion and skiplist (encode_query /
        encode_document set it). Batches as SentenceEncoder.encode's."""
        if output_value != "token_embeddings":
            raise ValueError(f"output_value must be 'token_embeddings' (minienc returns no raw feature dicts), got "
                             f"{output_value!r}")
        texts, single, prefix, token_budget = self.start(sentences, prompt_name, prompt, batch_size, token_budget,
                                                         output_value, device=device)
        tokenized, attended = self.tokenize([prefix + t for t in texts], task)

        def step(indices: list[int]) -> list[Any]:
            vectors = self.embed([tokenized[i] for i in indices], [attended[i] for i in indices], task)
            vectors = [l2_normalize(v) if normalize_embeddings else v.clone() for v in vectors]  # own storage
            return [to_numpy(v) if convert_to_numpy else v for v in vectors]

        found = self.encode_loop(tokenized, step, batch_size, token_budget, lambda: padded_order(texts),
                                 show_progress_bar)
        return found[0] if single else found

    def encode_query(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> Any:
        """encode() as a query: the "query" prompt, query_length, query expansion."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name, prompt, task="query", **kwargs)

    def encode_document(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> Any:
        """encode() as a document: the first of the "document" / "passage" / "corpus" prompts, document_length,
        the skiplist."""
        if prompt_name is None and prompt is None:
            prompt_name = next((p for p in ("document", "passage", "corpus") if p in self.prompts), None)
        return self.encode(sentences, prompt_name, prompt, task="document", **kwargs)

    def similarity(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name (maxsim unless the folder says meanmaxsim) of every query in a with every document
        in b: (n_a, n_b) float32."""
        return MULTIVECTOR_SIMILARITIES[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name of a[i] with b[i]: (n,) float32."""
        return MULTIVECTOR_SIMILARITIES[self.similarity_fn_name][1](a, b)

