"""What every family's config shares: the checks of sizes, epsilons and activations, and the reading of local and
global layers (ModernBERT, Gemma 3). Each family's config dataclass lives in its own file (bert.py: EncoderConfig;
qwen3.py, modernbert.py, gemma3.py), built from the fields of a checkpoint's config.json."""

from __future__ import annotations

from collections.abc import Callable

from .activations import ACTIVATIONS

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


def check_grouped_heads(config: object) -> None:
    """The checks of a config with grouped key/value heads and RMSNorm (the decoders, Gemma 3): sizes, epsilon, pad
    token, activation, and key/value heads that divide the query heads."""
    check_sizes(config, ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                         "intermediate_size", "max_position_embeddings"))
    check_common(config, "rms_norm_eps", config.rms_norm_eps)
    if config.num_heads % config.num_kv_heads:
        raise ValueError(f"num_key_value_heads ({config.num_kv_heads}) does not divide num_attention_heads "
                         f"({config.num_heads})")


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
