"""Blocks the newer families share: RMSNorm, rotary positions and the gated feed-forward.

BERT (bert.py) has none of them: LayerNorm, learned position vectors, one activation between two projections. The
decoder embedders (Qwen3, qwen3.py) are built from these three, written once here. Each reproduces transformers
v5.x op for op (Qwen3RMSNorm, Qwen3RotaryEmbedding + apply_rotary_pos_emb, Qwen3MLP), so results match bit for bit.
Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size.
"""

from __future__ import annotations

import torch
from torch import nn

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


# reproduces transformers v5.x Qwen3MLP
class GatedFeedForward(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU where act is SiLU. No biases."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str):
        super().__init__()
        self.gate = Linear(hidden_size, intermediate_size, bias=False, activation=activation)
        self.up = Linear(hidden_size, intermediate_size, bias=False)
        self.down = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.gate(x) * self.up(x))  # (B, T, H)
