"""Qwen2 (gte-Qwen2-1.5B/7B-instruct, stella): Llama (llama.py) with biases on the query, key and value projections
and none on the output one. Everything else, op for op, is llama.py's.

Attention is causal, as in transformers' Qwen2Model, the reference: a config.json that asks for bidirectional
attention (is_causal false) is refused, naming the field, rather than run another way than it says. (MTEB's loader
runs gte-Qwen2-7B-instruct causally too: mteb/models/gte_models.py, attn "cccc".)
"""

from __future__ import annotations

from dataclasses import dataclass

from .family import Family
from .llama import KEYS, OURS, THEIRS, TRACE_WORDS, LlamaConfig, LlamaModel, decoder_fields


@dataclass(frozen=True)
class Qwen2Config(LlamaConfig):
    model_type: str = "qwen2"
    qkv_bias: bool = True                 # Qwen2Attention: q, k and v with biases...
    out_bias: bool = False                # ... o without
    max_position_embeddings: int = 32768  # Qwen2Config's defaults, where config.json leaves them out
    family = "qwen2"
    default_kv_heads = 32

    @classmethod
    def from_dict(cls, raw: dict) -> Qwen2Config:
        """Build from the fields of a Hugging Face config.json; sliding-window layers (use_sliding_window) are
        refused: the Qwen2 embedders attend to every earlier token."""
        if raw.get("use_sliding_window"):
            raise ValueError("use_sliding_window true is not supported: minienc's Qwen2 attends to every earlier token")
        return cls(**decoder_fields(raw, cls()))


FAMILY = Family(
    name=Qwen2Config.family, model_types={"qwen2": "model."}, config=Qwen2Config, model=LlamaModel, keys=KEYS,
    reference="Qwen2Model", ours=OURS, theirs=THEIRS, trace_words=TRACE_WORDS,
)
