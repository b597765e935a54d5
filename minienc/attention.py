"""The attention registry: every way of computing softmax(q k^T * scale) v, looked up by name.

Every implementation has one signature:

    fn(q, k, v, mask, scale) -> out

- q, k, v: (batch, heads, seq, head_dim)
- mask:    bool, broadcastable to (batch, 1, 1, seq); True where a key may be attended.
           None when nothing in the batch is padded. Every row has at least one True key: the encoder
           lets a sequence that is all padding attend to everything, so no variant ever sees an empty row.
- scale:   the factor applied to q k^T (1 / sqrt(head_dim) for every supported checkpoint)
- out:     (batch, heads, seq, head_dim)

Add your own with `@register_attention("name")` and select it with `Encoder.from_pretrained(..., attention="name")`.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]

ATTENTION: dict[str, AttentionFn] = {}


def register_attention(name: str) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make `fn` selectable as `attention=name`. Re-registering a name replaces it."""

    def add(fn: AttentionFn) -> AttentionFn:
        ATTENTION[name] = fn
        return fn

    return add


def get_attention(name: str) -> AttentionFn:
    try:
        return ATTENTION[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(ATTENTION)}") from None


# reproduces transformers v5.x models/bert/modeling_bert.py eager_attention_forward + masking_utils.eager_mask
@register_attention("eager")
def eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The textbook math, op for op as transformers' eager path: padded keys get the dtype's lowest value added."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, T)
    if mask is not None:
        lowest = torch.finfo(scores.dtype).min
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device), lowest)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v)  # (B, nh, T, hs)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (encoder, no dropout)
@register_attention("sdpa")
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """PyTorch's fused kernel (flash / memory-efficient / math, chosen by PyTorch)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, nh, T, hs)
