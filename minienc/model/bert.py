"""The encoder, by hand: embeddings -> N x (self-attention, feed-forward), each followed by residual + LayerNorm.

One class serves BERT, MiniLM, RoBERTa and XLM-RoBERTa; they differ only in config values. Inference only: there
is no dropout. Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size.

Two inputs, one forward pass:
- padded: (B, T) ids, shorter texts padded, and an attention mask that hides the padding (transformers' way);
- packed: (1, N) ids, the texts of a batch laid end to end with no padding, and `spans`, the (start, end) of each
  text; positions restart at each text and attention runs text by text, so no text sees another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import BERT_FORMS, Attend, Spans, bind
from .config import check_common, check_sizes
from .family import Family, MaskedLMHead, Stages
from .inputs import check_spans
from .linear import Linear

# config.json's model_type -> (positions from the input ids, as the RoBERTa family counts them; pad_token_id where
# config.json has none, BertConfig's / RobertaConfig's default; the prefix task models store the encoder under)
MODEL_TYPES: dict[str, tuple[bool, int, str]] = {
    "bert": (False, 0, "bert."),
    "roberta": (True, 1, "roberta."),
    "xlm-roberta": (True, 1, "roberta."),
}


@dataclass(frozen=True)
class EncoderConfig:
    model_type: str = "bert"              # one of MODEL_TYPES
    vocab_size: int = 30522               # rows of the word-embedding table
    hidden_size: int = 768                # width of every token vector
    num_layers: int = 12                  # encoder layers stacked
    num_heads: int = 12                   # attention heads; must divide hidden_size
    intermediate_size: int = 3072         # feed-forward inner width
    hidden_act: str = "gelu"              # feed-forward activation, a key of ACTIVATIONS
    max_position_embeddings: int = 512    # rows of the position-embedding table
    type_vocab_size: int = 2              # rows of the token-type (segment) table; 0: none (DistilBERT)
    layer_norm_eps: float = 1e-12         # epsilon of every LayerNorm
    pad_token_id: int = 0                 # id of the padding token
    positions_from_input_ids: bool = False  # RoBERTa family: pad_token_id + 1 + running count of real tokens

    family = "bert"                       # the record it belongs to (distilbert.py names its own)
    known_types = tuple(MODEL_TYPES)      # the model_types this class reads

    def __post_init__(self) -> None:
        if not isinstance(self.model_type, str) or self.model_type not in self.known_types:
            raise ValueError(f"unsupported model_type {self.model_type!r}; this class computes "
                             f"{sorted(self.known_types)}")
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                           "max_position_embeddings"))
        segments = self.type_vocab_size
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 0:
            raise ValueError(f"type_vocab_size must be an integer of at least 0 (0: no segments), got {segments!r}")
        check_common(self, "layer_norm_eps", self.layer_norm_eps)
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) does not divide hidden_size ({self.hidden_size})"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_tokens(self) -> int:
        """The longest text the position table can hold: its rows, less those the RoBERTa family skips."""
        return self.max_position_embeddings - self.first_position

    @property
    def first_position(self) -> int:
        """Position id of the first real token: 0 for BERT, pad_token_id + 1 for the RoBERTa family."""
        return self.pad_token_id + 1 if self.positions_from_input_ids else 0

    @classmethod
    def from_dict(cls, raw: dict) -> EncoderConfig:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored)."""
        if not isinstance(raw, dict):
            raise ValueError(f"config.json must hold a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type")
        if model_type is None:
            raise ValueError(f"config has no 'model_type'; this class computes {sorted(MODEL_TYPES)}")
        if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; this class computes {sorted(MODEL_TYPES)}")
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {position_type!r}; minienc supports 'absolute'")
        if raw.get("is_decoder", False):
            raise ValueError("config has is_decoder=true; minienc is a bidirectional encoder only")
        defaults = cls()
        return cls(
            model_type=model_type,
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            hidden_act=raw.get("hidden_act", defaults.hidden_act),
            max_position_embeddings=raw.get("max_position_embeddings", defaults.max_position_embeddings),
            type_vocab_size=raw.get("type_vocab_size", defaults.type_vocab_size),
            layer_norm_eps=raw.get("layer_norm_eps", defaults.layer_norm_eps),
            pad_token_id=MODEL_TYPES[model_type][1] if raw.get("pad_token_id") is None else raw["pad_token_id"],
            positions_from_input_ids=MODEL_TYPES[model_type][0],
        )


# reproduces transformers v5.x BertEmbeddings / XLMRobertaEmbeddings (eval mode)
class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # segments (BERT's sentence A / B); DistilBERT has none
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def position_ids(self, input_ids: torch.Tensor, spans: Spans | None = None) -> torch.Tensor:
        """(B, T) position of each token. BERT: 0..T-1. RoBERTa family: pad_token_id + 1 + count of real tokens
        so far, and pad_token_id on padding, so a left-padded text gets the same positions as an unpadded one.
        Packed (spans given): each text counts from the first position, as if it were alone."""
        lengths = [b - a for a, b in spans] if spans is not None else [input_ids.shape[1]]
        limit = self.config.max_tokens
        if max(lengths, default=0) > limit:
            raise ValueError(f"sequence of {max(lengths)} tokens is longer than the model's {limit} positions; "
                             f"truncate it")
        if spans is not None:
            first = self.config.first_position
            return torch.cat([torch.arange(first, first + n, device=input_ids.device) for n in lengths])[None, :]
        seq_len = input_ids.shape[1]
        if not self.config.positions_from_input_ids:
            return torch.arange(seq_len, device=input_ids.device)[None, :]  # (1, T)
        pad = self.config.pad_token_id
        is_real = input_ids.ne(pad).int()
        return (torch.cumsum(is_real, dim=1).type_as(is_real) * is_real).long() + pad  # (B, T)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, position_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.word(input_ids)  # (B, T, H)
        if self.token_type is not None:
            x = x + self.token_type(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        x = x + self.position(position_ids)
        return self.norm(x)


# reproduces transformers v5.x BertSelfAttention + the dense layer of BertSelfOutput
class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.out = Linear(config.hidden_size, config.hidden_size)
        self.attend: Attend | None = None  # set by BertModel.set_attention

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q = self.query(x).view(heads).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text alone
        y = y.transpose(1, 2).contiguous().reshape(B, T, -1)  # (B, T, H): heads side by side again
        return self.out(y)


# reproduces transformers v5.x BertIntermediate + the dense layer of BertOutput
class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.up = Linear(config.hidden_size, config.intermediate_size, activation=config.hidden_act)
        self.down = Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.up(x)  # (B, T, intermediate): activation(x @ W.T + b), the activation maybe fused
        return self.down(hidden)  # (B, T, H)


# reproduces transformers v5.x BertLayer: post-norm, LayerNorm(sublayer(x) + x) twice
class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, spans: Spans | None = None) -> torch.Tensor:
        x = self.attn_norm(self.attention(x, mask, spans) + x)
        return self.ffn_norm(self.ffn(x) + x)  # (B, T, H)


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) of 1 = real token, 0 = padding  ->  bool (B, 1, 1, T), True where a key may be attended.

    None when nothing is padded, as transformers does. A sequence with no real token at all attends to every key,
    so that no attention variant meets a row with nothing to attend to (and NaN).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask.bool()
    keep = keep | ~keep.any(dim=1, keepdim=True)
    return keep[:, None, None, :]


class BertModel(nn.Module):
    """The whole encoder. `model(input_ids, attention_mask, token_type_ids)` -> last hidden state (B, T, H);
    packed, `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    def __init__(self, config: EncoderConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.family = config.family  # bert or distilbert: whose `matches=` claims apply (model/attention.py)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.set_attention(attention)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`: BERT's own eager / sdpa, or a registered variant. The padding mask
        is the contract's as it is."""
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
        (B, T) segment ids (default: zeros); position_ids (B, T) (default: from the config's family). Packed input:
        B = 1, spans gives each text's (start, end), and there is no attention_mask (nothing is padded)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids has {tuple(input_ids.shape)}")
        if spans is not None:
            check_spans(spans, input_ids, attention_mask)
        if position_ids is None:
            position_ids = self.embeddings.position_ids(input_ids, spans)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        mask = key_padding_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask, spans)
        return x


# --- the family's record: how its checkpoints, stages and heads are read -------------------------------------------

# checkpoint name -> ours, for BERT, MiniLM, RoBERTa and XLM-R alike (only the task-model prefix differs)
KEYS: dict[str, str | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.self.query.weight": "layers.{}.attention.query.weight",
    "encoder.layer.{}.attention.self.query.bias": "layers.{}.attention.query.bias",
    "encoder.layer.{}.attention.self.key.weight": "layers.{}.attention.key.weight",
    "encoder.layer.{}.attention.self.key.bias": "layers.{}.attention.key.bias",
    "encoder.layer.{}.attention.self.value.weight": "layers.{}.attention.value.weight",
    "encoder.layer.{}.attention.self.value.bias": "layers.{}.attention.value.bias",
    "encoder.layer.{}.attention.output.dense.weight": "layers.{}.attention.out.weight",
    "encoder.layer.{}.attention.output.dense.bias": "layers.{}.attention.out.bias",
    "encoder.layer.{}.attention.output.LayerNorm.weight": "layers.{}.attn_norm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "layers.{}.attn_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.ffn.up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.ffn.up.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.ffn.down.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.ffn.down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "layers.{}.ffn_norm.bias",
    "embeddings.position_ids": None,  # a saved arange buffer: we compute positions
    "embeddings.token_type_ids": None,  # a saved zeros buffer
    "pooler.dense.weight": None,  # BERT's next-sentence pooler: not part of the hidden states
    "pooler.dense.bias": None,
}
# masked-LM heads (transformers v5 BertLMPredictionHead / RobertaLMHead keys). "bias" and "decoder.bias" are one tensor
# tied in transformers (either or both may be stored); "decoder.weight" is stored when untied, and by some older
# checkpoints when tied. RobertaLMHead and XLMRobertaLMHead call gelu whatever config.json says.
BERT_HEAD = MaskedLMHead({
    "cls.predictions.transform.dense.weight": "dense.weight",
    "cls.predictions.transform.dense.bias": "dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "norm.bias",
    "cls.predictions.bias": "bias",
    "cls.predictions.decoder.bias": "decoder.bias",
    "cls.predictions.decoder.weight": "decoder.weight",
})
ROBERTA_HEAD = MaskedLMHead({
    "lm_head.dense.weight": "dense.weight",
    "lm_head.dense.bias": "dense.bias",
    "lm_head.layer_norm.weight": "norm.weight",
    "lm_head.layer_norm.bias": "norm.bias",
    "lm_head.bias": "bias",
    "lm_head.decoder.bias": "decoder.bias",
    "lm_head.decoder.weight": "decoder.weight",
}, activation="gelu")

OURS = Stages(embeddings=(("embedding_sum", "embeddings.norm", True), ("embeddings", "embeddings", False)),
              attention=("attn_norm", False))  # where trace and parity read BertModel's stages

FAMILY = Family(
    name=EncoderConfig.family, model_types={model_type: prefix for model_type, (_, _, prefix) in MODEL_TYPES.items()},
    config=EncoderConfig, model=BertModel, keys=KEYS, reference="BertModel / RobertaModel / XLMRobertaModel",
    ours=OURS,
    theirs=Stages(embeddings=(("embedding_sum", "embeddings.LayerNorm", True), ("embeddings", "embeddings", False)),
                  attention=("attention", False), layers="encoder.layer"),
    token_types=True, reference_options={"add_pooling_layer": False},  # BERT's pooler is not the hidden states
    masked_lm={"bert": BERT_HEAD, "roberta": ROBERTA_HEAD, "xlm-roberta": ROBERTA_HEAD},
)
