"""GTE v1.5 and multilingual (gte-base-en-v1.5, gte-multilingual-base): NomicBERT's encoder (nomic_bert.py) with
biases on q, k, v, o and on the feed-forward's down projection, GELU's gated form, rotary base 160000, and
gte-multilingual's token types (gte-base-en-v1.5 has none). Its Hub folders store q, k and v fused (qkv_proj) and the
feed-forward's up and gate fused (up_gate_proj, up first), under the prefix "new.": the key table splits them as
transformers' loading does. model_type "gte" is transformers' (alibaba-nlp-community/gte-multilingual-base); folders
whose config.json says "new" (Alibaba's own code) are not read: their config fields were not at hand to check.

Not computed: the NTK rotary scaling gte-base-en-v1.5's own code applies (config.json's rope_scaling, type "ntk");
transformers 5 has no such rope_type, so there is no reference to hold it to, and it is refused, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    family = "gte"

    @classmethod
    def from_dict(cls, raw: dict) -> GteConfig:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored); GTE's NTK scaling, as any
        rope_type but "default", is refused."""
        return cls(**rotary_encoder_fields(raw, cls()))


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
    **{f"encoder.layer.{{}}.attention.o_proj.{kind}": f"layers.{{}}.attention.out.{kind}" for kind in ("weight", "bias")},
    **{f"{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}" for theirs, ours in (
        ("layers.{}.post_attention_layernorm", "attn_norm"), ("encoder.layer.{}.attn_ln", "attn_norm"),
        ("layers.{}.post_mlp_layernorm", "ffn_norm"), ("encoder.layer.{}.mlp_ln", "ffn_norm"),
        ("layers.{}.mlp.down_proj", "ffn.down"), ("encoder.layer.{}.mlp.down_proj", "ffn.down"))
       for kind in ("weight", "bias")},
    **{f"layers.{{}}.mlp.{name}_proj.weight": f"layers.{{}}.ffn.{name}.weight" for name in ("gate", "up")},
    "encoder.layer.{}.mlp.up_gate_proj.weight": ("layers.{}.ffn.up.weight", "layers.{}.ffn.gate.weight"),
    "embeddings.position_ids": None, "embeddings.token_type_ids": None,  # saved buffers: we compute them
    "pooler.dense.weight": None, "pooler.dense.bias": None,
}

FAMILY = Family(
    name=GteConfig.family, model_types={"gte": ("gte.", "new.")},  # transformers' task models; the Hub's files
    config=GteConfig, model=NomicBertModel, keys=KEYS,
    reference="GteModel",
    ours=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("attn_norm", False)),
    theirs=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("post_attention_layernorm", False)),
    token_types=True, trace_words=TRACE_WORDS,
)
