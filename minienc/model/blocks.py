"""Blocks the newer families share: RMSNorm, rotary positions and the gated feed-forward.

BERT (bert.py) has none of them: LayerNorm, learned position vectors, one activation between two projections. The
decoders (llama.py: Qwen3, Llama, Qwen2, Mistral), NomicBERT (nomic_bert.py), ModernBERT (modernbert.py) and Gemma 3
(gemma3.py) are built from these three, written once here. Where
two families compute one of them in a different order of operations (Gemma's RMSNorm scales by 1 + w in float32;
ModernBERT rotates in float32; ModernBERT's feed-forward is one fused projection), the second form sits beside the
first, so that each reproduces transformers v5.x op for op and results match bit for bit.
Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import ACTIVATIONS
from .linear import Linear


# reproduces transformers v5.x Qwen3RMSNorm
class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, over the last dimension: LayerNorm without the mean and the bias. Computed
    in float32 and cast back to the input's dtype before the weight multiplies it."""

    def __init__(self, size: int, eps: float, dtype: torch.dtype | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * wide.to(x.dtype)


# reproduces transformers v5.x Gemma3RMSNorm
class UnitOffsetRMSNorm(nn.Module):
    """Gemma's RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + weight), all in float32, cast back to the input's dtype last.
    The stored weight is the offset from 1 (zeros mean "no scaling")."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return (wide * (1.0 + self.weight.float())).type_as(x)


# reproduces transformers v5.x Qwen3RotaryEmbedding (rope_type "default") and apply_rotary_pos_emb
def inverse_frequencies(head_dim: int, theta: float, device: torch.device | str | None = None) -> torch.Tensor:
    """(hs / 2,) float32: the rotation speed of each pair of dimensions, theta ** (-2i / hs)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim))


def rotary_angles(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids (B, T) -> cos and sin of each position's angles, (B, T, hs), in float32 then cast to dtype."""
    freqs = position_ids[..., None].float() * inv_freq.to(device=position_ids.device, dtype=torch.float)
    angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, hs): the two halves of a head share the angles
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hs): the second half of the dimensions, negated, then the first: (x1, x2) -> (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each head's queries or keys (B, nh, T, hs) by their position's angles (cos, sin: (B, T, hs))."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hs): the same angles for every head
    return (x * cos) + (rotate_half(x) * sin)


# reproduces transformers v5.x models/modernbert apply_rotary_pos_emb
def apply_rotary_float32(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary computed in float32 and cast back to x's dtype (ModernBERT): the same in a float32 model, one
    rounding instead of three in a bfloat16 one. The angles are widened first (exactly), as PyTorch widens them inside
    a float32 x bfloat16 product anyway: the same products, without its much slower mixed-dtype loop."""
    wide, cos, sin = x.float(), cos.unsqueeze(1).float(), sin.unsqueeze(1).float()
    return ((wide * cos) + (rotate_half(wide) * sin)).to(x.dtype)


# reproduces transformers v5.x Qwen3MLP, Gemma3MLP, LlamaMLP, NomicBertMLP and GteMLP
class GatedFeedForward(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU where act is SiLU (Qwen3, Llama, Nomic), GeGLU where it is GELU (Gemma, GTE).
    Biases only where a config asks for them: on all three (Llama's mlp_bias), or on down alone (GTE)."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, bias: bool = False,
                 down_bias: bool | None = None):
        super().__init__()
        self.gate = Linear(hidden_size, intermediate_size, bias=bias, activation=activation)
        self.up = Linear(hidden_size, intermediate_size, bias=bias)
        self.down = Linear(intermediate_size, hidden_size, bias=bias if down_bias is None else down_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.gate(x) * self.up(x))  # (B, T, H)


# reproduces transformers v5.x ModernBertMLP (eval mode)
class FusedGatedFeedForward(nn.Module):
    """down(act(a) * b) where (a, b) are the two halves of one projection up(x) (ModernBERT's GeGLU). The same
    equation as GatedFeedForward; the fused weight is kept whole, since one (2I, H) product and two (I, H) products
    need not round alike."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, bias: bool):
        super().__init__()
        self.up = Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.down = Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, dim=-1)  # each (B, T, I)
        return self.down(self.act(a) * b)  # (B, T, H)
