"""MPNet, by hand (Song et al., 2020; all-mpnet-base-v2, multi-qa-mpnet-base-dot-v1): BERT with its positions in two
places.

    x = LayerNorm(word(tokens) + position(tokens))         no token types; positions counted as RoBERTa counts them
    bias = relative(i - j)                                 one learned score per head and distance bucket, every layer
    N times:  a = LayerNorm(x + attention(x, bias))        softmax(q k^T / sqrt(hs) + bias) v: post-norm, as BERT
              x = LayerNorm(a + down(gelu(up(a))))

What differs from BERT (bert.py): no token-type table; and besides the absolute position vectors added to the
embeddings, a relative position bias added to the attention scores: the distance j - i between query i and key j
falls in one of 32 buckets (exact below 8 tokens each way, then widening logarithmically, the last from 91 on), and each
bucket holds one learned score per head (T5's scheme), computed once and shared by every layer. It reaches attention
as the contract's `bias` (model/attention.py), so a variant on MPNet must take one.

Inference only. Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size. Two inputs, one
forward pass, as bert.py: padded (B, T) with an attention mask, or packed (1, N) with each text's span, where
positions restart at each text (the bias depends on i - j alone: each text reads the same one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .attention import Spans, bind
from .bert import FeedForward, key_padding_mask
from .config import check_common, check_sizes
from .family import Family, Stages
from .inputs import check_spans
from .linear import Linear

PADDING_IDX = 1  # MPNetEmbeddings counts positions from its padding_idx, 1, whatever pad_token_id says
BUCKETS, MAX_DISTANCE = 32, 128  # transformers computes 32 buckets whatever relative_attention_num_buckets says


@dataclass(frozen=True)
class MPNetConfig:
    model_type: str = "mpnet"
    vocab_size: int = 30527               # rows of the word-embedding table
    hidden_size: int = 768                # width of every token vector
    num_layers: int = 12                  # encoder layers stacked
    num_heads: int = 12                   # attention heads; must divide hidden_size
    intermediate_size: int = 3072         # feed-forward inner width
    hidden_act: str = "gelu"              # feed-forward activation, a key of ACTIVATIONS
    max_position_embeddings: int = 512    # rows of the position table (the first two are never used; real: 514)
    layer_norm_eps: float = 1e-12         # epsilon of every LayerNorm
    pad_token_id: int = 1                 # the id padding is filled with
    relative_attention_num_buckets: int = 32  # rows of the relative-bias table (transformers reads the first 32)

    positions_from_input_ids = True       # positions PADDING_IDX + 1 + count of real tokens so far
    first_position = PADDING_IDX + 1

    def __post_init__(self) -> None:
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                           "max_position_embeddings"))
        check_common(self, "layer_norm_eps", self.layer_norm_eps)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_attention_heads ({self.num_heads}) does not divide hidden_size ({self.hidden_size})")
        if self.relative_attention_num_buckets != BUCKETS:
            raise ValueError(f"relative_attention_num_buckets must be {BUCKETS}, as transformers' MPNet computes them "
                             f"whatever the config says; got {self.relative_attention_num_buckets!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_tokens(self) -> int:
        """The longest text the position table holds: its rows less the two below the first position."""
        return self.max_position_embeddings - self.first_position

    @classmethod
    def from_dict(cls, raw: dict) -> MPNetConfig:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored)."""
        defaults = cls()
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"],
            hidden_act=raw.get("hidden_act", defaults.hidden_act),
            max_position_embeddings=raw.get("max_position_embeddings", defaults.max_position_embeddings),
            layer_norm_eps=raw.get("layer_norm_eps", defaults.layer_norm_eps),
            pad_token_id=1 if raw.get("pad_token_id") is None else raw["pad_token_id"],
            relative_attention_num_buckets=raw.get("relative_attention_num_buckets", BUCKETS),
        )


# reproduces transformers v5.x MPNetEmbeddings (eval mode) and create_position_ids_from_input_ids
class MPNetEmbeddings(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def position_ids(self, input_ids: torch.Tensor, spans: Spans | None = None) -> torch.Tensor:
        """(B, T): PADDING_IDX + 1 + the count of real tokens so far, PADDING_IDX on padding (so a left-padded text
        gets an unpadded one's positions); packed, each text counts from the first position as if alone."""
        lengths = [b - a for a, b in spans] if spans is not None else [input_ids.shape[1]]
        if max(lengths, default=0) > self.config.max_tokens:
            raise ValueError(f"sequence of {max(lengths)} tokens is longer than the model's {self.config.max_tokens} "
                             f"positions; truncate it")
        if spans is not None:
            first = self.config.first_position
            return torch.cat([torch.arange(first, first + n, device=input_ids.device) for n in lengths])[None, :]
        is_real = input_ids.ne(PADDING_IDX).int()
        return (torch.cumsum(is_real, dim=1).type_as(is_real) * is_real).long() + PADDING_IDX  # (B, T)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.word(input_ids) + self.position(position_ids))  # (B, T, H)


# reproduces transformers v5.x MPNetEncoder.relative_position_bucket (num_buckets 32, max_distance 128)
def relative_buckets(T: int, device: torch.device) -> torch.Tensor:
    """(T, T) long: the bucket of the distance between query i and key j. Half the buckets for keys after the query,
    half for keys before; in each, one bucket per distance below 8, then logarithmic steps (max_distance 128 sets
    their rate), the last from distance 91 on."""
    n = torch.arange(T, device=device)[:, None] - torch.arange(T, device=device)[None, :]  # i - j
    half = BUCKETS // 2
    bucket = (n < 0).to(torch.long) * half
    n = torch.abs(n)
    exact = half // 2
    large = exact + (torch.log(n.float() / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return bucket + torch.where(n < exact, n, large)


# reproduces transformers v5.x MPNetSelfAttention (its only path: transformers' MPNet has no sdpa)
def relative_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + bias + mask) v, op for op: the scores divided by sqrt(hs) (not multiplied by
    `scale`: another rounding where sqrt(hs) is not a power of two), the bias, then the mask's lowest value added."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device),
                                      torch.finfo(scores.dtype).min)
    return torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, nh, T, hs)


# `sdpa` on MPNet is its eager path too: transformers refuses sdpa for MPNet and runs eager, so the default
# (`attention="sdpa"`) keeps transformers' and sentence-transformers' bits
MPNET_FORMS = {"eager": relative_eager, "sdpa": relative_eager}


# reproduces transformers v5.x MPNetSelfAttention + MPNetAttention's projection (q, k, v, o)
class MPNetAttention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.out = Linear(config.hidden_size, config.hidden_size)
        self.attend = None  # set by MPNetModel.set_attention

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor,
                spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q = self.query(x).view(heads).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        y = self.attend(q, k, v, mask, self.scale, spans, bias)  # (B, nh, T, hs); packed: each text alone
        return self.out(y.permute(0, 2, 1, 3).contiguous().view(B, T, -1))  # (B, T, H)


# reproduces transformers v5.x MPNetLayer: post-norm, LayerNorm(sublayer(x) + x) twice, as BertLayer
class MPNetLayer(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attention = MPNetAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor,
                spans: Spans | None = None) -> torch.Tensor:
        x = self.attn_norm(self.attention(x, mask, bias, spans) + x)
        return self.ffn_norm(self.ffn(x) + x)  # (B, T, H)


# reproduces transformers v5.x MPNetModel (without its pooler) and MPNetEncoder.compute_position_bias
class MPNetModel(nn.Module):
    """The whole encoder. `model(input_ids, attention_mask)` -> last hidden state (B, T, H); packed,
    `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    family = "mpnet"  # whose reference forms, and `matches=` claims, apply (model/attention.py)

    def __init__(self, config: MPNetConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embeddings = MPNetEmbeddings(config)
        self.layers = nn.ModuleList(MPNetLayer(config) for _ in range(config.num_layers))
        self.relative_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)
        self.set_attention(attention)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`: MPNet's own eager path, or a registered variant that takes the
        relative position bias (a variant without a `bias` parameter is refused)."""
        attend = bind(name, self.family, MPNET_FORMS, bias=True)
        for layer in self.layers:
            layer.attention.attend = attend
        self.attention_name = name

    def position_bias(self, T: int, device: torch.device) -> torch.Tensor:
        """(1, nh, T, T): each head's learned score for the distance between query i and key j."""
        return self.relative_bias(relative_buckets(T, device)).permute(2, 0, 1)[None]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # unused: MPNet has no segments (the pipeline passes them)
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones); position_ids (B, T)
        (default: counted as RoBERTa counts them). Packed input: B = 1, spans gives each text's (start, end)."""
        if input_ids.dim() != 2 or (attention_mask is not None and attention_mask.shape != input_ids.shape):
            raise ValueError(f"input_ids must be (batch, seq) and attention_mask its shape, got "
                             f"{tuple(input_ids.shape)}")
        if spans is not None:
            check_spans(spans, input_ids, attention_mask)
        if position_ids is None:
            position_ids = self.embeddings.position_ids(input_ids, spans)
        x = self.embeddings(input_ids, position_ids)  # (B, T, H)
        longest = input_ids.shape[1] if spans is None else max(b - a for a, b in spans)
        bias = self.position_bias(longest, x.device).to(x.dtype)  # (1, nh, T, T): once, for every layer
        mask = key_padding_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask, bias, spans)
        return x


# --- the family's record: how its checkpoints and stages are read ----------------------------------------------------

# checkpoint name -> ours (MPNetForMaskedLM and the other task models store the model under "mpnet.")
KEYS: dict[str, str | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    **{f"encoder.layer.{{}}.attention.attn.{theirs}.{kind}": f"layers.{{}}.attention.{ours}.{kind}"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    **{f"encoder.layer.{{}}.{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}" for theirs, ours in (
        ("attention.LayerNorm", "attn_norm"), ("intermediate.dense", "ffn.up"), ("output.dense", "ffn.down"),
        ("output.LayerNorm", "ffn_norm")) for kind in ("weight", "bias")},
    "encoder.relative_attention_bias.weight": "relative_bias.weight",
    "embeddings.position_ids": None,  # a saved arange buffer: we compute positions
    "pooler.dense.weight": None,  # MPNet's pooler: not part of the hidden states
    "pooler.dense.bias": None,
}

FAMILY = Family(
    name=MPNetModel.family, model_types={"mpnet": "mpnet."}, config=MPNetConfig, model=MPNetModel, keys=KEYS,
    reference="MPNetModel",
    ours=Stages(embeddings=(("embedding_sum", "embeddings.norm", True), ("embeddings", "embeddings", False)),
                attention=("attn_norm", False)),
    theirs=Stages(embeddings=(("embedding_sum", "embeddings.LayerNorm", True), ("embeddings", "embeddings", False)),
                  attention=("attention", False), layers="encoder.layer"),
    reference_options={"add_pooling_layer": False},
    reference_claims={"sdpa": "eager"},  # transformers' MPNet runs eager only
)
