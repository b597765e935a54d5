"""EncoderConfig: every size and constant the model needs, from the fields of a checkpoint's config.json.

BERT, MiniLM (a small BERT), RoBERTa and XLM-RoBERTa share one architecture. The only numerical difference
is how position ids are formed, so that is a config field, not a second model class.
"""

from __future__ import annotations

from dataclasses import dataclass

from .activations import ACTIVATIONS

# model_type -> whether position ids come from the input ids (RoBERTa family) rather than 0..T-1 (BERT family)
FAMILIES: dict[str, bool] = {
    "bert": False,
    "roberta": True,
    "xlm-roberta": True,
}
# model_type -> pad_token_id where config.json leaves it out (or writes null): BertConfig / RobertaConfig defaults
PAD_TOKEN_IDS: dict[str, int] = {"bert": 0, "roberta": 1, "xlm-roberta": 1}
# our field name -> config.json's, where they differ (for errors)
CONFIG_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads"}


@dataclass(frozen=True)
class EncoderConfig:
    model_type: str = "bert"              # one of FAMILIES
    vocab_size: int = 30522               # rows of the word-embedding table
    hidden_size: int = 768                # width of every token vector
    num_layers: int = 12                  # encoder layers stacked
    num_heads: int = 12                   # attention heads; must divide hidden_size
    intermediate_size: int = 3072         # feed-forward inner width
    hidden_act: str = "gelu"              # feed-forward activation, a key of ACTIVATIONS
    max_position_embeddings: int = 512    # rows of the position-embedding table
    type_vocab_size: int = 2              # rows of the token-type (segment) table
    layer_norm_eps: float = 1e-12         # epsilon of every LayerNorm
    pad_token_id: int = 0                 # id of the padding token
    positions_from_input_ids: bool = False  # RoBERTa family: pad_token_id + 1 + running count of real tokens

    def __post_init__(self) -> None:
        if not isinstance(self.model_type, str) or self.model_type not in FAMILIES:
            raise ValueError(
                f"unsupported model_type {self.model_type!r}; minienc supports {sorted(FAMILIES)}"
            )
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{CONFIG_NAMES.get(name, name)} must be a positive integer, got {value!r}")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
            raise ValueError(f"layer_norm_eps must be a number from 0 to 1, got {eps!r}")
        pad = self.pad_token_id
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size:
            raise ValueError(f"pad_token_id must be a token id, from 0 to vocab_size - 1 ({self.vocab_size - 1}), "
                             f"got {pad!r}")
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) does not divide hidden_size ({self.hidden_size})"
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"unsupported hidden_act {self.hidden_act!r}; minienc supports {sorted(ACTIVATIONS)}"
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
            raise ValueError(f"config has no 'model_type'; minienc supports {sorted(FAMILIES)}")
        if not isinstance(model_type, str) or model_type not in FAMILIES:
            raise ValueError(f"unsupported model_type {model_type!r}; minienc supports {sorted(FAMILIES)}")
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
            pad_token_id=PAD_TOKEN_IDS[model_type] if raw.get("pad_token_id") is None else raw["pad_token_id"],
            positions_from_input_ids=FAMILIES[model_type],
        )
