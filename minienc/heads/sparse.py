"""SparseEncoder: text in, one SPLADE vector per text out, as wide as the vocabulary and mostly zeros.

SPLADE reads a text with a masked-language model and keeps, for every vocabulary entry, how strongly any of the
text's tokens predicts it: tokenize -> Encoder -> masked-LM head, a score per (token, vocabulary entry) ->
log(1 + relu(score)) -> max (or sum) over the text's tokens -> a (vocab,) vector whose non-zeros are weighted terms
(`decode` names them). Two texts compare by dot product.

Reproduces sentence-transformers v6.2 SparseEncoder with MLMTransformer / Transformer("fill-mask") + SpladePooling,
e.g. naver/splade-v3: the head is transformers v5.24 BertLMPredictionHead (RobertaLMHead for the RoBERTa family),
the pooling is SpladePooling. Reads the folders sentence-transformers saves (modules.json) and plain
*ForMaskedLM folders, which it reads as SpladePooling("max") as sentence-transformers does. The tokenizer, the
encoder, prompts and the two executions (packed, padded) are the text pipeline's (heads/pipeline.py); reading the
folder is formats/sparse.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..formats.sparse import SparseFolder, read_head_tensors, read_sparse_folder
from ..loading.checkpoint import CheckpointError
from ..model.family import family_of
from ..model.linear import Linear
from ..model.pooling import SPLADE_ACTIVATIONS, SPLADE_POOLERS
from ..runtime.batching import Tokens, padded_order
from .pipeline import RunOptions, TextPipeline, load_encoder, load_tokenizer
from .similarity import SPARSE_SIMILARITIES, check_similarity

# reproduces transformers v5.24 BertLMPredictionHead (BertPredictionHeadTransform + decoder) and RobertaLMHead
class MLMHead(nn.Module):
    """Token vectors (..., H) -> a score per vocabulary entry (..., V): decoder(LayerNorm(act(dense(x))))."""

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, layer_norm_eps: float,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size, activation=activation, dtype=dtype)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, dtype=dtype)
        self.decoder = Linear(hidden_size, vocab_size, dtype=dtype)  # weight: the word embeddings, unless untied

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.dense(hidden)  # (..., H): activation(x @ W.T + b)
        x = self.norm(x)
        return self.decoder(x)  # (..., V)

    @classmethod
    def from_checkpoint(cls, folder: Path, encoder: nn.Module) -> MLMHead:
        """The head stored beside `encoder` in `folder`, on its device and in its dtype; its decoder shares the
        word-embedding table unless the checkpoint stores its own decoder weight."""
        config, word = encoder.config, encoder.embeddings.word.weight
        spec = family_of(config.model_type).masked_lm[config.model_type]  # the family's record: keys, activation
        tensors = read_head_tensors(folder, spec.keys)
        with torch.device("meta"):  # shapes only: the checkpoint supplies every value
            head = cls(config.hidden_size, config.vocab_size, spec.activation or config.hidden_act,
                       config.layer_norm_eps, word.dtype)
        expected = {name: t.shape for name, t in head.state_dict().items()}
        wrong = [f"{name} {tuple(t.shape)}, expected {tuple(expected[name])}" for name, t in tensors.items()
                 if t.shape != expected[name]]
        if wrong:
            raise CheckpointError(f"{folder}: masked-LM head tensors (minienc names) of the wrong shape for its "
                                  f"config.json: {'; '.join(wrong)}")
        tensors = {name: t.to(word.dtype) for name, t in tensors.items()}
        head.load_state_dict({"decoder.weight": word, **tensors}, strict=True, assign=True)
        if "decoder.weight" not in tensors:
            head.decoder.weight = word  # tied: one tensor, not a copy
        return head.to(word.device).eval()


# reproduces sentence-transformers v6.2 util.select_max_active_dims
def keep_largest(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) -> a copy with all but the k largest values (in absolute terms) of each row set to zero."""
    _, top = torch.topk(vectors.abs(), k=min(k, vectors.shape[-1]), dim=-1)  # (B, k)
    kept = torch.zeros_like(vectors)
    return kept.scatter_(-1, top, vectors.gather(-1, top))


def check_max_active_dims(k: int | None) -> int | None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise ValueError(f"max_active_dims must be a positive integer or None, got {k!r}")
    return k


class SparseEncoder(TextPipeline):
    """The masked-LM head and SPLADE pooling on the text pipeline (heads/pipeline.py): encode() gives one sparse
    (vocab,) vector per text, decode() names its terms, similarity() scores them (dot product by default)."""

    def __init__(self, encoder: nn.Module, tokenizer, head: MLMHead, spec: SparseFolder,
                 options: RunOptions = RunOptions()):
        super().__init__(encoder, tokenizer, options, spec.sentence.prompts, spec.sentence.default_prompt_name)
        self.head = head
        self.pooling, self.activation = spec.pooling, spec.activation
        self.similarity_fn_name = check_similarity(spec.similarity_fn_name)
        self.max_active_dims = check_max_active_dims(spec.max_active_dims)
        self.set_matmul(self.matmul_name, self.row_block)

    def get_embedding_dimension(self) -> int:
        """The length of encode()'s vectors: the vocabulary size."""
        return self.head.decoder.out_features

    @classmethod
    def build(cls, folder: Path, options: RunOptions, *, max_seq_length: int | None = None,
              similarity_fn_name: str | None = None, max_active_dims: int | None = None) -> SparseEncoder:
        """A sentence-transformers sparse folder or a plain *ForMaskedLM one (e.g. "naver/splade-v3"), read as
        formats/sparse.py says; the settings override what it says. Padded execution gives sentence-transformers'
        bits, packed (the default) is within float32 rounding of them."""
        spec = read_sparse_folder(folder)
        known = spec.similarity_fn_name if spec.similarity_fn_name in SPARSE_SIMILARITIES else "dot"  # as ST falls back
        overrides = {"similarity_fn_name": known if similarity_fn_name is None else similarity_fn_name,
                     "max_active_dims": max_active_dims}
        spec = replace(spec, **{k: v for k, v in overrides.items() if v is not None})
        length = spec.sentence.max_seq_length if max_seq_length is None else max_seq_length
        encoder = load_encoder(spec.model_folder, options)
        heads = family_of(encoder.config.model_type).masked_lm
        if encoder.config.model_type not in heads:
            raise ValueError(f"{folder}: SPLADE needs a masked-language model whose head minienc reads "
                             f"({sorted(heads) or 'none in this family'}); this model_type is "
                             f"{encoder.config.model_type!r}")
        head = MLMHead.from_checkpoint(spec.model_folder, encoder)
        tokenizer = load_tokenizer(spec.model_folder, encoder, length, spec.sentence.tokenizer_max_length,
                                   spec.sentence.lowercase)
        return cls(encoder, tokenizer, head, spec, options)

    @torch.inference_mode()
    def embed(self, texts: list[Tokens]) -> torch.Tensor:
        """One batch of tokenized texts -> their SPLADE vectors (B, V), dense."""
        activation, reduce = SPLADE_ACTIVATIONS[self.activation], SPLADE_POOLERS[self.pooling]
        hidden = self.run(texts)
        scores = self.head(hidden.states)  # packed: (N, V); padded: (B, T, V)
        if hidden.spans is not None:
            return torch.stack([reduce(activation(text), 0) for text in hidden.rows(scores)])  # (B, V)
        mask = hidden.mask.unsqueeze(-1).to(scores.dtype)  # (B, T, 1): padding's scores become 0
        return reduce(activation(scores * mask), 1)  # (B, V)

    def encode(
        self,
        sentences: str | list[str] | tuple[str, ...] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_tensor: bool = True,
        convert_to_sparse_tensor: bool = True,
        save_to_cpu: bool = False,
        device: str | torch.device | None = None,
        max_active_dims: int | None = None,
        *,
        token_budget: int | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """sentence-transformers' SparseEncoder.encode, its arguments in its order: a list of texts -> a (n, V)
        sparse COO tensor (dense with convert_to_sparse_tensor=False; a list of rows with convert_to_tensor=False);
        one text -> a (V,) vector. max_active_dims (default: the model's) keeps each vector's largest values only.
        Batches: packed, up to token_budget tokens (batch_size unused); padded, batch_size texts by length."""
        texts, single, prefix, token_budget = self.start(sentences, prompt_name, prompt, batch_size, token_budget,
                                                         device=device)
        limit = check_max_active_dims(max_active_dims if max_active_dims is not None else self.max_active_dims)
        tokenized = self.tokenize_texts([prefix + t for t in texts])

        def step(indices: list[int]) -> torch.Tensor:
            vectors = self.embed([tokenized[i] for i in indices])  # (B, V)
            vectors = keep_largest(vectors, limit) if limit is not None else vectors
            vectors = vectors.to_sparse() if convert_to_sparse_tensor else vectors  # each batch: never n x V dense
            return vectors.cpu() if save_to_cpu else vectors

        rows = self.encode_loop(tokenized, step, batch_size, token_budget, lambda: padded_order(texts),
                                show_progress_bar)
        if rows:
            stacked = torch.stack(rows)  # (n, V)
        else:  # as sentence-transformers: an empty 1-D tensor
            stacked = torch.tensor([], device="cpu" if save_to_cpu else self.device)
            stacked = stacked.to_sparse() if convert_to_sparse_tensor else stacked
        result = stacked if convert_to_tensor else list(stacked)
        return result[0] if single else result

    def encode_query(self, sentences, **kwargs) -> torch.Tensor | list[torch.Tensor]:
        """encode() with the model's "query" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("query", kwargs))

    def encode_document(self, sentences, **kwargs) -> torch.Tensor | list[torch.Tensor]:
        """encode() with the model's "document" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("document", kwargs))

    def similarity(self, a: Any, b: Any) -> torch.Tensor:
        """similarity_fn_name (dot unless the folder says otherwise) between every row of a and of b: dense (n, m)."""
        return SPARSE_SIMILARITIES[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a: Any, b: Any) -> torch.Tensor:
        """similarity_fn_name between a[i] and b[i]: (n,)."""
        return SPARSE_SIMILARITIES[self.similarity_fn_name][1](a, b)

    # reproduces sentence-transformers v6.2 SparseEncoder.decode
    def decode(self, vectors: torch.Tensor, top_k: int | None = None
               ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """A (V,) vector -> its (token, weight) pairs, largest weight first, at most top_k; a (n, V) batch -> a list
        of those per row. Sparse or dense; zeros are left out."""
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        if not isinstance(vectors, torch.Tensor):
            raise TypeError(f"decode() takes a torch.Tensor, got {type(vectors).__name__}")
        if vectors.dim() not in (1, 2):
            raise ValueError(f"decode() takes a (V,) vector or a (n, V) batch, got {vectors.dim()} dimensions")
        rows = vectors.unsqueeze(0) if vectors.dim() == 1 else vectors
        rows = (rows if rows.is_sparse else rows.to_sparse()).coalesce()  # row-major: each row's entries together
        (row_of, token_ids), weights = rows.indices(), rows.values()
        counts = torch.bincount(row_of, minlength=rows.shape[0]).tolist()
        decoded, start = [], 0
        for count in counts:
            ids, values = token_ids[start : start + count], weights[start : start + count]
            start += count
            if top_k is not None and top_k < count:
                values, order = torch.topk(values, top_k)
            else:
                order = torch.argsort(values, descending=True)
                values = values[order]
            tokens = [self.tokenizer.tokenizer.id_to_token(i) for i in ids[order].tolist()]
            decoded.append(list(zip(tokens, values.tolist())))
        return decoded[0] if vectors.dim() == 1 else decoded
