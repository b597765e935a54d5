"""Batches: which texts run together, and how a packed batch is laid out.

Packed execution takes the texts longest first and fills each batch up to a token budget; padded execution takes
batch_size texts at a time in sentence-transformers' order (by characters, longest first), for its bits.

Packing: the texts of a batch laid end to end in one row of N tokens, with no padding inside or between them.

The model's `forward(**batch, spans=spans)` then computes embeddings, projections, feed-forward and
LayerNorm on the N real tokens only, restarts positions at each text, and runs attention text by text.

It also makes a text's vector independent of its batch, by construction: LayerNorm, activations and residuals
work token by token, attention sees only the text itself, and the linear layers run on fixed blocks of rows
(matmul.RowBlocks), so every kernel call is a whole number of blocks whatever the batch holds, or, for a row under
one block, a call that a probe showed to round as a block does.

`run_packed` tops the row up to whole row blocks with filler: texts of padding tokens, run like any other text and
dropped after. Without it every linear layer would copy its input to top its last block up with zeros (docs/batch-invariance.md,
"How batch invariance is built", says what that cost); the filler costs the same arithmetic and a little attention,
and changes no bit of the real texts' results. A row shorter than one block (a lone query, a small batch) is topped
up only to a multiple of matmul.TAIL_ROWS, which the linear layers may run as a call of its own (RowBlocks.tail_fits).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..model.bert import EncoderConfig
from .matmul import TAIL_ROWS


class Tokens(NamedTuple):
    """One tokenized text, as much of a tokenizers Encoding as the encoder needs."""

    ids: np.ndarray       # (n,) int32 token ids, special tokens included
    type_ids: np.ndarray  # (n,) int32 segment of each token (0, or 1 for the second text of a pair)
    truncated: bool       # whether the text was cut at max_length


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


def pack(texts: Sequence[Tokens], device: torch.device | str | None = None
         ) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    """Tokenized texts -> input_ids and token_type_ids, each (1, N), and each text's (start, end) in the row."""
    ends = list(accumulate(len(t.ids) for t in texts))
    spans = list(zip([0, *ends[:-1]], ends))
    batch = {
        "input_ids": torch.from_numpy(np.concatenate([t.ids for t in texts])).long()[None].to(device),
        "token_type_ids": torch.from_numpy(np.concatenate([t.type_ids for t in texts])).long()[None].to(device),
    }
    return batch, spans


def run_packed(encoder: nn.Module, texts: Sequence[Tokens], device: torch.device | str | None = None,
               row_block: int | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Tokenized texts through the encoder in one packed row -> their tokens' hidden states end to end, (N, H), and
    each text's (start, end); the row runs topped up with filler to whole row blocks, or under one block to a multiple
    of TAIL_ROWS (see the module docstring); row_block: the linear layers' rows per block, None without."""
    n = sum(len(t.ids) for t in texts)
    batch, spans = pack([*texts, *filler(n, encoder.config, row_block)], device=device)
    hidden = encoder(**batch, spans=spans)[0]  # (N + filler, H)
    return hidden[:n], spans[: len(texts)]


def filler(n: int, config: EncoderConfig, row_block: int | None) -> list[Tokens]:
    """Texts of padding tokens, none longer than the model's positions, that top n tokens up to a whole number of
    the encoder's row blocks, or, under one block, to a multiple of TAIL_ROWS (none without row blocks)."""
    block = row_block or 1
    missing = -n % (TAIL_ROWS if n < block and block % TAIL_ROWS == 0 else block)
    longest, pad = config.max_tokens, config.pad_token_id
    sizes = [longest] * (missing // longest) + ([missing % longest] if missing % longest else [])
    return [Tokens(np.full(size, pad, dtype=np.int32), np.zeros(size, dtype=np.int32), False) for size in sizes]


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
