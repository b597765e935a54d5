"""NomicBERT, by hand (nomic-embed-text-v1 / v1.5): BERT with rotary positions and a SwiGLU feed-forward.

    x = LayerNorm(word(tokens) + token_type(segments))     no position table: positions rotate q and k
    N times:  a = LayerNorm(x + attention(x))              post-norm, as BERT; q, k, v, o without biases
              x = LayerNorm(a + down(silu(gate(a)) * up(a)))

What differs from BERT (bert.py): the positions, as rotations of queries and keys (model/blocks.py, base 1000),
counted 0, 1, 2, ... from the row's first token; a gated feed-forward; no biases in attention or feed-forward. The
attention arithmetic is BERT's (softmax in the model's dtype), so BERT's eager and sdpa forms serve it. The Hub's
checkpoints store q, k and v fused (Wqkv) under the names of Nomic's own code: the key table splits them as
transformers' loading does, so the bits are the same whichever layout the folder holds.

Inference only. Shapes as bert.py; two inputs, one forward pass: padded (B, T) with an attention mask, or packed
(1, N) with each text's span, where positions restart at each text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import BERT_FORMS, Spans, bind
from .bert import FeedForward, key_padding_mask
from .blocks import GatedFeedForward, apply_rotary, inverse_frequencies, rotary_angles
from .config import check_common, check_sizes
from .family import Family, Stages
from .inputs import check_inputs, positions
from .linear import Linear


@dataclass(frozen=True)
class NomicBertConfig:
    model_type: str = "nomic_bert"
    vocab_size: int = 30528               # rows of the word-embedding table
    hidden_size: int = 768                # width of every token vector
    num_layers: int = 12                  # encoder layers stacked
    num_heads: int = 12                   # attention heads
    head_dim: int = 64                    # width of one head (config.json's head_dim, else hidden_size / num_heads)
    intermediate_size: int = 3072         # feed-forward inner width (gate and up projections)
    hidden_act: str = "silu"              # the gate's activation (SwiGLU)
    max_position_embeddings: int = 2048   # the longest text it was trained on: rotary positions have no table
    type_vocab_size: int = 2              # rows of the token-type (segment) table
    layer_norm_eps: float = 1e-12         # epsilon of every LayerNorm
    pad_token_id: int = 0                 # the id padding is filled with (masked: its value changes no result)
    rope_theta: float = 1000.0            # base of the rotary frequencies
    attention_bias: bool = False          # biases on q, k, v and o (GTE: yes)
    down_bias: bool = False               # a bias on the feed-forward's down projection (GTE: yes)
    gated: bool = True                    # a gated feed-forward (SwiGLU, GeGLU); False: BERT's (jina-v3)

    family = "nomic_bert"
    positions_from_input_ids = False      # positions count 0, 1, 2, ... from the row's first token

    def __post_init__(self) -> None:
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "head_dim", "intermediate_size",
                           "max_position_embeddings"))
        check_common(self, "layer_norm_eps", self.layer_norm_eps)
        if self.head_dim % 2 or not isinstance(self.rope_theta, (int, float)) or self.rope_theta <= 0:
            raise ValueError(f"rotary positions need an even head_dim and a positive rope_theta, got {self.head_dim} "
                             f"and {self.rope_theta!r}")

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings

    def rotary_frequencies(self) -> torch.Tensor:
        """(hs / 2,) float32 on the CPU: each pair of dimensions' rotation speed, rope_theta ** (-2i / hs)."""
        return inverse_frequencies(self.head_dim, self.rope_theta, device="cpu")

    @classmethod
    def from_dict(cls, raw: dict) -> NomicBertConfig:
        """Build from the fields of a Hugging Face config.json: transformers 5's names, else those of Nomic's own
        code (n_embd, n_layer, n_head, n_inner, layer_norm_epsilon, rotary_emb_base, n_positions). What minienc does
        not compute (scaled or partial or interleaved rotary positions, pre-norm, biases, RMSNorm, another
        activation) is refused, naming the field."""
        refuse_unsupported(raw)
        rope = raw.get("rope_scaling") or raw.get("rope_parameters") or {}  # transformers' order
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"unsupported rotary scaling {rope}; minienc computes rope_type 'default'")
        hidden, heads = first(raw, "hidden_size", "n_embd"), first(raw, "num_attention_heads", "n_head")
        defaults = cls()
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=hidden, num_layers=first(raw, "num_hidden_layers", "n_layer"),
            num_heads=heads, head_dim=raw.get("head_dim") or hidden // heads,
            intermediate_size=first(raw, "intermediate_size", "n_inner"), hidden_act=raw.get("hidden_act", "silu"),
            max_position_embeddings=raw.get("max_position_embeddings", raw.get("n_positions", 2048)),
            type_vocab_size=raw.get("type_vocab_size", defaults.type_vocab_size),
            layer_norm_eps=raw.get("layer_norm_eps", raw.get("layer_norm_epsilon", defaults.layer_norm_eps)),
            pad_token_id=0 if raw.get("pad_token_id") is None else raw["pad_token_id"],
            rope_theta=rotary_base(raw, rope, defaults.rope_theta),
        )


def rotary_base(raw: dict, rope: dict, default: float) -> float:
    """The rotary base as transformers reads it: rope_parameters' rope_theta, else config.json's rope_theta, else the
    class default. Nomic's own rotary_emb_base is not read by transformers: where it says otherwise, refused."""
    theta = rope.get("rope_theta", raw.get("rope_theta", default))
    if "rotary_emb_base" in raw and raw["rotary_emb_base"] != theta:
        raise ValueError(f"rotary_emb_base {raw['rotary_emb_base']!r} differs from the base transformers uses "
                         f"({theta!r}), which ignores that field: set rope_theta")
    return theta


def rotary_encoder_fields(raw: dict, defaults: NomicBertConfig) -> dict:
    """The fields GTE's and jina-v3's config.json spell as transformers 5 does (NomicBERT reads older spellings too):
    sizes, activation, token types, epsilon, pad id and the rotary base; another rope_type is refused."""
    rope = raw.get("rope_scaling") or raw.get("rope_parameters") or {}  # transformers' order
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"unsupported rotary scaling {rope}; minienc computes rope_type 'default' (transformers 5 has "
                         f"no other for this family to hold minienc to)")
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    return dict(
        vocab_size=raw["vocab_size"], hidden_size=hidden, num_layers=raw["num_hidden_layers"], num_heads=heads,
        head_dim=raw.get("head_dim") or hidden // heads, intermediate_size=raw["intermediate_size"],
        hidden_act=raw.get("hidden_act", defaults.hidden_act),
        max_position_embeddings=raw.get("max_position_embeddings", defaults.max_position_embeddings),
        type_vocab_size=raw.get("type_vocab_size", defaults.type_vocab_size),
        layer_norm_eps=raw.get("layer_norm_eps", defaults.layer_norm_eps),
        pad_token_id=defaults.pad_token_id if raw.get("pad_token_id") is None else raw["pad_token_id"],
        rope_theta=rotary_base(raw, rope, defaults.rope_theta),
    )


def first(raw: dict, name: str, old_name: str):
    """config.json's `name`, else its older spelling; a KeyError names the first."""
    return raw[name] if name in raw or old_name not in raw else raw[old_name]


# Nomic's own config fields that would ask for another computation than this file's: field -> the value it computes
UNSUPPORTED = {"rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "rotary_scaling_factor": None,
               "prenorm": False, "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False,
               "use_rms_norm": False, "activation_function": "swiglu", "causal": False, "parallel_block": False}


def refuse_unsupported(raw: dict) -> None:
    for name, computed in UNSUPPORTED.items():
        if name in raw and raw[name] != computed:
            raise ValueError(f"{name} {raw[name]!r} is not supported: minienc's NomicBERT computes {computed!r}")


# reproduces transformers v5.x NomicBertEmbeddings, GteEmbeddings and JinaEmbeddingsV3Embeddings (eval mode)
class NomicEmbeddings(nn.Module):
    def __init__(self, config: NomicBertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        # segments; gte-base-en-v1.5 has none (type_vocab_size 0)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        x = self.word(input_ids)  # (B, T, H)
        if self.token_type is not None:
            x = x + self.token_type(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        return self.norm(x)


# reproduces transformers v5.x NomicBertAttention, GteAttention and JinaEmbeddingsV3Attention
class NomicAttention(nn.Module):
    def __init__(self, config: NomicBertConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        H, width, bias = config.hidden_size, config.num_heads * config.head_dim, config.attention_bias
        self.query, self.key, self.value = (Linear(H, width, bias=bias) for _ in range(3))
        self.out = Linear(width, H, bias=bias)
        self.attend = None  # set by NomicBertModel.set_attention

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q = self.query(x).view(heads).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # positions, as rotations
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text alone
        return self.out(y.transpose(1, 2).contiguous().reshape(B, T, -1))  # (B, T, H)


# reproduces transformers v5.x NomicBertLayer, GteLayer and JinaEmbeddingsV3Layer: post-norm, LayerNorm(x + sublayer(x))
# twice
class NomicLayer(nn.Module):
    def __init__(self, config: NomicBertConfig):
        super().__init__()
        self.attention = NomicAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = (GatedFeedForward(config.hidden_size, config.intermediate_size, config.hidden_act,
                                     down_bias=config.down_bias) if config.gated else FeedForward(config))
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                spans: Spans | None = None) -> torch.Tensor:
        x = self.attn_norm(x + self.attention(x, cos, sin, mask, spans))
        return self.ffn_norm(x + self.ffn(x))  # (B, T, H)


# reproduces transformers v5.x NomicBertModel, GteModel and JinaEmbeddingsV3Model (without their poolers; rope_type
# "default")
class NomicBertModel(nn.Module):
    """The whole encoder. `model(input_ids, attention_mask, token_type_ids)` -> last hidden state (B, T, H); packed,
    `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    def __init__(self, config: NomicBertConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.family = config.family  # nomic_bert or gte: whose `matches=` claims apply (model/attention.py)
        self.embeddings = NomicEmbeddings(config)
        self.layers = nn.ModuleList(NomicLayer(config) for _ in range(config.num_layers))
        # float32 on the CPU whatever the model's dtype and device, as transformers keeps it (see llama.py)
        self.inv_freq = config.rotary_frequencies()
        self.set_attention(attention)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`: BERT's eager / sdpa, or a registered variant."""
        attend = bind(name, self.family, BERT_FORMS)
        for layer in self.layers:
            layer.attention.attend = attend
        self.attention_name = name

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones); token_type_ids
        (default: zeros); position_ids (default: 0..T-1). Packed input: B = 1, spans gives each text's span."""
        check_inputs(input_ids, attention_mask, spans)
        position_ids = positions(input_ids, spans) if position_ids is None else position_ids
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        cos, sin = rotary_angles(position_ids, self.inv_freq, x.dtype)  # each (1 or B, T, hs)
        mask = key_padding_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, spans)
        return x


# --- the family's record: how its checkpoints and stages are read ----------------------------------------------------

# checkpoint name -> ours: transformers 5's names, and those of Nomic's own code (the Hub's folders), where q, k and v
# are one tensor, Wqkv, cut in three along its rows, and fc11 is the up projection, fc12 the gate
KEYS: dict[str, str | tuple[str, ...] | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    **{f"{theirs}.{kind}": f"embeddings.norm.{kind}" for theirs in ("embeddings.LayerNorm", "emb_ln")
       for kind in ("weight", "bias")},
    **{f"layers.{{}}.self_attn.{theirs}_proj.weight": f"layers.{{}}.attention.{ours}.weight"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))},
    "encoder.layers.{}.attn.Wqkv.weight": tuple(f"layers.{{}}.attention.{ours}.weight"
                                                for ours in ("query", "key", "value")),
    "encoder.layers.{}.attn.out_proj.weight": "layers.{}.attention.out.weight",
    **{f"{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}" for theirs, ours in (
        ("layers.{}.post_attention_layernorm", "attn_norm"), ("encoder.layers.{}.norm1", "attn_norm"),
        ("layers.{}.post_mlp_layernorm", "ffn_norm"), ("encoder.layers.{}.norm2", "ffn_norm"))
       for kind in ("weight", "bias")},
    **{f"layers.{{}}.mlp.{name}_proj.weight": f"layers.{{}}.ffn.{name}.weight" for name in ("gate", "up", "down")},
    **{f"encoder.layers.{{}}.mlp.{theirs}.weight": f"layers.{{}}.ffn.{ours}.weight"
       for theirs, ours in (("fc11", "up"), ("fc12", "gate"), ("fc2", "down"))},
    "embeddings.position_ids": None, "embeddings.token_type_ids": None,  # saved buffers: we compute them
    "pooler.dense.weight": None, "pooler.dense.bias": None,
}

TRACE_WORDS = ("LayerNorm of word + token-type vectors",
               "encoder layers      (post-norm, as BERT: LayerNorm(x + attention(x)); then the gated FFN)", "")

FAMILY = Family(
    name=NomicBertConfig.family, model_types={"nomic_bert": "nomic_bert."}, config=NomicBertConfig,
    model=NomicBertModel, keys=KEYS, reference="NomicBertModel",
    ours=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("attn_norm", False)),
    theirs=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("post_attention_layernorm", False)),
    token_types=True, trace_words=TRACE_WORDS,
)
