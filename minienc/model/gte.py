"""GTE v1.5 and multilingual (gte-base-en-v1.5, gte-multilingual-base): NomicBERT's encoder (nomic_bert.py) with
biases on q, k, v, o and on the feed-forward's down projection, GELU's gated form, rotary base 160000, and
gte-multilingual's token types (gte-base-en-v1.5 has none). Its Hub folders store q, k and v fused (qkv_proj) and the
feed-forward's up and gate fused (up_gate_proj, up first), under the prefix "new.": the key table splits them as
transformers' loading does. model_type "gte" is transformers' (alibaba-nlp-community/gte-multilingual-base); "new" is
the config.json of Alibaba's own folders (Alibaba-NLP/gte-base-en-v1.5, gte-multilingual-base), whose code minienc
does not run: it reads their fields and computes what they ask for, or refuses naming the field.

What transformers' GteModel does not compute: the NTK scaling of the rotation speeds those folders ask for
(rope_scaling {"type": "ntk", "factor": f}), for texts longer than the model was trained on. As Alibaba's code, in
its op order (float32): the base multiplied by f, then every speed divided by f ** (2 / hs), so pair i turns
f ** ((i + 1) / (hs / 2)) times slower: the slowest pair f times, the fastest barely (docs/positions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .blocks import inverse_frequencies
from .family import Family, Stages
from .nomic_bert import TRACE_WORDS, NomicBertConfig, NomicBertModel, rotary_encoder_fields


@dataclass(frozen=True)
class GteConfig(NomicBertConfig):
    model_type: str = "gte"
    vocab_size: int = 250048
    hidden_act: str = "gelu"
    max_position_embeddings: int = 8192
    type_vocab_size: int = 1
    pad_token_id: int = 1
    rope_theta: float = 160000.0
    attention_bias: bool = True
    down_bias: bool = True
    rope_ntk_factor: float = 1.0          # rope_scaling {"type": "ntk", "factor": f} (Alibaba's folders); 1: none
    family = "gte"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.rope_ntk_factor, (int, float)) or self.rope_ntk_factor <= 0:
            raise ValueError(f"rope_scaling's factor must be a positive number, got {self.rope_ntk_factor!r}")

    def rotary_frequencies(self) -> torch.Tensor:
        """(hs / 2,) float32: the rotation speeds, NTK-scaled where the factor is above 1 (below, Alibaba's code
        scales nothing): computed as there, base * f first, then each speed divided by f ** (2 / hs)."""
        f = self.rope_ntk_factor
        if f <= 1:
            return super().rotary_frequencies()
        return inverse_frequencies(self.head_dim, self.rope_theta * f, device="cpu") / f ** (2 / self.head_dim)

    @classmethod
    def from_dict(cls, raw: dict) -> GteConfig:
        """Build from the fields of a config.json, transformers' (model_type "gte") or Alibaba's ("new"); unknown
        fields are ignored, and what minienc does not compute is refused, naming the field."""
        refuse_alibaba_fields(raw)
        raw, factor = without_ntk(raw)
        return cls(**rotary_encoder_fields(raw, cls()), model_type=raw.get("model_type", "gte"), rope_ntk_factor=factor)


# Alibaba's config fields that would ask for another computation: field -> the value minienc computes. Its other
# flags (pack_qkv, unpad_inputs, use_memory_efficient_attention) choose how the same arithmetic runs, or is stored.
ALIBABA_FIELDS = {"position_embedding_type": "rope", "layer_norm_type": "layer_norm"}


def refuse_alibaba_fields(raw: dict) -> None:
    for name, computed in ALIBABA_FIELDS.items():
        if raw.get(name, computed) != computed:
            raise ValueError(f"{name} {raw[name]!r} is not supported: minienc's GTE computes {computed!r}")
    # log-length scaling multiplies the queries by log(n) / log(max_position_embeddings), n the text's tokens: below 1
    # for every text minienc takes (n <= max_position_embeddings), so a no-op only where clipped at 1
    if raw.get("logn_attention_scale") and not raw.get("logn_attention_clip1"):
        raise ValueError("logn_attention_scale without logn_attention_clip1 (queries scaled by each text's log "
                         "length) is not supported")


def without_ntk(raw: dict) -> tuple[dict, float]:
    """config.json with an NTK rope_scaling taken out, and its factor (1.0 where there is none). Any other scaling
    is left for rotary_encoder_fields to refuse; NTK's mixed form (mixed_b) is refused here."""
    rope = raw.get("rope_scaling") or raw.get("rope_parameters") or {}  # transformers' order
    if rope.get("rope_type", rope.get("type")) != "ntk":
        return raw, 1.0
    if raw.get("model_type") != "new":  # transformers' GteModel has none: its folders are held to it
        raise ValueError(f"unsupported rotary scaling {rope} for model_type {raw.get('model_type')!r}: minienc computes "
                         f"NTK scaling for Alibaba's folders (model_type 'new'), as their code does; transformers' "
                         f"GteModel has none")
    extra = sorted(name for name, value in rope.items()
                   if name not in ("type", "rope_type", "factor", "rope_theta") and value is not None)
    if extra or "factor" not in rope:
        raise ValueError(f"unsupported rotary scaling {rope}: minienc computes GTE's NTK scaling from its factor "
                         f"alone" + (f" ({', '.join(extra)} not supported)" if extra else " (no factor given)"))
    plain = {"rope_type": "default", **({"rope_theta": rope["rope_theta"]} if "rope_theta" in rope else {})}
    return {**raw, "rope_scaling": plain}, rope["factor"]


# checkpoint name -> ours: transformers 5's names, and the Hub's (under "new.", stripped as a task-model prefix),
# where q, k, v are one tensor (qkv_proj) and up and gate another (up_gate_proj), each cut along its rows
KEYS: dict[str, str | tuple[str, ...] | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    **{f"embeddings.LayerNorm.{kind}": f"embeddings.norm.{kind}" for kind in ("weight", "bias")},
    **{f"layers.{{}}.self_attn.{theirs}_proj.{kind}": f"layers.{{}}.attention.{ours}.{kind}"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    **{f"encoder.layer.{{}}.attention.qkv_proj.{kind}": tuple(f"layers.{{}}.attention.{ours}.{kind}"
                                                            for ours in ("query", "key", "value"))
       for kind in ("weight", "bias")},
    **{f"encoder.layer.{{}}.attention.{theirs}_proj.{kind}": f"layers.{{}}.attention.{ours}.{kind}"  # pack_qkv false
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    **{f"{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}" for theirs, ours in (
        ("layers.{}.post_attention_layernorm", "attn_norm"), ("encoder.layer.{}.attn_ln", "attn_norm"),
        ("layers.{}.post_mlp_layernorm", "ffn_norm"), ("encoder.layer.{}.mlp_ln", "ffn_norm"),
        ("layers.{}.mlp.down_proj", "ffn.down"), ("encoder.layer.{}.mlp.down_proj", "ffn.down"))
       for kind in ("weight", "bias")},
    **{f"layers.{{}}.mlp.{name}_proj.weight": f"layers.{{}}.ffn.{name}.weight" for name in ("gate", "up")},
    "encoder.layer.{}.mlp.up_gate_proj.weight": ("layers.{}.ffn.up.weight", "layers.{}.ffn.gate.weight"),
    "embeddings.position_ids": None, "embeddings.token_type_ids": None,  # saved buffers: we compute them
    **{f"embeddings.rotary_emb.{name}": None for name in ("inv_freq", "cos_cached", "sin_cached")},
    "pooler.dense.weight": None, "pooler.dense.bias": None,
}

FAMILY = Family(
    # model_type -> where task models keep the encoder: transformers' under "gte.", Alibaba's (the Hub's) under "new."
    name=GteConfig.family, model_types={"gte": ("gte.", "new."), "new": "new."},
    config=GteConfig, model=NomicBertModel, keys=KEYS,
    reference="GteModel",
    ours=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("attn_norm", False)),
    theirs=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("post_attention_layernorm", False)),
    token_types=True, trace_words=TRACE_WORDS,
)
