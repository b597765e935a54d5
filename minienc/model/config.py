"""Every size and constant a model needs, from the fields of a checkpoint's config.json: one dataclass per family.

EncoderConfig: BERT, MiniLM (a small BERT), RoBERTa and XLM-RoBERTa share one architecture. The only numerical
difference is how position ids are formed, so that is a config field, not a second model class.
Qwen3Config: the Qwen3 decoders (Qwen3-Embedding).
ModernBertConfig and Gemma3Config: the newer encoders, whose layers alternate local and global attention.
"""

from __future__ import annotations

from collections.abc import Callable
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
CONFIG_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                "num_kv_heads": "num_key_value_heads", "eps": "rms_norm_eps"}


def check_sizes(config: object, names: tuple[str, ...]) -> None:
    """Each named field a positive integer; an error names it as config.json does."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{CONFIG_NAMES.get(name, name)} must be a positive integer, got {value!r}")


def check_common(config: object, eps_name: str, eps: float) -> None:
    """The checks every family's config shares: an epsilon from 0 to 1, a pad token in the vocabulary, a known
    activation."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise ValueError(f"{eps_name} must be a number from 0 to 1, got {eps!r}")
    pad, vocab = config.pad_token_id, config.vocab_size
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < vocab:
        raise ValueError(f"pad_token_id must be a token id, from 0 to vocab_size - 1 ({vocab - 1}), got {pad!r}")
    if not isinstance(config.hidden_act, str) or config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {config.hidden_act!r}; minienc supports {sorted(ACTIVATIONS)}")


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
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                           "max_position_embeddings", "type_vocab_size"))
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


LAYER_TYPES = ("full_attention", "sliding_attention")  # config.json's names: global and local layers


def read_layer_types(raw: dict, num_layers: int, is_local: Callable[[int], bool]) -> tuple[str, ...]:
    """config.json's layer_types, or, where it has none (older files), is_local(i) for each layer i."""
    types = raw.get("layer_types") or [LAYER_TYPES[bool(is_local(i))] for i in range(num_layers)]
    return tuple(types)


def read_thetas(raw: dict, global_key: str, local_key: str, defaults: tuple[float, float]) -> tuple[float, float]:
    """The rotary bases of the global and the local layers: rope_parameters per layer type (transformers 5), else
    the two older keys, else transformers' defaults. Another rope_type than "default" is refused: minienc computes
    only that one; so is one rope_parameters for every layer (transformers would ignore its base here)."""
    per_type = raw.get("rope_parameters") or {}
    if per_type and not set(per_type) <= set(LAYER_TYPES):
        raise ValueError(f"rope_parameters must give each layer type its own ({', '.join(LAYER_TYPES)}), got "
                         f"{per_type}")
    thetas = []
    for kind, key, default in zip(LAYER_TYPES, (global_key, local_key), defaults):
        rope = per_type.get(kind) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default" or raw.get("rope_scaling"):
            raise ValueError(f"unsupported rotary scaling {rope or raw.get('rope_scaling')}; minienc computes "
                             f"rope_type 'default'")
        thetas.append(next((v for v in (rope.get("rope_theta"), raw.get(key)) if v is not None), default))
    return thetas[0], thetas[1]


def check_local_global(config: object, width_name: str) -> None:
    """The checks ModernBERT's and Gemma 3's configs share: a layer type per layer, a positive window, rotary
    bases, an even head size."""
    if len(config.layer_types) != config.num_layers or not set(config.layer_types) <= set(LAYER_TYPES):
        raise ValueError(f"layer_types must name {config.num_layers} layers, each one of {LAYER_TYPES}; got "
                         f"{list(config.layer_types)}")
    if isinstance(config.local_width, bool) or not isinstance(config.local_width, int) or config.local_width < 2:
        raise ValueError(f"{width_name} must be an integer of at least 2, got {config.local_width!r}")
    thetas = (config.rope_theta, config.local_rope_theta)
    if config.head_dim % 2 or not all(isinstance(t, (int, float)) and t > 0 for t in thetas):
        raise ValueError(f"rotary positions need an even head size and positive bases, got {config.head_dim} and "
                         f"{thetas}")


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
        check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                           "intermediate_size", "max_position_embeddings"))
        check_common(self, "rms_norm_eps", self.rms_norm_eps)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_key_value_heads ({self.num_kv_heads}) does not divide num_attention_heads "
                             f"({self.num_heads})")
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
