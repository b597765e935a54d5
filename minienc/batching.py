"""What encode() does around the pipeline: checking its input, cutting texts into batches, and shaping the output
the way sentence-transformers' encode() returns it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from .devices import check_device
from .quantize import PRECISIONS, quantize
from .tokenizer import Tokens

logger = logging.getLogger("minienc")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)


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


def report_truncation(tokenized: list[Tokens], max_seq_length: int, hint: str = "", name: str = "max_seq_length"
                      ) -> None:
    """One warning (logger "minienc") for the texts of one encode() call that were cut at max_seq_length (called
    `name` in the message)."""
    cut = sum(t.truncated for t in tokenized)
    if cut:
        logger.warning("%d of %d texts were longer than %s (%d tokens) and were truncated%s",
                       cut, len(tokenized), name, max_seq_length, hint)


def longest_first(lengths: list[int]) -> list[int]:
    """Indices of the texts by token count `lengths`, longest first (ties in input order)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def packed_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Packed execution's batches: the texts longest first, each batch filled up to token_budget tokens (a longer
    text gets a batch of its own)."""
    cut: list[list[int]] = []
    used = 0
    for i in longest_first(lengths):
        if not cut or used + lengths[i] > token_budget:
            cut.append([])
            used = 0
        cut[-1].append(i)
        used += lengths[i]
    return cut


def padded_batches(order: list[int], batch_size: int) -> list[list[int]]:
    """Padded execution's batches: batch_size texts at a time, in `order` (padded_order: sentence-transformers')."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# reproduces sentence-transformers v6.x BaseModel._input_length + the sort in SentenceTransformer._inference
def padded_order(texts: list[str]) -> list[int]:
    """The order sentence-transformers batches texts in: by characters, longest first, as np.argsort orders them
    (ties too), so that padded execution's batches, and so their bits, are its own."""
    return np.argsort([-len(text) for text in texts]).tolist()


class NoProgressBar:
    def __enter__(self) -> NoProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def progress_bar(show: bool | None, total: int | None, initial: int = 0):
    """A tqdm bar counting texts (with texts/s and the time left) when `show`, else one that shows nothing."""
    if not show:
        return NoProgressBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="Encoding", unit="text", smoothing=0.1)


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
