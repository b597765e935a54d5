"""Llama, by hand: the decoder Qwen3, Qwen2 and Mistral vary (LLM2Vec-style and instruction embedders).

    x = embed(tokens)                                      positions rotate q and k instead of being added
    N times:  x = x + attention(RMSNorm(x))                causal, grouped-query, rotary
              x = x + down(silu(gate(x)) * up(x))          after RMSNorm
    h = RMSNorm(x)                                         the last hidden state

Three variations are config values, not classes: queries and keys RMS-normalized per head (Qwen3: qwen3.py, which
says what a decoder does differently from BERT), biases on the projections (Llama's attention_bias on all four,
Qwen2's on q, k and v only: qwen2.py), and a sliding window (Mistral: mistral.py), where a token attends to the
`window` tokens up to itself, no further back.

Inference only. Shapes: B = batch, T = sequence length, H = hidden size, nh = query heads, nkv = key / value heads,
hs = head size. Two inputs, one forward pass, as bert.py: padded (B, T) with an attention mask, or packed (1, N)
with each text's span, where positions restart at each text and each text attends causally to itself alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import (CAUSAL_FORMS, Spans, as_cached, bind, causal_mask, causal_triangle, get_attention,
                        with_triangle)
from .blocks import GatedFeedForward, RMSNorm, apply_rotary, inverse_frequencies, rotary_angles
from .config import check_grouped_heads
from .family import Family, Stages
from .inputs import check_inputs, positions
from .linear import Linear


@dataclass(frozen=True)
class LlamaConfig:
    model_type: str = "llama"
    vocab_size: int = 32000               # rows of the token-embedding table
    hidden_size: int = 4096               # width of every token vector
    num_layers: int = 32                  # decoder layers stacked
    num_heads: int = 32                   # query heads
    num_kv_heads: int = 32                # key / value heads, each shared by num_heads / num_kv_heads query heads
    head_dim: int = 128                   # width of one head (config.json's head_dim, else hidden_size / num_heads)
    intermediate_size: int = 11008        # feed-forward inner width (gate and up projections)
    hidden_act: str = "silu"              # the gate's activation, a key of ACTIVATIONS
    max_position_embeddings: int = 2048   # the longest text it was trained on: rotary positions have no table
    rms_norm_eps: float = 1e-6            # epsilon of every RMSNorm
    rope_theta: float = 10000.0           # base of the rotary frequencies
    qkv_bias: bool = False                # biases on q, k and v (Llama: attention_bias; Qwen2: always)
    out_bias: bool = False                # a bias on o (Llama: attention_bias; Qwen2: never)
    mlp_bias: bool = False                # biases on the feed-forward projections (Llama's mlp_bias)
    qk_norm: bool = False                 # queries and keys RMS-normalized per head, over hs (Qwen3)
    sliding_window: int | None = None     # Mistral: a token sees the keys less than this many positions back
    pad_token_id: int = 0                 # the id padding is filled with (masked: its value changes no result)
    use_cache: bool = True                # config.json's: the KV cache decides the keys' layout (attention.py)

    family = "llama"                      # the record it belongs to (qwen3.py, qwen2.py, mistral.py name theirs)
    default_kv_heads = None               # num_key_value_heads where config.json has none (None: num_heads)
    positions_from_input_ids = False      # positions count 0, 1, 2, ... from the first token, whatever the padding

    def __post_init__(self) -> None:
        check_grouped_heads(self)
        if self.head_dim % 2 or not isinstance(self.rope_theta, (int, float)) or self.rope_theta <= 0:
            raise ValueError(f"rotary positions need an even head_dim and a positive rope_theta, got {self.head_dim} "
                             f"and {self.rope_theta!r}")
        if self.sliding_window is not None and (isinstance(self.sliding_window, bool) or not isinstance(
                self.sliding_window, int) or self.sliding_window < 1):
            raise ValueError(f"sliding_window must be a positive integer or null, got {self.sliding_window!r}")

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, raw: dict) -> LlamaConfig:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored)."""
        bias = bool(raw.get("attention_bias", False))
        return cls(**decoder_fields(raw, cls()), qkv_bias=bias, out_bias=bias, mlp_bias=bool(raw.get("mlp_bias")))


def decoder_fields(raw: dict, defaults: LlamaConfig) -> dict:
    """The fields every Llama-shaped config.json spells alike; what minienc does not compute (another rope_type, a
    bidirectional flag, alternating window layers) is refused."""
    rope = raw.get("rope_scaling") or raw.get("rope_parameters") or {}  # transformers' order
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"unsupported rotary scaling {rope}; minienc computes rope_type 'default'")
    if raw.get("is_causal") is False:
        raise ValueError("is_causal false (a bidirectional decoder) is not supported: minienc runs it causally, as "
                         "transformers does")
    if any(kind != "full_attention" for kind in raw.get("layer_types") or []):
        raise ValueError(f"layer_types {raw['layer_types']} (alternating window layers) are not supported")
    pad = next((raw[key] for key in ("pad_token_id", "eos_token_id")  # unused but checked; -1 means "none"
                if isinstance(raw.get(key), int) and raw[key] >= 0), 0)
    kv_heads = raw["num_key_value_heads"] if "num_key_value_heads" in raw else defaults.default_kv_heads
    return dict(
        model_type=raw["model_type"], vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
        num_layers=raw["num_hidden_layers"], num_heads=raw["num_attention_heads"],
        num_kv_heads=kv_heads or raw["num_attention_heads"],  # transformers' rule: None means one per query head
        head_dim=raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"],
        intermediate_size=raw["intermediate_size"], hidden_act=raw.get("hidden_act", defaults.hidden_act),
        max_position_embeddings=raw.get("max_position_embeddings", defaults.max_position_embeddings),
        rms_norm_eps=raw.get("rms_norm_eps", defaults.rms_norm_eps),
        rope_theta=rope.get("rope_theta", raw.get("rope_theta", defaults.rope_theta)),
        pad_token_id=pad, use_cache=bool(raw.get("use_cache", True)),
    )


# reproduces transformers v5.x masking_utils.create_sliding_window_causal_mask (sdpa_mask, eager_mask; non-vmap)
def sliding_causal_mask(attention_mask: torch.Tensor | None, T: int, window: int,
                        device: torch.device) -> torch.Tensor | None:
    """bool (B, 1, T, T): True where query i may attend to key j, i - window < j <= i, and j is a real token. None,
    as transformers gives it (is_causal in PyTorch's kernel), where nothing is padded and T < window."""
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and T < window:
        return None
    near = torch.arange(T, device=device)[None, :] > torch.arange(T, device=device)[:, None] - window  # j > i - w
    allowed = causal_triangle(T, device) & near
    return allowed & attention_mask.bool()[:, None, None, :] if padded else allowed


# reproduces transformers v5.x LlamaAttention / Qwen3Attention / Qwen2Attention / MistralAttention (one pass: an
# empty KV cache, or none)
class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        H, hs = config.hidden_size, config.head_dim
        self.query = Linear(H, config.num_heads * hs, bias=config.qkv_bias)
        self.key = Linear(H, config.num_kv_heads * hs, bias=config.qkv_bias)
        self.value = Linear(H, config.num_kv_heads * hs, bias=config.qkv_bias)
        self.out = Linear(config.num_heads * hs, H, bias=config.out_bias)
        self.q_norm = RMSNorm(hs, config.rms_norm_eps) if config.qk_norm else None  # per head, over hs (Qwen3)
        self.k_norm = RMSNorm(hs, config.rms_norm_eps) if config.qk_norm else None
        self.cached_layout = config.use_cache  # keys and values in the cache's layout (attention.py, as_cached)
        self.attend = None  # set by LlamaModel.set_attention

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q, k = self.query(x).view(heads), self.key(x).view(heads)  # (B, T, nh or nkv, hs)
        if self.q_norm is not None:  # Qwen3: each head's query and key normalized
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hs), (B, nkv, T, hs)
        v = self.value(x).view(heads).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # positions, as rotations
        if self.cached_layout:  # laid out as transformers' KV cache hands them over
            k, v = as_cached(k), as_cached(v)
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text causally alone
        return self.out(y.transpose(1, 2).contiguous().reshape(B, T, -1))  # (B, T, H)


# reproduces transformers v5.x LlamaDecoderLayer (and Qwen3's, Qwen2's, Mistral's): pre-norm, x + sublayer(RMSNorm(x))
# twice
class LlamaLayer(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = LlamaAttention(config)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn = GatedFeedForward(config.hidden_size, config.intermediate_size, config.hidden_act, config.mlp_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        x = x + self.attention(self.attn_norm(x), cos, sin, mask, spans)
        return x + self.ffn(self.ffn_norm(x))  # (B, T, H)


# reproduces transformers v5.x LlamaModel / Qwen3Model / Qwen2Model / MistralModel (one pass, rope_type "default")
class LlamaModel(nn.Module):
    """The whole decoder. `model(input_ids, attention_mask)` -> last hidden state (B, T, H); packed,
    `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    def __init__(self, config: LlamaConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.family = config.family  # llama, qwen3, qwen2 or mistral: whose `matches=` claims apply
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # float32 on the CPU whatever the model's dtype and device, as transformers keeps it (not a buffer: .to()
        # would cast it, which changes every angle)
        self.inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, device="cpu")
        self.set_attention(attention)

    def mask(self, attention_mask: torch.Tensor | None, T: int, device: torch.device) -> torch.Tensor | None:
        """The mask by transformers' rules: causal (None where nothing is padded), within the window if there is one."""
        if self.window is None:
            return causal_mask(attention_mask)
        return sliding_causal_mask(attention_mask, T, self.window, device)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`: the decoders' eager / sdpa, or a registered variant, which gets
        the causal triangle (and the window) in its mask where transformers' rules leave the mask out. A variant
        registered with windows=False (no_window) reads every earlier token past Mistral's window."""
        self.window = self.config.sliding_window if get_attention(name).windows else None
        alone = None if self.window is None else (lambda T, device: self.mask(None, T, device))
        attend = bind(name, self.family, CAUSAL_FORMS, alone=alone, complete=with_triangle)
        for layer in self.layers:
            layer.attention.attend = attend
        self.attention_name = name

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,  # by name, as transformers' LlamaModel takes position_ids third and has no token types
        token_type_ids: torch.Tensor | None = None,  # unused: no segments (the pipeline passes them)
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones), either padding side;
        position_ids (B, T) (default: 0..T-1). Packed input: B = 1, spans gives each text's (start, end), no mask."""
        check_inputs(input_ids, attention_mask, spans)
        position_ids = positions(input_ids, spans) if position_ids is None else position_ids
        x = self.embed(input_ids)  # (B, T, H)
        cos, sin = rotary_angles(position_ids, self.inv_freq, x.dtype)  # each (1 or B, T, hs)
        mask = self.mask(attention_mask, input_ids.shape[1], x.device) if spans is None else None
        for layer in self.layers:
            x = layer(x, cos, sin, mask, spans)
        return self.norm(x)


# --- the family's record: how its checkpoints and stages are read ----------------------------------------------------

# checkpoint name -> ours, for Llama, Qwen2 and Mistral alike, Qwen3 with its q_norm and k_norm (LlamaForCausalLM and
# the rest store the model under "model.", and their lm_head beside it)
KEYS: dict[str, str | None] = {
    "embed_tokens.weight": "embed.weight",
    "layers.{}.input_layernorm.weight": "layers.{}.attn_norm.weight",
    **{f"layers.{{}}.self_attn.{theirs}_proj.{kind}": f"layers.{{}}.attention.{ours}.{kind}"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    "layers.{}.post_attention_layernorm.weight": "layers.{}.ffn_norm.weight",
    **{f"layers.{{}}.mlp.{name}_proj.{kind}": f"layers.{{}}.ffn.{name}.{kind}"
       for name in ("gate", "up", "down") for kind in ("weight", "bias")},
    "norm.weight": "norm.weight",
}
OURS = Stages(embeddings=(("embeddings", "embed", False),), attention=("ffn_norm", True), final_norm="norm")
THEIRS = Stages(embeddings=(("embeddings", "embed_tokens", False),), attention=("post_attention_layernorm", True),
                final_norm="norm")
TRACE_WORDS = ("the token's vector alone",
               "decoder layers      (pre-norm: x + attention(RMSNorm(x)), causal; then the gated FFN)", "final RMSNorm")

FAMILY = Family(
    name=LlamaConfig.family, model_types={"llama": "model."}, config=LlamaConfig, model=LlamaModel, keys=KEYS,
    reference="LlamaModel", ours=OURS, theirs=THEIRS, trace_words=TRACE_WORDS,
)
