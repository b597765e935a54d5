"""jina-embeddings-v3: XLM-R with rotary positions, computed by NomicBERT's encoder (nomic_bert.py) with BERT's plain
feed-forward (fc1, GELU, fc2), biases everywhere, and rotary base 20000, as transformers' JinaEmbeddingsV3Model.

Not computed: the task adapters (LoRA) the model was trained with, one per task (retrieval.query, retrieval.passage,
separation, classification, text-matching), which its own code adds to the weights by `task=`. transformers'
JinaEmbeddingsV3Model, the reference, has none, so there is nothing to hold them to: a config.json that lists
`lora_adaptations` is refused, naming the field, rather than run without the adapters its vectors were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

from .family import Family, Stages
from .nomic_bert import NomicBertConfig, NomicBertModel, rotary_encoder_fields


@dataclass(frozen=True)
class JinaV3Config(NomicBertConfig):
    model_type: str = "jina_embeddings_v3"
    vocab_size: int = 250002
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    max_position_embeddings: int = 8194
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    rope_theta: float = 20000.0
    attention_bias: bool = True
    down_bias: bool = True
    gated: bool = False
    family = "jina_embeddings_v3"

    @classmethod
    def from_dict(cls, raw: dict) -> JinaV3Config:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored)."""
        if raw.get("lora_adaptations"):
            raise ValueError(f"lora_adaptations {raw['lora_adaptations']} (task adapters) are not computed: "
                             f"transformers' JinaEmbeddingsV3Model, the reference, has none")
        return cls(**rotary_encoder_fields(raw, cls()))


# checkpoint name -> ours: transformers 5's module names, and the Hub's (those of Jina's own code), where q, k, v
# (weights and biases) are one tensor, mixer.Wqkv, cut in three along its rows
KEYS: dict[str, str | tuple[str, ...] | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    **{f"{theirs}.{kind}": f"embeddings.norm.{kind}" for theirs in ("embeddings.LayerNorm", "emb_ln")
       for kind in ("weight", "bias")},
    **{f"layers.{{}}.self_attn.{theirs}_proj.{kind}": f"layers.{{}}.attention.{ours}.{kind}"
       for theirs, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")) for kind in ("weight", "bias")},
    **{f"encoder.layers.{{}}.mixer.Wqkv.{kind}": tuple(f"layers.{{}}.attention.{ours}.{kind}"
                                                     for ours in ("query", "key", "value")) for kind in ("weight", "bias")},
    **{f"{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}" for theirs, ours in (
        ("encoder.layers.{}.mixer.out_proj", "attention.out"),
        ("layers.{}.post_attention_layernorm", "attn_norm"), ("encoder.layers.{}.norm1", "attn_norm"),
        ("layers.{}.post_mlp_layernorm", "ffn_norm"), ("encoder.layers.{}.norm2", "ffn_norm"),
        ("layers.{}.mlp.fc1", "ffn.up"), ("encoder.layers.{}.mlp.fc1", "ffn.up"),
        ("layers.{}.mlp.fc2", "ffn.down"), ("encoder.layers.{}.mlp.fc2", "ffn.down")) for kind in ("weight", "bias")},
    "embeddings.position_ids": None, "embeddings.token_type_ids": None,  # saved buffers: we compute them
    "pooler.dense.weight": None, "pooler.dense.bias": None,
}

FAMILY = Family(
    name=JinaV3Config.family, model_types={"jina_embeddings_v3": "roberta."}, config=JinaV3Config,
    model=NomicBertModel, keys=KEYS, reference="JinaEmbeddingsV3Model",
    ours=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("attn_norm", False)),
    theirs=Stages(embeddings=(("embeddings", "embeddings", False),), attention=("post_attention_layernorm", False)),
    token_types=True, reference_options={"add_pooling_layer": False},
    trace_words=("LayerNorm of word + token-type vectors",
                 "encoder layers      (post-norm, as BERT: LayerNorm(x + attention(x)); then fc1, GELU, fc2)", ""),
)
