"""ModernBERT, by hand: BERT rebuilt from the decoders' parts (Warner et al., 2024; gte-modernbert, modernbert-embed).

    x = LayerNorm(embed(tokens))                           no position vectors: rotary positions turn q and k instead
    N times:  x = x + attention(LayerNorm(x))              pre-norm (layer 0 skips this norm: the embeddings' came just
                                                           before)
              x = x + down(gelu(a) * b),  (a, b) = up(LayerNorm(x))     GeGLU, one fused up-projection
    h = LayerNorm(x)                                       the last hidden state

What differs from BERT (bert.py): the norms come before each block, not after, and have no bias; q, k and v come
from one fused projection; rotary positions (model/blocks.py, rotated in float32) instead of a position table, with
one base on global layers and another on local ones; a gated feed-forward; no token types; and two kinds of layer.
Every third layer (0, 3, 6, ...) attends globally, as BERT does; the others locally, each token to the tokens at most
`window` = local_attention / 2 positions away (Longformer's remedy for long texts, 8,192 tokens here). The masks
that say so follow transformers' rules exactly (`masks`), since PyTorch's kernel computes a masked and an unmasked
call differently.

Inference only. Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size. Two inputs, one
forward pass, as bert.py: padded (B, T) with an attention mask, or packed (1, N) with each text's span, where
positions restart at each text and each text attends to itself alone (within its windows on local layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attend, Spans, band, bind_local_global
from .blocks import FusedGatedFeedForward, apply_rotary_float32, inverse_frequencies, rotary_angles
from .config import LAYER_TYPES, check_common, check_local_global, check_sizes, read_layer_types, read_thetas
from .family import Family, Stages
from .inputs import check_inputs, positions
from .linear import Linear

Masks = dict[str, torch.Tensor | None]  # layer type ("full_attention", "sliding_attention") -> its mask


@dataclass(frozen=True)
class ModernBertConfig:
    model_type: str = "modernbert"
    vocab_size: int = 50368               # rows of the token-embedding table
    hidden_size: int = 768                # width of every token vector
    num_layers: int = 22                  # encoder layers stacked
    num_heads: int = 12                   # attention heads; must divide hidden_size
    intermediate_size: int = 1152         # feed-forward inner width (each half of the fused up-projection)
    hidden_act: str = "gelu"              # config.json's hidden_activation, a key of ACTIVATIONS
    max_position_embeddings: int = 8192   # the longest text it was trained on: rotary positions have no table
    norm_eps: float = 1e-5                # epsilon of every LayerNorm
    norm_bias: bool = False               # biases on the LayerNorms
    attention_bias: bool = False          # biases on Wqkv and Wo
    mlp_bias: bool = False                # biases on the feed-forward projections
    pad_token_id: int = 50283             # the id padding is filled with (masked: its value changes no result)
    local_width: int = 128                # config.json's local_attention: a local layer sees width // 2 each side
    layer_types: tuple[str, ...] = ("full_attention", "sliding_attention", "sliding_attention") * 7 + (
        "full_attention",)                # per layer, one of LAYER_TYPES: every third layer global, from 0
    rope_theta: float = 160000.0          # rotary base of the global layers (global_rope_theta)
    local_rope_theta: float = 10000.0     # rotary base of the local layers

    def __post_init__(self) -> None:
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                           "max_position_embeddings"))
        check_common(self, "norm_eps", self.norm_eps)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_attention_heads ({self.num_heads}) does not divide hidden_size ({self.hidden_size})")
        check_local_global(self, "local_attention")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def window(self) -> int:
        """How far a local layer looks each way: query i sees key j where |i - j| <= window."""
        return self.local_width // 2

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings

    positions_from_input_ids = False

    @classmethod
    def from_dict(cls, raw: dict) -> ModernBertConfig:
        """Build from the fields of a Hugging Face config.json, in either spelling of the rotary bases (transformers 4:
        global_rope_theta / local_rope_theta; 5: rope_parameters per layer type)."""
        every = raw.get("global_attn_every_n_layers", 3)
        n = raw["num_hidden_layers"]
        global_theta, local_theta = read_thetas(raw, "global_rope_theta", "local_rope_theta", (160000.0, 10000.0))
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=n,
            num_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"],
            hidden_act=raw.get("hidden_activation", "gelu"),
            max_position_embeddings=raw.get("max_position_embeddings", 8192), norm_eps=raw.get("norm_eps", 1e-5),
            norm_bias=bool(raw.get("norm_bias", False)), attention_bias=bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)),
            pad_token_id=50283 if raw.get("pad_token_id") is None else raw["pad_token_id"],
            local_width=raw.get("local_attention", 128),
            layer_types=read_layer_types(raw, n, lambda i: i % every), rope_theta=global_theta,
            local_rope_theta=local_theta,
        )


# reproduces transformers v5.x masking_utils.create_bidirectional_mask / create_bidirectional_sliding_window_mask
# (sdpa_mask and eager_mask, non-vmap)
def masks(attention_mask: torch.Tensor | None, T: int, window: int, device: torch.device) -> Masks:
    """Each layer type's bool mask (B, 1, T, T), True where query i may attend to key j: global layers every real
    key, local layers the real keys with |i - j| <= window. None, as transformers gives it, where nothing is padded and
    (local layers) the text is shorter than the window."""
    padded = attention_mask is not None and not bool(attention_mask.all())
    keys = attention_mask.bool()[:, None, None, :] if padded else None  # (B, 1, 1, T)
    local = band(T, window, device)  # (1, 1, T, T)
    return {
        "full_attention": keys.expand(-1, 1, T, T) if padded else None,
        "sliding_attention": (local & keys if padded else local) if padded or T >= window else None,
    }


# reproduces transformers v5.x ModernBertAttention (eval mode)
class ModernBertAttention(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.out = Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.attend: Attend | None = None  # set by ModernBertModel.set_attention

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, -1, self.head_dim).unbind(dim=2)  # each (B, T, nh, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        q, k = apply_rotary_float32(q, cos, sin), apply_rotary_float32(k, cos, sin)
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text alone, its own window
        return self.out(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, H)


# reproduces transformers v5.x ModernBertEncoderLayer: pre-norm, x + sublayer(LayerNorm(x)) twice
class ModernBertLayer(nn.Module):
    def __init__(self, config: ModernBertConfig, index: int):
        super().__init__()
        norm = lambda: nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)  # noqa: E731
        self.kind = config.layer_types[index]  # "full_attention" (global) or "sliding_attention" (local)
        self.mask_kind = self.kind  # the layer type whose mask it reads (global's, where attention ignores windows)
        self.attn_norm = nn.Identity() if index == 0 else norm()
        self.attention = ModernBertAttention(config)
        self.ffn_norm = norm()
        self.ffn = FusedGatedFeedForward(config.hidden_size, config.intermediate_size, config.hidden_act,
                                         config.mlp_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        x = x + self.attention(self.attn_norm(x), cos, sin, mask, spans)
        return x + self.ffn(self.ffn_norm(x))  # (B, T, H)


# reproduces transformers v5.x ModernBertModel (rope_type "default")
class ModernBertModel(nn.Module):
    """The whole encoder. `model(input_ids, attention_mask)` -> last hidden state (B, T, H); packed,
    `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    family = "modernbert"  # whose reference forms, and `matches=` claims, apply (model/attention.py)

    def __init__(self, config: ModernBertConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.layers = nn.ModuleList(ModernBertLayer(config, i) for i in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
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
        *,  # by name: transformers' ModernBertModel takes position_ids third and has no token types
        token_type_ids: torch.Tensor | None = None,  # unused: no segments (the pipeline passes them)
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones); position_ids (B, T)
        (default: 0..T-1). Packed input: B = 1, spans gives each text's (start, end), no mask."""
        check_inputs(input_ids, attention_mask, spans)
        position_ids = positions(input_ids, spans) if position_ids is None else position_ids
        x = self.embed_norm(self.embed(input_ids))  # (B, T, H)
        angles = {kind: rotary_angles(position_ids, inv_freq, x.dtype) for kind, inv_freq in self.inv_freq.items()}
        mask = masks(attention_mask, input_ids.shape[1], self.config.window, x.device) if spans is None else \
            dict.fromkeys(LAYER_TYPES)  # packed: no mask for the row; each text gets its own (bind)
        for layer in self.layers:
            x = layer(x, *angles[layer.kind], mask[layer.mask_kind], spans)
        return self.final_norm(x)


# --- the family's record: how its checkpoints and stages are read ----------------------------------------------------

# checkpoint name -> ours (ModernBertForMaskedLM stores the model under "model.", its head and decoder beside it)
KEYS: dict[str, str | None] = {
    **{f"{theirs}.{kind}": f"{ours}.{kind}" for theirs, ours in (
        ("embeddings.norm", "embed_norm"), ("layers.{}.attn_norm", "layers.{}.attn_norm"),
        ("layers.{}.attn.Wqkv", "layers.{}.attention.qkv"), ("layers.{}.attn.Wo", "layers.{}.attention.out"),
        ("layers.{}.mlp_norm", "layers.{}.ffn_norm"), ("layers.{}.mlp.Wi", "layers.{}.ffn.up"),
        ("layers.{}.mlp.Wo", "layers.{}.ffn.down"), ("final_norm", "final_norm")) for kind in ("weight", "bias")},
    "embeddings.tok_embeddings.weight": "embed.weight",
}

FAMILY = Family(
    name=ModernBertModel.family, model_types={"modernbert": "model."}, config=ModernBertConfig, model=ModernBertModel,
    keys=KEYS, reference="ModernBertModel",
    ours=Stages(embeddings=(("embeddings", "embed_norm", False),), attention=("ffn_norm", True),
                final_norm="final_norm"),
    theirs=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("mlp_norm", True),
                  final_norm="final_norm"),
    trace_words=("LayerNorm of the token's vector",
                 "encoder layers      (pre-norm: x + attention(LayerNorm(x)), global or local; then GeGLU)",
                 "final LayerNorm"),
    heads=("head.", "decoder."),
)
