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

from dataclasses import dataclass

import torch
from torch import nn

from .attention import CAUSAL_FORMS, Attend, Spans, as_cached, bind, causal_mask, with_triangle
from .blocks import GatedFeedForward, RMSNorm, apply_rotary, inverse_frequencies, rotary_angles
from .config import check_common, check_sizes
from .family import Family, Stages
from .inputs import check_inputs, positions
from .linear import Linear


@dataclass(frozen=True)
class Qwen3Config:
    model_type: str = "qwen3"
    vocab_size: int = 151669              # rows of the token-embedding table
    hidden_size: int = 1024               # width of every token vector
    num_layers: int = 28                  # decoder layers stacked
    num_heads: int = 16                   # query heads
    num_kv_heads: int = 8                 # key / value heads, each shared by num_heads / num_kv_heads query heads
    head_dim: int = 128                   # width of one head: config.json's, not hidden_size / num_heads
    intermediate_size: int = 3072         # feed-forward inner width (gate and up projections)
    hidden_act: str = "silu"              # the gate's activation, a key of ACTIVATIONS
    max_position_embeddings: int = 32768  # the longest text it was trained on: rotary positions have no table
    rms_norm_eps: float = 1e-6            # epsilon of every RMSNorm
    rope_theta: float = 10000.0           # base of the rotary frequencies (transformers' default; Qwen3 sets 1e6)
    attention_bias: bool = False          # biases on q, k, v and o (Qwen3: none)
    pad_token_id: int = 0                 # the id padding is filled with (masked: its value changes no result)
    use_cache: bool = True                # config.json's: transformers runs the model with a KV cache unless it is
                                          # false; minienc keeps none, but the cache decides the keys' layout
                                          # (model/attention.py, as_cached)

    def __post_init__(self) -> None:
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                           "intermediate_size", "max_position_embeddings"))
        check_common(self, "rms_norm_eps", self.rms_norm_eps)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_key_value_heads ({self.num_kv_heads}) does not divide num_attention_heads "
                             f"({self.num_heads})")
        if self.head_dim % 2 or not isinstance(self.rope_theta, (int, float)) or self.rope_theta <= 0:
            raise ValueError(f"rotary positions need an even head_dim and a positive rope_theta, got {self.head_dim} "
                             f"and {self.rope_theta!r}")

    @property
    def max_tokens(self) -> int:
        """The longest text minienc runs: max_position_embeddings."""
        return self.max_position_embeddings

    positions_from_input_ids = False  # positions count 0, 1, 2, ... from the first token, whatever the padding

    @classmethod
    def from_dict(cls, raw: dict) -> Qwen3Config:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored); what minienc does not
        compute (another rope_type, sliding-window layers) is refused."""
        rope = raw.get("rope_scaling") or raw.get("rope_parameters") or {}  # transformers' order
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"unsupported rotary scaling {rope}; minienc computes rope_type 'default'")
        if raw.get("use_sliding_window") or any(kind != "full_attention" for kind in raw.get("layer_types") or []):
            raise ValueError("sliding-window attention layers (use_sliding_window, layer_types) are not supported; "
                             "minienc's Qwen3 attends to every earlier token")
        if raw.get("is_causal") is False:
            raise ValueError("is_causal false (a bidirectional Qwen3) is not supported; minienc's Qwen3 is causal")
        defaults = cls()
        pad = next((raw[key] for key in ("pad_token_id", "eos_token_id") if isinstance(raw.get(key), int)), 0)
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            num_kv_heads=raw.get("num_key_value_heads") or raw["num_attention_heads"],
            head_dim=raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"], hidden_act=raw.get("hidden_act", defaults.hidden_act),
            max_position_embeddings=raw.get("max_position_embeddings", defaults.max_position_embeddings),
            rms_norm_eps=raw.get("rms_norm_eps", defaults.rms_norm_eps),
            rope_theta=rope.get("rope_theta", raw.get("rope_theta", defaults.rope_theta)),
            attention_bias=bool(raw.get("attention_bias", False)), pad_token_id=pad,
            use_cache=bool(raw.get("use_cache", True)),
        )


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


# --- the family's record: how its checkpoints and stages are read ----------------------------------------------------

# checkpoint name -> ours (Qwen3ForCausalLM stores the model under "model.", and its lm_head beside it)
KEYS: dict[str, str | None] = {
    "embed_tokens.weight": "embed.weight",
    "layers.{}.input_layernorm.weight": "layers.{}.attn_norm.weight",
    **{f"layers.{{}}.self_attn.{theirs}_proj.{kind}": f"layers.{{}}.attention.{ours}.{kind}"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    "layers.{}.self_attn.q_norm.weight": "layers.{}.attention.q_norm.weight",
    "layers.{}.self_attn.k_norm.weight": "layers.{}.attention.k_norm.weight",
    "layers.{}.post_attention_layernorm.weight": "layers.{}.ffn_norm.weight",
    "layers.{}.mlp.gate_proj.weight": "layers.{}.ffn.gate.weight",
    "layers.{}.mlp.up_proj.weight": "layers.{}.ffn.up.weight",
    "layers.{}.mlp.down_proj.weight": "layers.{}.ffn.down.weight",
    "norm.weight": "norm.weight",
}

FAMILY = Family(
    name=Qwen3Model.family, model_types={"qwen3": "model."}, config=Qwen3Config, model=Qwen3Model, keys=KEYS,
    reference="Qwen3Model",
    ours=Stages(embeddings=(("embeddings", "embed", False),), attention=("ffn_norm", True), final_norm="norm"),
    theirs=Stages(embeddings=(("embeddings", "embed_tokens", False),), attention=("post_attention_layernorm", True),
                  final_norm="norm"),
    trace_words=("the token's vector alone",
                 "decoder layers      (pre-norm: x + attention(RMSNorm(x)), causal; then the gated FFN)",
                 "final RMSNorm"),
)
