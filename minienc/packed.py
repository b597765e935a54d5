"""Packed execution: the texts of a batch laid end to end in one row of N tokens, with no padding anywhere.

Embeddings, projections, feed-forward and LayerNorm work on the N real tokens only; attention runs text by text
(any registered attention function, called with mask=None). Nothing is spent on padding.

It also makes a text's vector independent of its batch. Everything outside attention works row by row, and
attention sees only the text itself; what remains is the matrix multiply (minienc/matmul.py), whose CPU kernels
were measured (torch 2.13, 2 threads, matrices of up to 6000 rows) to round a row differently when the matrix has few rows than
when it has many, whatever the other rows hold: MKL ("torch") with 1-3, 5-7 or 9-11 rows, oneDNN with 1 row.
So a packed row is filled up to MIN_ROWS tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tokenizers import Encoding

MIN_ROWS = 16  # packed rows are filled to at least this many tokens (see the module docstring)


@dataclass(frozen=True)
class Spans:
    """Where each text sits in a packed row: text i is tokens bounds[i]:bounds[i + 1]."""

    bounds: tuple[int, ...]

    def pairs(self) -> Iterator[tuple[int, int]]:
        return zip(self.bounds[:-1], self.bounds[1:])


def pack(
    encodings: list[Encoding], first_position: int, pad_token_id: int, device=None
) -> tuple[dict[str, torch.Tensor], Spans]:
    """Tokenized texts -> input_ids, token_type_ids, position_ids, each (1, N), and their Spans. Positions restart
    at first_position for each text. A filler text of padding tokens tops the row up to MIN_ROWS."""
    ids: list[int] = []
    types: list[int] = []
    positions: list[int] = []
    bounds = [0]
    filler = max(0, MIN_ROWS - sum(len(e.ids) for e in encodings))
    texts = [(e.ids, e.type_ids) for e in encodings] + ([([pad_token_id] * filler, [0] * filler)] if filler else [])
    for text_ids, text_types in texts:
        ids += text_ids
        types += text_types
        positions += range(first_position, first_position + len(text_ids))
        bounds.append(len(ids))
    batch = {
        "input_ids": torch.tensor([ids], device=device),
        "token_type_ids": torch.tensor([types], device=device),
        "position_ids": torch.tensor([positions], device=device),
    }
    return batch, Spans(tuple(bounds))


def encode_packed(encoder, encodings: list[Encoding]) -> list[torch.Tensor]:
    """The last hidden state of each text, packed: a list of (n_tokens, H), one per encoding."""
    config = encoder.config
    batch, spans = pack(encodings, config.first_position, config.pad_token_id, next(encoder.parameters()).device)
    x = encoder.embeddings(**batch)  # (1, N, H)
    for layer in encoder.layers:
        x = layer(x, spans)
    return [x[0, a:b] for a, b in spans.pairs()][: len(encodings)]


def rowwise(fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x) for a (n, D) matrix, computed on at least MIN_ROWS rows so that no row depends on n."""
    if x.shape[0] >= MIN_ROWS:
        return fn(x)
    filled = torch.cat([x, x.new_zeros(MIN_ROWS - x.shape[0], *x.shape[1:])])
    return fn(filled)[: x.shape[0]]
