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
A variant that reproduces one of transformers' implementations says so with `matches=`; `minienc parity` then holds
it to bit-exactness against that implementation by default, and the tests compare it with `eager`.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]

ATTENTION: dict[str, AttentionFn] = {}
# name -> the transformers attn_implementation it reproduces bit for bit; absent for variants that change the math
MATCHES: dict[str, str] = {}


def register_attention(name: str, *, matches: str | None = None) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make `fn` selectable as `attention=name`. Re-registering a name replaces it.

    matches: the transformers attn_implementation ("eager", "sdpa") this function claims to reproduce exactly.
    """

    def add(fn: AttentionFn) -> AttentionFn:
        ATTENTION[name] = fn
        MATCHES.pop(name, None)
        if matches is not None:
            MATCHES[name] = matches
        return fn

    return add


def get_attention(name: str) -> AttentionFn:
    try:
        return ATTENTION[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(ATTENTION)}") from None


# reproduces transformers v5.x models/bert/modeling_bert.py eager_attention_forward + masking_utils.eager_mask
@register_attention("eager", matches="eager")
def eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The textbook math, op for op as transformers' eager path: padded keys get the dtype's lowest value added."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, T)
    if mask is not None:
        lowest = torch.finfo(scores.dtype).min
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device), lowest)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v)  # (B, nh, T, hs)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (encoder, no dropout)
@register_attention("sdpa", matches="sdpa")
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """PyTorch's fused kernel (flash / memory-efficient / math, chosen by PyTorch)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, nh, T, hs)


# --- research variants: they change the computation on purpose -----------------------------------------------------


def sliding_window(window: int) -> AttentionFn:
    """Local attention: a token sees only the keys at most `window` positions away (Longformer's local part)."""

    def local(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        positions = torch.arange(q.shape[2], device=q.device)
        band = (positions[:, None] - positions[None, :]).abs() <= window  # (T, T): True inside the window
        return eager(q, k, v, band if mask is None else band & mask, scale)  # mask -> (B, 1, T, T)

    return local


register_attention("sliding_window")(sliding_window(8))


@register_attention("linear")
def linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Linear attention (Katharopoulos et al., 2020): softmax(q k^T) is replaced by phi(q) phi(k)^T with
    phi = elu + 1, so the cost grows linearly with length. `scale` is unused: phi replaces the softmax."""
    q, k = F.elu(q) + 1, F.elu(k) + 1  # positive features, (B, nh, T, hs)
    if mask is not None:
        k = k * mask.transpose(-1, -2).to(k.dtype)  # padded keys contribute nothing; mask -> (B, 1, T, 1)
    context = torch.matmul(k.transpose(2, 3), v)  # (B, nh, hs, hs): sum over keys of phi(k) v^T
    normalizer = torch.matmul(q, k.sum(dim=2, keepdim=True).transpose(2, 3))  # (B, nh, T, 1)
    return torch.matmul(q, context) / normalizer.clamp(min=1e-6)
