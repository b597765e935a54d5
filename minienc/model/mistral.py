"""Mistral (e5-mistral-7b-instruct, SFR-Embedding-Mistral): Llama (llama.py) with a sliding window in its config: a
token attends to itself and the `sliding_window - 1` tokens before it, no further back (4,096 tokens in Mistral 7B
v0.1; null in later versions, which attend to every earlier token). The window is a mask (llama.py,
sliding_causal_mask), by transformers' rules; everything else, op for op, is llama.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .family import Family
from .llama import KEYS, OURS, THEIRS, TRACE_WORDS, LlamaConfig, LlamaModel, decoder_fields


@dataclass(frozen=True)
class MistralConfig(LlamaConfig):
    model_type: str = "mistral"
    sliding_window: int | None = 4096     # MistralConfig's default; config.json's null turns it off
    max_position_embeddings: int = 131072  # MistralConfig's defaults, where config.json leaves them out
    family = "mistral"
    default_kv_heads = 8

    @classmethod
    def from_dict(cls, raw: dict) -> MistralConfig:
        """Build from the fields of a Hugging Face config.json; sliding_window as it says (absent: 4096, as
        transformers' MistralConfig)."""
        return cls(**decoder_fields(raw, cls()), sliding_window=raw.get("sliding_window", 4096))


FAMILY = Family(
    name=MistralConfig.family, model_types={"mistral": "model."}, config=MistralConfig, model=LlamaModel, keys=KEYS,
    reference="MistralModel", ours=OURS, theirs=THEIRS, trace_words=TRACE_WORDS,
)
