"""Packing: the texts of a batch laid end to end in one row of N tokens, with no padding anywhere.

`Encoder.forward(**batch, spans=spans)` then computes embeddings, projections, feed-forward and
LayerNorm on the N real tokens only, restarts positions at each text, and runs attention text by text.

It also makes a text's vector independent of its batch, by construction: LayerNorm, activations and residuals
work token by token, attention sees only the text itself, and the linear layers run on fixed blocks of rows
(matmul.RowBlocks), so every kernel call has the same shape whatever the batch holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np
import torch

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
