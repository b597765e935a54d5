"""Qwen3, by hand: a decoder used as an encoder (Qwen3-Embedding).

    x = embed(tokens)                                      no positions added here: they rotate q and k instead
    N times:  x = x + attention(RMSNorm(x))                pre-norm: the norm comes before each block
              x = x + feed_forward(RMSNorm(x))             down(silu(gate(x)) * up(x))
    h = RMSNorm(x)                                         the last hidden state

What differs from BERT (bert.py), block by block: no [CLS] and no token types; RMSNorm before each block instead of
LayerNorm after it; rotary positions applied to queries and keys (model/blocks.py), counted 0, 1, 2, ... from the
first token of the row whatever the padding; queries and keys each RMS-normalized per head; fewer key / value heads
than query heads (grouped-query attention); causal attention, each token seeing only itself and the tokens before it
(model/attention.py, the causal forms); a gated feed-forward; no biases. So the last token is the only one that has
seen the whole text, and it is the one pooled (sentence-transformers' "lasttoken").

Inference only. Shapes: B = batch, T = sequence length, H = hidden size, nh = query heads, nkv = key / value heads,
hs = head size. Two inputs, one forward pass, as bert.py: padded (B, T) with an attention mask, or packed (1, N) with
each text's span, where positions restart at each text and each text attends causally to itself alone.

The blocks are llama.py's, which all four decoders share (Qwen3: qk_norm); this file holds what is Qwen3's own: its
config.json's reading, its key table and its record.
"""

from __future__ import annotations

from dataclasses import dataclass

from .family import Family
from .llama import KEYS as LLAMA_KEYS, OURS, THEIRS, TRACE_WORDS, LlamaConfig, LlamaModel, decoder_fields


@dataclass(frozen=True)
class Qwen3Config(LlamaConfig):
    model_type: str = "qwen3"
    vocab_size: int = 151669              # rows of the token-embedding table
    hidden_size: int = 1024               # width of every token vector
    num_layers: int = 28                  # decoder layers stacked
    num_heads: int = 16                   # query heads
    num_kv_heads: int = 8                 # key / value heads, each shared by num_heads / num_kv_heads query heads
    head_dim: int = 128                   # width of one head: config.json's, not hidden_size / num_heads
    intermediate_size: int = 3072         # feed-forward inner width (gate and up projections)
    max_position_embeddings: int = 32768  # the longest text it was trained on: rotary positions have no table
    qk_norm: bool = True                  # queries and keys each RMS-normalized per head
    family = "qwen3"
    default_kv_heads = 32                 # Qwen3Config's, where config.json has no num_key_value_heads

    @classmethod
    def from_dict(cls, raw: dict) -> Qwen3Config:
        """Build from the fields of a Hugging Face config.json (unknown fields are ignored); what minienc does not
        compute (another rope_type, sliding-window layers, a bidirectional Qwen3) is refused."""
        if raw.get("use_sliding_window"):
            raise ValueError("sliding-window attention layers (use_sliding_window, layer_types) are not supported; "
                             "minienc's Qwen3 attends to every earlier token")
        bias = bool(raw.get("attention_bias", False))
        return cls(**decoder_fields(raw, cls()), qkv_bias=bias, out_bias=bias)


# checkpoint name -> ours: llama.py's table and the per-head norms (Qwen3ForCausalLM stores the model under "model.")
KEYS: dict[str, str | None] = {
    **LLAMA_KEYS,
    "layers.{}.self_attn.q_norm.weight": "layers.{}.attention.q_norm.weight",
    "layers.{}.self_attn.k_norm.weight": "layers.{}.attention.k_norm.weight",
}

FAMILY = Family(
    name=Qwen3Config.family, model_types={"qwen3": "model."}, config=Qwen3Config, model=LlamaModel, keys=KEYS,
    reference="Qwen3Model", ours=OURS, theirs=THEIRS, trace_words=TRACE_WORDS,
)
