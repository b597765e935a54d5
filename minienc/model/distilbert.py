"""DistilBERT (Sanh et al., 2019; msmarco-distilbert-*, distiluse-base-multilingual): BERT distilled to half its
layers, computed by bert.py's BertModel. What differs is data, not code: no token-type table (no segments), positions
0..T-1, every LayerNorm's epsilon 1e-12 whatever the config says, and its own names in config.json (dim, n_layers,
n_heads, hidden_dim, activation) and in checkpoints (q_lin, sa_layer_norm, ffn.lin1, ...). Its position table was
filled with sinusoids when it was made, or learned; either way it is stored, and read like BERT's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bert import OURS, BertModel, EncoderConfig
from .family import Family, Stages


@dataclass(frozen=True)
class DistilBertConfig(EncoderConfig):
    model_type: str = "distilbert"
    vocab_size: int = 30522
    num_layers: int = 6                   # config.json's n_layers
    type_vocab_size: int = 0              # no segments
    family = "distilbert"
    known_types = ("distilbert",)

    @classmethod
    def from_dict(cls, raw: dict) -> DistilBertConfig:
        """Build from the fields of a Hugging Face config.json, DistilBERT's names (unknown fields are ignored)."""
        if raw.get("sinusoidal_pos_embds") and "max_position_embeddings" not in raw:
            raise ValueError("sinusoidal_pos_embds without max_position_embeddings: the table's size is unknown")
        defaults = cls()
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["dim"], num_layers=raw["n_layers"],
            num_heads=raw["n_heads"], intermediate_size=raw["hidden_dim"],
            hidden_act=raw.get("activation", defaults.hidden_act),
            max_position_embeddings=raw.get("max_position_embeddings", defaults.max_position_embeddings),
            layer_norm_eps=1e-12,  # fixed in transformers' DistilBERT: config.json has no field for it
            pad_token_id=0 if raw.get("pad_token_id") is None else raw["pad_token_id"],
        )


# checkpoint name -> ours (DistilBertForMaskedLM and the rest store the model under "distilbert.")
KEYS: dict[str, str | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    **{f"transformer.layer.{{}}.{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}" for theirs, ours in (
        ("attention.q_lin", "attention.query"), ("attention.k_lin", "attention.key"),
        ("attention.v_lin", "attention.value"), ("attention.out_lin", "attention.out"),
        ("sa_layer_norm", "attn_norm"), ("ffn.lin1", "ffn.up"), ("ffn.lin2", "ffn.down"),
        ("output_layer_norm", "ffn_norm")) for kind in ("weight", "bias")},
    "embeddings.position_ids": None,  # a saved arange buffer: we compute positions
}

FAMILY = Family(
    name=DistilBertConfig.family, model_types={"distilbert": "distilbert."}, config=DistilBertConfig,
    model=BertModel, keys=KEYS, reference="DistilBertModel", ours=OURS,
    theirs=Stages(embeddings=(("embedding_sum", "embeddings.LayerNorm", True), ("embeddings", "embeddings", False)),
                  attention=("sa_layer_norm", False), layers="transformer.layer"),
    heads=("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier."),  # MLM, classifier heads
)
