"""Qwen3, by hand: a decoder used as an encoder (Qwen3-Embedding).

    x = embed(tokens)                                      no positions added here: they rotate q and k instead
    N times:  x = x + attention(RMSNorm(x))                pre-norm: the norm comes before each block
              x = x + feed_forward(RMSNorm(x))             down(silu(gate(x)) * up(x))
    h = RMSNorm(x)                                         the last hidden state

What differs from BERT (bert.py), block by block: no [CLS] and no token types; RMSNorm before each block instead of
LayerNorm after it; rotary positions applied to queries and keys (model/blocks.py), counted 0, 1, 2, ... from the
first token of the row whatever the padding; queries and keys each RMS-normalized per head; fewer key / value heads
than query heads (grouped-query attention); causal attention, each token seeing only itself and the tokens before it
(model/attention.py, the causal forms); a gated feed-forward; no biases. So the last token is the only one that has
seen the whole text, and it is the one pooled (sentence-transformers' "lasttoken").

Inference only. Shapes: B = batch, T = sequence length, H = hidden size, nh = query heads, nkv = key / value heads,
hs = head size. Two inputs, one forward pass, as bert.py: padded (B, T) with an attention mask, or packed (1, N) with
each text's span, where positions restart at each text and each text attends causally to itself alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import CAUSAL_FORMS, Attend, Spans, as_cached, bind, causal_mask, with_triangle
from .blocks import GatedFeedForward, RMSNorm, apply_rotary, inverse_frequencies, rotary_angles
from .config import Qwen3Config
from .inputs import check_inputs, positions
from .linear import Linear


# reproduces transformers v5.x Qwen3Attention (one pass: an empty KV cache, or none)
class Qwen3Attention(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        bias, H, hs = config.attention_bias, config.hidden_size, config.head_dim
        self.query = Linear(H, config.num_heads * hs, bias=bias)
        self.key = Linear(H, config.num_kv_heads * hs, bias=bias)
        self.value = Linear(H, config.num_kv_heads * hs, bias=bias)
        self.out = Linear(config.num_heads * hs, H, bias=bias)
        self.q_norm = RMSNorm(hs, config.rms_norm_eps)  # per head, over hs
        self.k_norm = RMSNorm(hs, config.rms_norm_eps)
        self.cached_layout = config.use_cache  # keys and values in the cache's layout (attention.py, as_cached)
        self.attend: Attend | None = None  # set by Qwen3Model.set_attention

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q = self.q_norm(self.query(x).view(heads)).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_norm(self.key(x).view(heads)).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.value(x).view(heads).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # positions, as rotations
        if self.cached_layout:  # laid out as transformers' KV cache hands them over
            k, v = as_cached(k), as_cached(v)
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text causally alone
        y = y.transpose(1, 2).contiguous().reshape(B, T, -1)  # (B, T, nh * hs)
        return self.out(y)


# reproduces transformers v5.x Qwen3DecoderLayer: pre-norm, x + sublayer(RMSNorm(x)) twice
class Qwen3Layer(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Qwen3Attention(config)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn = GatedFeedForward(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        x = x + self.attention(self.attn_norm(x), cos, sin, mask, spans)
        return x + self.ffn(self.ffn_norm(x))  # (B, T, H)


# reproduces transformers v5.x Qwen3Model (one pass, rope_type "default")
class Qwen3Model(nn.Module):
    """The whole decoder. `model(input_ids, attention_mask)` -> last hidden state (B, T, H); packed,
    `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    family = "qwen3"  # whose reference forms, and `matches=` claims, apply (model/attention.py)

    def __init__(self, config: Qwen3Config, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Qwen3Layer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # float32 on the CPU whatever the model's dtype and device, as transformers keeps it (not a buffer: .to()
        # would cast it, which changes every angle)
        self.inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, device="cpu")
        self.set_attention(attention)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`: the decoders' eager / sdpa, or a registered variant, which gets
        the causal triangle in its mask where transformers' rules leave the mask out (nothing padded)."""
        attend = bind(name, self.family, CAUSAL_FORMS, complete=with_triangle)
        for layer in self.layers:
            layer.attention.attend = attend
        self.attention_name = name

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,  # by name, as transformers' Qwen3Model takes position_ids third and has no token types
        token_type_ids: torch.Tensor | None = None,  # unused: Qwen3 has no segments (the pipeline passes them)
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones), either padding side;
        position_ids (B, T) (default: 0..T-1). Packed input: B = 1, spans gives each text's (start, end), no mask."""
        check_inputs(input_ids, attention_mask, spans)
        position_ids = positions(input_ids, spans) if position_ids is None else position_ids
        x = self.embed(input_ids)  # (B, T, H)
        cos, sin = rotary_angles(position_ids, self.inv_freq, x.dtype)  # each (1 or B, T, hs)
        mask = causal_mask(attention_mask)  # None where nothing is padded
        for layer in self.layers:
            x = layer(x, cos, sin, mask, spans)
        return self.norm(x)
