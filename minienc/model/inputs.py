"""The two inputs every family's forward takes, checked, and the positions rotary families count.

- padded: input_ids (B, T), shorter texts padded, and an attention mask (B, T) that hides the padding;
- packed: input_ids (1, N), the texts of a batch laid end to end, and `spans`, each text's (start, end) in the row.
"""

from __future__ import annotations

import torch

from .attention import Spans


def check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, spans: Spans | None) -> None:
    """The rotary families' inputs: input_ids (B, T), an attention mask of its shape or None, spans as check_spans."""
    if input_ids.dim() != 2 or (attention_mask is not None and attention_mask.shape != input_ids.shape):
        mask_shape = None if attention_mask is None else tuple(attention_mask.shape)
        raise ValueError(f"input_ids must be (batch, seq) and attention_mask its shape, got "
                         f"{tuple(input_ids.shape)} and {mask_shape}")
    if spans is not None:
        check_spans(spans, input_ids, attention_mask)


def check_spans(spans: Spans, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Packed input is one row of real tokens, (1, N), cut by spans into texts that follow one another."""
    if input_ids.shape[0] != 1 or attention_mask is not None:
        raise ValueError("packed input (spans) is one row of real tokens: input_ids (1, N) and no attention_mask")
    ends = [0] + [end for _, end in spans]
    starts = [start for start, _ in spans] + [input_ids.shape[1]]
    if not spans or starts != ends or any(end <= start for start, end in spans):
        raise ValueError(f"spans must cut the row of {input_ids.shape[1]} tokens into non-empty texts in order, "
                         f"each starting where the last ended, from 0; got {list(spans)[:8]}")


def positions(input_ids: torch.Tensor, spans: Spans | None) -> torch.Tensor:
    """(1, T) position of each token: 0..T-1 for a padded batch (transformers counts from the row's first token, so a
    left-padded text's positions start after its padding), each text from 0 when packed."""
    if spans is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    return torch.cat([torch.arange(b - a, device=input_ids.device) for a, b in spans])[None, :]
