"""Packing: the texts of a batch laid end to end in one row of N tokens, with no padding inside or between them.

`Encoder.forward(**batch, spans=spans)` then computes embeddings, projections, feed-forward and
LayerNorm on the N real tokens only, restarts positions at each text, and runs attention text by text.

It also makes a text's vector independent of its batch, by construction: LayerNorm, activations and residuals
work token by token, attention sees only the text itself, and the linear layers run on fixed blocks of rows
(matmul.RowBlocks), so every kernel call is a whole number of blocks whatever the batch holds, or, for a row under
one block, a call that a probe showed to round as a block does.

`run_packed` tops the row up to whole row blocks with filler: texts of padding tokens, run like any other text and
dropped after. Without it every linear layer would copy its input to top its last block up with zeros (README,
"How batch invariance is built", says what that cost); the filler costs the same arithmetic and a little attention,
and changes no bit of the real texts' results. A row shorter than one block (a lone query, a small batch) is topped
up only to a multiple of matmul.TAIL_ROWS, which the linear layers may run as a call of its own (RowBlocks.tail_fits).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np
import torch

from .matmul import TAIL_ROWS
from .model import Encoder
from .tokenizer import Tokens


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


def run_packed(encoder: Encoder, texts: Sequence[Tokens], device: torch.device | str | None = None
               ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Tokenized texts through the encoder in one packed row -> their tokens' hidden states end to end, (N, H), and
    each text's (start, end); the row runs topped up with filler to whole row blocks, or under one block to a multiple
    of TAIL_ROWS (see the module docstring)."""
    n = sum(len(t.ids) for t in texts)
    batch, spans = pack([*texts, *filler(n, encoder)], device=device)
    hidden = encoder(**batch, spans=spans)[0]  # (N + filler, H)
    return hidden[:n], spans[: len(texts)]


def filler(n: int, encoder: Encoder) -> list[Tokens]:
    """Texts of padding tokens, none longer than the model's positions, that top n tokens up to a whole number of
    the encoder's row blocks, or, under one block, to a multiple of TAIL_ROWS (none where it has no row blocks)."""
    block = encoder.row_block or 1
    missing = -n % (TAIL_ROWS if n < block and block % TAIL_ROWS == 0 else block)
    longest, pad = encoder.config.max_tokens, encoder.config.pad_token_id
    sizes = [longest] * (missing // longest) + ([missing % longest] if missing % longest else [])
    return [Tokens(np.full(size, pad, dtype=np.int32), np.zeros(size, dtype=np.int32), False) for size in sizes]
