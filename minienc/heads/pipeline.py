"""The text pipeline every head runs on: text -> prompt -> tokens -> batches -> encoder -> the head's step -> results
in input order.

SentenceEncoder (dense), SparseEncoder, MultiVectorEncoder and M3Encoder are TextPipelines. Each adds its own modules
and its step on the encoder's hidden states; everything else is here, once: the load sequence (`from_pretrained` ->
`load_encoder`), the encode loop (`start`, `tokenize_texts`, `encode_loop`), the one place where execution is packed
or padded (`run`), the kernel switch (`set_matmul`) and `batch_invariant`.

Two executions:
- packed: no padding; batches filled up to a token budget; every linear layer in row blocks, so that a text's results
  do not depend on its batch (runtime/batching.py, runtime/matmul.py). The default.
- padded: sentence-transformers' way, batch_size texts padded to the longest; bit-identical to it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..formats.sentence import text_length
from ..loading.encoder import Encoder
from ..loading.hub import resolve_model_dir
from ..loading.tokenizer import TextTokenizer
from ..model.pooling import pool, pool_packed
from ..runtime.batching import Tokens, packed_batches, padded_batches, progress_bar, run_packed
from ..runtime.devices import check_device
from ..runtime.matmul import fastest_on_cpu, get_matmul, rows_independent_everywhere, use_kernel
from .quantize import PRECISIONS, quantize

logger = logging.getLogger("minienc")
EXECUTIONS = ("packed", "padded")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
# packed execution's sizes by device type: rows per row block (runtime/matmul.py, RowBlocks) and tokens per batch.
# At the CPU's sizes a GPU waits on kernel launches; on a CPU, blocks smaller than 64 rows kept some kernels from
# merging calls. docs/batch-invariance.md and docs/performance.md give the measurements behind each.
ROW_BLOCKS = {"cpu": 64, "cuda": 1024}
TOKEN_BUDGETS = {"cpu": 2048, "cuda": 16384}
ROW_BLOCK = "auto"  # the default row_block: ROW_BLOCKS for the model's device (the CPU's where a type is not listed)


# --- encode()'s input -------------------------------------------------------------------------------------------------


def check_texts(sentences: Any) -> tuple[list[str], bool]:
    """(texts, was_a_single_str). Anything but a str, or a list, tuple or 1-D NumPy array of str, is a TypeError
    naming the bad item; a str with a lone surrogate, a ValueError naming it."""
    if isinstance(sentences, str):
        check_unicode(sentences, "the text")
        return [sentences], True
    if isinstance(sentences, np.ndarray) and sentences.ndim == 1:
        sentences = sentences.tolist()
    if not isinstance(sentences, (list, tuple)):
        raise TypeError(f"encode() takes a str or a list of str, got {type(sentences).__name__}"
                        + (f" of {sentences.ndim} dimensions" if isinstance(sentences, np.ndarray) else ""))
    for i, text in enumerate(sentences):
        if not isinstance(text, str):
            raise TypeError(f"item {i} is {type(text).__name__}, not str: encode() takes a str or a list of str")
        check_unicode(text, f"item {i}")
    return list(sentences), False


def check_unicode(text: str, name: str) -> None:
    """A str that holds a lone surrogate (what a bad decode with errors="surrogateescape" leaves) is no text the
    tokenizer can take: a ValueError naming the item and the position."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{name} is not valid Unicode: {err.reason} ({text[err.start]!r}) at position "
                             f"{err.start}") from None


def check_options(output_value: str | None, batch_size: int, token_budget: int, precision: str,
                  device: str | torch.device | None, model_device: torch.device) -> None:
    if output_value not in OUTPUT_VALUES:
        raise ValueError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}")
    for name, value in (("batch_size", batch_size), ("token_budget", token_budget)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if device is not None and check_device(device) != model_device:
        raise ValueError(f"encode(device={str(device)!r}): this model is on {model_device}; move it first with "
                         f"model.to({str(device)!r})")


# --- loading ----------------------------------------------------------------------------------------------------------


def default_matmul(execution: str, device: str | torch.device | None = None) -> str:
    """Packed execution promises closeness, not sentence-transformers' bits, so on the CPU it takes the faster
    kernel; padded execution keeps transformers' own."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    return fastest_on_cpu() if execution == "packed" and on_cpu else "torch"


def check_execution(execution: str) -> str:
    if execution not in EXECUTIONS:
        raise ValueError(f"unknown execution {execution!r}; choose one of {list(EXECUTIONS)}")
    return execution


@dataclass(frozen=True)
class RunOptions:
    """How a pipeline runs, the same options for every head (from_pretrained's keywords)."""

    attention: str = "sdpa"                       # a name in the attention registry (model/attention.py)
    execution: str = "packed"                     # one of EXECUTIONS
    matmul: str | None = None                     # the linear layers' kernel; None: default_matmul
    row_block: int | str | None = ROW_BLOCK       # packed execution's rows per block; None: not batch-invariant
    device: str | torch.device | None = None      # default: the CPU
    dtype: torch.dtype | str | None = None        # default: float32; "bfloat16" / "auto": the fast path


def load_encoder(folder: Path, options: RunOptions) -> nn.Module:
    """The encoder in `folder` (loading/encoder.py), on options' device, in its dtype, with its attention, and without
    the KV cache's layout, as sentence-transformers loads it (its Transformer module sets use_cache false)."""
    return Encoder.from_pretrained(folder, attention=options.attention, device=options.device, dtype=options.dtype,
                                   use_cache=False)


def load_tokenizer(folder: Path, encoder: nn.Module, max_seq_length: int | None, tokenizer_max_length: int | None,
                   lowercase: bool) -> TextTokenizer:
    """folder/tokenizer.json, keeping max_seq_length tokens per text (else the tokenizer's own limit; either capped
    by the encoder's positions), padding with its pad token."""
    config = encoder.config
    length = text_length(max_seq_length, tokenizer_max_length, config.max_tokens)
    return TextTokenizer.from_file(folder / "tokenizer.json", max_length=length, pad_token_id=config.pad_token_id,
                                   lowercase=lowercase, vocab_size=config.vocab_size)


class Hidden(NamedTuple):
    """A batch's last hidden states, as `run` gives them."""

    states: torch.Tensor                      # packed: (N, H), the texts end to end; padded: (B, T, H)
    spans: Sequence[tuple[int, int]] | None   # packed: each text's (start, end) in states
    mask: torch.Tensor | None                 # padded: (B, T) the attention mask the encoder ran with
    lengths: list[int]                        # each text's number of tokens
    starts: list[int] | None = None           # padded: where each text starts in its row (0 unless padded left)

    def rows(self, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each text's rows of x (default: the states; or anything computed token by token from them), without
        padding: (n_tokens, ...) views."""
        x = self.states if x is None else x
        if self.spans is not None:
            return [x[a:b] for a, b in self.spans]
        return [x[row, start : start + n] for row, (start, n) in enumerate(zip(self.starts, self.lengths))]

    def pool(self, modes: tuple[str, ...], skip: int = 0) -> torch.Tensor:
        """Each text's pooled vector (B, H * len(modes)) (model/pooling.py), leaving out its first `skip` tokens."""
        if self.spans is not None:
            return pool_packed(self.states, self.spans, modes, skip)
        mask = self.mask.clone()
        if skip:  # reproduces sentence-transformers v6.x Pooling._exclude_prompt_from_mask: after any left padding
            first = mask.to(torch.int32).argmax(dim=1)  # each row's first real token
            mask[torch.arange(mask.shape[1], device=mask.device)[None, :] < (first + skip)[:, None]] = 0
        return pool(self.states, mask, modes)


def check_settings(cls: type, settings: dict, matmul: str | None) -> None:
    """from_pretrained's head options are those of the head's build(), and the kernel a registered one: checked
    before anything is read."""
    own = list(inspect.signature(cls.build).parameters)[2:]  # after folder and options
    unknown = sorted(set(settings) - set(own))
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained got unknown options {unknown}; its own are {own}")
    if matmul is not None:
        get_matmul(matmul)


class TextPipeline(nn.Module):
    """A tokenizer and an encoder, run packed or padded, with a head's modules on top (the subclass's)."""

    default_model: str | None = None  # what from_pretrained loads when given no name

    def __init__(self, encoder: nn.Module, tokenizer: TextTokenizer, options: RunOptions = RunOptions(),
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None):
        super().__init__()
        self.execution = check_execution(options.execution)
        self.encoder, self.tokenizer = encoder, tokenizer
        self.prompts, self.default_prompt_name = dict(prompts or {}), default_prompt_name
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of {sorted(self.prompts)}")
        rows = ROW_BLOCKS.get(self.device.type, ROW_BLOCKS["cpu"]) if options.row_block == "auto" else options.row_block
        self.row_block = rows if self.execution == "packed" else None
        self.matmul_name = options.matmul or default_matmul(self.execution, self.device)
        self.token_budget = TOKEN_BUDGETS.get(self.device.type, TOKEN_BUDGETS["cpu"])  # encode()'s default

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        attention: str = "sdpa",
        execution: str = "packed",
        matmul: str | None = None,
        row_block: int | str | None = ROW_BLOCK,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        **settings: Any,
    ) -> TextPipeline:
        """Load a model folder (or Hub repo id) as this head. attention: a registered name. execution: "packed"
        (the default) or "padded" (sentence-transformers' bits). matmul: the linear layers' kernel (runtime/matmul.py;
        default "onednn" for packed execution on x86 CPUs, else "torch"). row_block: packed execution's rows per block
        ("auto": ROW_BLOCKS for the device; None: one call per matrix, no longer batch-invariant). device: default the
        CPU. dtype: float32 by default; "bfloat16", or "auto" (bfloat16 where the device has it natively), is the fast
        path. revision: the Hub revision. settings: the head's own (its `build` lists them)."""
        name_or_path = cls.default_model if name_or_path is None else name_or_path
        if name_or_path is None:
            raise TypeError(f"{cls.__name__}.from_pretrained needs a model folder or Hub repo id")
        check_settings(cls, settings, matmul)
        options = RunOptions(attention, check_execution(execution), matmul, row_block, check_device(device), dtype)
        return cls.build(resolve_model_dir(name_or_path, revision=revision), options, **settings)

    @classmethod
    def build(cls, folder: Path, options: RunOptions) -> TextPipeline:
        """The head from its folder, read as its format says (each head defines it, with its own settings)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def set_matmul(self, name: str, row_block: int | None = None) -> None:
        """Every linear layer, the encoder's and the head's, on the kernel registered as `name`
        (runtime/matmul.py), in blocks of row_block rows if given."""
        self.kernel = use_kernel(self, name, row_block)
        self.matmul_name, self.row_block = name, row_block

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's results are the same bits alone and in any batch: packed execution, with every linear
        layer in row blocks that passed their probes on this machine (runtime/matmul.py)."""
        return self.execution == "packed" and rows_independent_everywhere(self)

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

    def prompt_text(self, prompt_name: str | None, prompt: str | None) -> str:
        """The text put before each input: `prompt` itself, else the prompt named (default: default_prompt_name)."""
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts {sorted(self.prompts)}")
        return self.prompts[name]

    def task_prompt(self, task: str, kwargs: dict) -> dict:
        """encode()'s keywords with prompt_name `task` added, where the model has that prompt and none was given."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs and task in self.prompts:
            kwargs = {**kwargs, "prompt_name": task}
        return kwargs

    def start(self, sentences: Any, prompt_name: str | None, prompt: str | None, batch_size: int,
              token_budget: int | None, output_value: str | None = "sentence_embedding", precision: str = "float32",
              device: str | torch.device | None = None) -> tuple[list[str], bool, str, int]:
        """encode()'s first step for every head: the texts (and whether one str came), checked; the options, checked;
        the prompt's text; the token budget (default: TOKEN_BUDGETS for the device)."""
        token_budget = self.token_budget if token_budget is None else token_budget
        texts, single = check_texts(sentences)
        check_options(output_value, batch_size, token_budget, precision, device, self.device)
        return texts, single, self.prompt_text(prompt_name, prompt), token_budget

    def tokenize_texts(self, texts: list[str], hint: str = "") -> list[Tokens]:
        """Each text's tokens, cut at max_seq_length; one warning for the texts that were cut."""
        tokenized = self.tokenizer.tokenize(texts)
        report_truncation(tokenized, self.max_seq_length, hint)
        return tokenized

    def batches(self, tokenized: list[Tokens], batch_size: int, token_budget: int,
                order: Callable[[], list[int]]) -> list[list[int]]:
        """Which texts run together (indices into tokenized): packed, the longest first, each batch filled up to
        token_budget tokens; padded, batch_size texts at a time in order() (the reference's order, for its bits)."""
        if self.execution == "packed":
            return packed_batches([len(t.ids) for t in tokenized], token_budget)
        return padded_batches(order(), batch_size)

    def encode_loop(self, tokenized: list[Tokens], step: Callable[[list[int]], Sequence[Any]], batch_size: int,
                    token_budget: int, order: Callable[[], list[int]], show_progress_bar: bool | None = None
                    ) -> list[Any]:
        """Every text through `step` (a batch's indices -> one result per text), batch by batch (`batches`), with a
        progress bar counting texts; the results in input order. Nothing else of a batch outlives it."""
        results: list[Any] = [None] * len(tokenized)
        with progress_bar(show_progress_bar, len(tokenized)) as bar:
            for indices in self.batches(tokenized, batch_size, token_budget, order):
                for i, result in zip(indices, step(indices), strict=True):
                    results[i] = result
                bar.update(len(indices))
        return results

    @torch.inference_mode()
    def run(self, texts: list[Tokens], attended: list[int] | None = None, padded: bool = False) -> Hidden:
        """One batch through the encoder: packed, the texts end to end in one row (runtime/batching.py); padded (the
        padded execution, or `padded` asked), a (B, T) batch as sentence-transformers runs it, where text i's first
        attended[i] tokens are all that attention sees (default: all of them; the rest only look)."""
        if self.execution == "packed" and not padded:
            hidden, spans = run_packed(self.encoder, texts, self.device, self.row_block)  # (N, H)
            return Hidden(hidden, spans, None, [b - a for a, b in spans])
        batch = self.tokenizer.pad(texts, device=self.device)
        lengths = [len(t.ids) for t in texts]
        longest = batch["input_ids"].shape[1]
        starts = [0 if self.tokenizer.padding_side == "right" else longest - n for n in lengths]
        for row, n in enumerate(attended or []):
            batch["attention_mask"][row, starts[row] + n : starts[row] + lengths[row]] = 0
        return Hidden(self.encoder(**batch), None, batch["attention_mask"], lengths, starts)  # (B, T, H)


# --- encode()'s output ------------------------------------------------------------------------------------------------


def report_truncation(tokenized: list[Tokens], max_seq_length: int, hint: str = "", name: str = "max_seq_length"
                      ) -> None:
    """One warning (logger "minienc") for the texts of one encode() call that were cut at max_seq_length (called
    `name` in the message)."""
    cut = sum(t.truncated for t in tokenized)
    if cut:
        logger.warning("%d of %d texts were longer than %s (%d tokens) and were truncated%s",
                       cut, len(tokenized), name, max_seq_length, hint)


def to_numpy(vectors: torch.Tensor) -> np.ndarray:
    """NumPy has no bfloat16: such vectors come back as float32 (exactly: every bfloat16 is a float32)."""
    return (vectors.float() if vectors.dtype == torch.bfloat16 else vectors).cpu().numpy()


def empty_quantized(vectors: torch.Tensor, precision: str) -> np.ndarray:
    """No vectors, in the type and width that quantize() gives `precision`."""
    width = vectors.shape[1]
    if precision.endswith("binary"):
        return np.empty((0, (width + 7) // 8), np.uint8 if precision == "ubinary" else np.int8)
    return np.empty((0, width), np.uint8 if precision == "uint8" else np.int8)


def format_output(
    vectors: torch.Tensor,
    tokens: list[torch.Tensor] | None,
    output_value: str | None,
    single: bool,
    precision: str,
    convert_to_numpy: bool,
    convert_to_tensor: bool,
) -> Any:
    """sentence-transformers' return shapes: (n, D) vectors (a tensor, an array or a list of rows), quantized to
    `precision`; a list of (n_tokens, H) tensors; or one dict per text with both. For a single str, the first item
    alone."""
    if output_value is None:
        both = [{"sentence_embedding": v, "token_embeddings": t} for v, t in zip(vectors, tokens)]
        return both[0] if single else both
    if output_value == "token_embeddings":
        return tokens[0] if single else tokens
    if precision != "float32":
        quantized = quantize(to_numpy(vectors), precision) if len(vectors) else empty_quantized(vectors, precision)
        vectors = torch.from_numpy(quantized)
        convert_to_numpy = convert_to_numpy and not convert_to_tensor
        if convert_to_numpy:
            return quantized[0] if single else quantized
    if single:
        vectors = vectors[0]
    if convert_to_tensor:
        return vectors
    if convert_to_numpy:
        return to_numpy(vectors)
    return vectors if single else list(vectors)
