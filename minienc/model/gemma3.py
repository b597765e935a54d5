"""Gemma 3 as an encoder, by hand: EmbeddingGemma, a Gemma 3 decoder trained to attend both ways.

    x = embed(tokens) * sqrt(H)                            the embedding table is shared with the LM head, so scaled
    N times:  x = x + norm(attention(norm(x)))             four norms per layer: before and after each block
              x = x + norm(feed_forward(norm(x)))          down(gelu_tanh(gate(x)) * up(x))
    h = norm(x)                                            the last hidden state

What differs from Qwen3 (qwen3.py, whose blocks are llama.py's), block by block: the embeddings are scaled by sqrt(H) (rounded to the model's
dtype first, as transformers does); every RMSNorm scales by 1 + w and stays in float32 until its end
(model/blocks.py, UnitOffsetRMSNorm); each block's output is normalized too before it joins the residual; the
attention scale is query_pre_attn_scalar ** -0.5, not hs ** -0.5; the feed-forward's gate is GELU (tanh form); and
attention is bidirectional, alternating as ModernBERT's: five local layers, each token seeing the tokens at most
`window` = sliding_window / 2 positions away, then one global layer, each with its own rotary base. transformers
builds both masks even where nothing is padded (`masks`); PyTorch's kernel computes a masked call differently from
an unmasked one, so minienc does the same.

Inference only. Shapes: B = batch, T = sequence length, H = hidden size, nh = query heads, nkv = key / value heads,
hs = head size. Two inputs, one forward pass: padded (B, T) with an attention mask (either padding side), or packed
(1, N) with each text's span, where positions restart at each text and each text attends to itself alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attend, Spans, as_cached, band, bind_local_global
from .blocks import GatedFeedForward, UnitOffsetRMSNorm, apply_rotary, inverse_frequencies, rotary_angles
from .config import LAYER_TYPES, check_grouped_heads, check_local_global, read_layer_types, read_thetas
from .family import Family, Stages
from .inputs import check_inputs, positions
from .linear import Linear

Masks = dict[str, torch.Tensor]  # layer type ("full_attention", "sliding_attention") -> its mask


@dataclass(frozen=True)
class Gemma3Config:
    model_type: str = "gemma3_text"
    vocab_size: int = 262144              # rows of the token-embedding table
    hidden_size: int = 768                # width of every token vector
    num_layers: int = 24                  # layers stacked
    num_heads: int = 3                    # query heads
    num_kv_heads: int = 1                 # key / value heads, each shared by num_heads / num_kv_heads query heads
    head_dim: int = 256                   # width of one head: config.json's, not hidden_size / num_heads
    intermediate_size: int = 1152         # feed-forward inner width (gate and up projections)
    hidden_act: str = "gelu_pytorch_tanh"  # config.json's hidden_activation: the gate's activation
    max_position_embeddings: int = 2048   # the longest text it was trained on
    rms_norm_eps: float = 1e-6            # epsilon of every RMSNorm
    query_pre_attn_scalar: float = 256    # attention scores are scaled by query_pre_attn_scalar ** -0.5
    attention_bias: bool = False          # biases on q, k, v and o
    pad_token_id: int = 0                 # the id padding is filled with (masked: its value changes no result)
    local_width: int = 512                # config.json's sliding_window: a local layer sees width // 2 each side
    layer_types: tuple[str, ...] = (("sliding_attention",) * 5 + ("full_attention",)) * 4  # five local, one global
    rope_theta: float = 1000000.0         # rotary base of the global layers
    local_rope_theta: float = 10000.0     # rotary base of the local layers (rope_local_base_freq)
    use_cache: bool = True                # config.json's: transformers runs the model with a KV cache unless it is
                                          # false; minienc keeps none, but the cache decides the keys' layout
                                          # (model/attention.py, as_cached)

    def __post_init__(self) -> None:
        check_grouped_heads(self)
        if isinstance(self.query_pre_attn_scalar, bool) or not (
                isinstance(self.query_pre_attn_scalar, (int, float)) and self.query_pre_attn_scalar > 0):
            raise ValueError(f"query_pre_attn_scalar must be a positive number, got {self.query_pre_attn_scalar!r}")
        check_local_global(self, "sliding_window")

    @property
    def window(self) -> int:
        """How far a local layer looks each way (transformers' bidirectional rule: |i - j| < width // 2 + 1)."""
        return self.local_width // 2

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings

    positions_from_input_ids = False

    @classmethod
    def from_dict(cls, raw: dict) -> Gemma3Config:
        """Build from the fields of a Hugging Face config.json (EmbeddingGemma's: Gemma 3 with
        use_bidirectional_attention); a causal Gemma 3, or attention soft-capping, is refused. A field the file
        leaves out takes transformers' Gemma3TextConfig default, not EmbeddingGemma's value."""
        if not raw.get("use_bidirectional_attention"):
            raise ValueError("use_bidirectional_attention is not true: minienc computes Gemma 3 as EmbeddingGemma's "
                             "bidirectional encoder, not the causal language model")
        if raw.get("attn_logit_softcapping") is not None:
            raise ValueError(f"attn_logit_softcapping {raw['attn_logit_softcapping']!r} is not supported (EmbeddingGemma "
                             f"has none)")
        n, every = raw["num_hidden_layers"], raw.get("sliding_window_pattern", 6)
        global_theta, local_theta = read_thetas(raw, "rope_theta", "rope_local_base_freq", (1000000.0, 10000.0))
        heads = raw["num_attention_heads"]
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=n, num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads", 4), head_dim=raw.get("head_dim", 256),
            intermediate_size=raw["intermediate_size"], hidden_act=raw.get("hidden_activation", "gelu_pytorch_tanh"),
            max_position_embeddings=raw.get("max_position_embeddings", 131072),
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6), query_pre_attn_scalar=raw.get("query_pre_attn_scalar", 256),
            attention_bias=bool(raw.get("attention_bias", False)),
            pad_token_id=0 if raw.get("pad_token_id") is None else raw["pad_token_id"],
            local_width=raw.get("sliding_window", 4096), layer_types=read_layer_types(raw, n, lambda i: (i + 1) % every),
            rope_theta=global_theta, local_rope_theta=local_theta, use_cache=bool(raw.get("use_cache", True)),
        )


# reproduces transformers v5.x Gemma3TextModel's masks with use_bidirectional_attention (create_causal_mask and
# create_sliding_window_causal_mask with an or_mask_function: always materialized)
def masks(attention_mask: torch.Tensor | None, T: int, window: int, device: torch.device) -> Masks:
    """Each layer type's bool mask (B, 1, T, T), True where query i may attend to key j: global layers every real
    key, local layers the real keys with |i - j| <= window. Built even where nothing is padded."""
    keys = torch.ones(1, T, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
    keys = keys[:, None, None, :]  # (B, 1, 1, T)
    every = torch.ones(1, 1, T, T, dtype=torch.bool, device=device)
    return {"full_attention": every & keys, "sliding_attention": band(T, window, device) & keys}


# reproduces transformers v5.x Gemma3Attention (one pass: an empty KV cache, or none; no soft-capping)
class Gemma3Attention(nn.Module):
    def __init__(self, config: Gemma3Config):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar**-0.5
        bias, H, hs = config.attention_bias, config.hidden_size, config.head_dim
        self.query = Linear(H, config.num_heads * hs, bias=bias)
        self.key = Linear(H, config.num_kv_heads * hs, bias=bias)
        self.value = Linear(H, config.num_kv_heads * hs, bias=bias)
        self.out = Linear(config.num_heads * hs, H, bias=bias)
        self.q_norm = UnitOffsetRMSNorm(hs, config.rms_norm_eps)  # per head, over hs
        self.k_norm = UnitOffsetRMSNorm(hs, config.rms_norm_eps)
        self.cached_layout = config.use_cache  # keys and values in the cache's layout (attention.py, as_cached)
        self.attend: Attend | None = None  # set by Gemma3Model.set_attention

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q = self.q_norm(self.query(x).view(heads).transpose(1, 2))  # (B, nh, T, hs)
        k = self.k_norm(self.key(x).view(heads).transpose(1, 2))  # (B, nkv, T, hs)
        v = self.value(x).view(heads).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.cached_layout:  # laid out as transformers' KV cache hands them over
            k, v = as_cached(k), as_cached(v)
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text alone, its own window
        return self.out(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, H)


# reproduces transformers v5.x Gemma3DecoderLayer: x + norm(sublayer(norm(x))) twice
class Gemma3Layer(nn.Module):
    def __init__(self, config: Gemma3Config, index: int):
        super().__init__()
        norm = lambda: UnitOffsetRMSNorm(config.hidden_size, config.rms_norm_eps)  # noqa: E731
        self.kind = config.layer_types[index]  # "full_attention" (global) or "sliding_attention" (local)
        self.mask_kind = self.kind  # the layer type whose mask it reads (global's, where attention ignores windows)
        self.attn_norm, self.attn_out_norm = norm(), norm()
        self.attention = Gemma3Attention(config)
        self.ffn_norm, self.ffn_out_norm = norm(), norm()
        self.ffn = GatedFeedForward(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        x = x + self.attn_out_norm(self.attention(self.attn_norm(x), cos, sin, mask, spans))
        return x + self.ffn_out_norm(self.ffn(self.ffn_norm(x)))  # (B, T, H)


# reproduces transformers v5.x Gemma3TextModel (use_bidirectional_attention, one pass, rope_type "default")
class Gemma3Model(nn.Module):
    """The whole encoder. `model(input_ids, attention_mask)` -> last hidden state (B, T, H); packed,
    `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    family = "gemma3"  # whose reference forms, and `matches=` claims, apply (model/attention.py)

    def __init__(self, config: Gemma3Config, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Gemma3Layer(config, i) for i in range(config.num_layers))
        self.norm = UnitOffsetRMSNorm(config.hidden_size, config.rms_norm_eps)
        # float32 on the CPU whatever the model's dtype and device, as transformers keeps them (see llama.py)
        self.inv_freq = {"full_attention": inverse_frequencies(config.head_dim, config.rope_theta, device="cpu"),
                         "sliding_attention": inverse_frequencies(config.head_dim, config.local_rope_theta, "cpu")}
        self.set_attention(attention)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`; a variant that ignores the window makes local layers global."""
        bind_local_global(self.layers, name, self.family, masks, self.config.window)
        self.attention_name = name

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,  # by name: transformers' Gemma3TextModel takes position_ids third and has no token types
        token_type_ids: torch.Tensor | None = None,  # unused: no segments (the pipeline passes them)
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones), either padding side;
        position_ids (B, T) (default: 0..T-1). Packed input: B = 1, spans gives each text's (start, end), no mask."""
        check_inputs(input_ids, attention_mask, spans)
        position_ids = positions(input_ids, spans) if position_ids is None else position_ids
        x = self.embed(input_ids)  # (B, T, H)
        x = x * torch.tensor(self.config.hidden_size**0.5).to(x.dtype)  # sqrt(H), rounded to the model's dtype
        angles = {kind: rotary_angles(position_ids, inv_freq, x.dtype) for kind, inv_freq in self.inv_freq.items()}
        mask = masks(attention_mask, input_ids.shape[1], self.config.window, x.device) if spans is None else \
            dict.fromkeys(LAYER_TYPES)  # packed: no mask for the row; each text gets its own (bind)
        for layer in self.layers:
            x = layer(x, *angles[layer.kind], mask[layer.mask_kind], spans)
        return self.norm(x)


# --- the family's record: how its checkpoints and stages are read ----------------------------------------------------

# checkpoint name -> ours (task models store the model under "model.")
KEYS: dict[str, str | None] = {
    "embed_tokens.weight": "embed.weight",
    **{f"layers.{{}}.self_attn.{theirs}_proj.{kind}": f"layers.{{}}.attention.{ours}.{kind}"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    "layers.{}.self_attn.q_norm.weight": "layers.{}.attention.q_norm.weight",
    "layers.{}.self_attn.k_norm.weight": "layers.{}.attention.k_norm.weight",
    "layers.{}.input_layernorm.weight": "layers.{}.attn_norm.weight",
    "layers.{}.post_attention_layernorm.weight": "layers.{}.attn_out_norm.weight",
    "layers.{}.pre_feedforward_layernorm.weight": "layers.{}.ffn_norm.weight",
    "layers.{}.post_feedforward_layernorm.weight": "layers.{}.ffn_out_norm.weight",
    "layers.{}.mlp.gate_proj.weight": "layers.{}.ffn.gate.weight",
    "layers.{}.mlp.up_proj.weight": "layers.{}.ffn.up.weight",
    "layers.{}.mlp.down_proj.weight": "layers.{}.ffn.down.weight",
    "norm.weight": "norm.weight",
}

FAMILY = Family(
    name=Gemma3Model.family, model_types={"gemma3_text": "model."}, config=Gemma3Config, model=Gemma3Model, keys=KEYS,
    reference="Gemma3TextModel",
    # the embeddings are scaled outside any module: read as the first layer's input
    ours=Stages(embeddings=(("embeddings", "layers.0", True),), attention=("ffn_norm", True), final_norm="norm"),
    theirs=Stages(embeddings=(("embeddings", "layers.0", True),), attention=("pre_feedforward_layernorm", True),
                  final_norm="norm"),
    trace_words=("the token's vector times sqrt(H)",
                 "encoder layers      (x + norm(attention(norm(x))), bidirectional, global or local; then the gated "
                 "FFN)", "final RMSNorm"),
)
