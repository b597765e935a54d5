"""The encoder, by hand: embeddings -> N x (self-attention, feed-forward), each followed by residual + LayerNorm.

One class serves BERT, MiniLM, RoBERTa and XLM-RoBERTa; they differ only in config values. Inference only: there
is no dropout. Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size.

Two inputs, one forward pass:
- padded: (B, T) ids, shorter texts padded, and an attention mask that hides the padding (transformers' way);
- packed: (1, N) ids, the texts of a batch laid end to end with no padding, and `spans`, the (start, end) of each
  text; positions restart at each text and attention runs text by text, so no text sees another.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import BERT_FORMS, Attend, Spans, bind
from .config import EncoderConfig
from .inputs import check_spans
from .linear import Linear


# reproduces transformers v5.x BertEmbeddings / XLMRobertaEmbeddings (eval mode)
class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def position_ids(self, input_ids: torch.Tensor, spans: Spans | None = None) -> torch.Tensor:
        """(B, T) position of each token. BERT: 0..T-1. RoBERTa family: pad_token_id + 1 + count of real tokens
        so far, and pad_token_id on padding, so a left-padded text gets the same positions as an unpadded one.
        Packed (spans given): each text counts from the first position, as if it were alone."""
        lengths = [b - a for a, b in spans] if spans is not None else [input_ids.shape[1]]
        limit = self.config.max_tokens
        if max(lengths, default=0) > limit:
            raise ValueError(f"sequence of {max(lengths)} tokens is longer than the model's {limit} positions; "
                             f"truncate it")
        if spans is not None:
            first = self.config.first_position
            return torch.cat([torch.arange(first, first + n, device=input_ids.device) for n in lengths])[None, :]
        seq_len = input_ids.shape[1]
        if not self.config.positions_from_input_ids:
            return torch.arange(seq_len, device=input_ids.device)[None, :]  # (1, T)
        pad = self.config.pad_token_id
        is_real = input_ids.ne(pad).int()
        return (torch.cumsum(is_real, dim=1).type_as(is_real) * is_real).long() + pad  # (B, T)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, position_ids: torch.Tensor
    ) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word(input_ids) + self.token_type(token_type_ids)  # (B, T, H)
        x = x + self.position(position_ids)
        return self.norm(x)


# reproduces transformers v5.x BertSelfAttention + the dense layer of BertSelfOutput
class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.out = Linear(config.hidden_size, config.hidden_size)
        self.attend: Attend | None = None  # set by BertModel.set_attention

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, spans: Spans | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = (B, T, -1, self.head_dim)
        q = self.query(x).view(heads).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        y = self.attend(q, k, v, mask, self.scale, spans)  # (B, nh, T, hs); packed: each text alone
        y = y.transpose(1, 2).contiguous().reshape(B, T, -1)  # (B, T, H): heads side by side again
        return self.out(y)


# reproduces transformers v5.x BertIntermediate + the dense layer of BertOutput
class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.up = Linear(config.hidden_size, config.intermediate_size, activation=config.hidden_act)
        self.down = Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.up(x)  # (B, T, intermediate): activation(x @ W.T + b), the activation maybe fused
        return self.down(hidden)  # (B, T, H)


# reproduces transformers v5.x BertLayer: post-norm, LayerNorm(sublayer(x) + x) twice
class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, spans: Spans | None = None) -> torch.Tensor:
        x = self.attn_norm(self.attention(x, mask, spans) + x)
        return self.ffn_norm(self.ffn(x) + x)  # (B, T, H)


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) of 1 = real token, 0 = padding  ->  bool (B, 1, 1, T), True where a key may be attended.

    None when nothing is padded, as transformers does. A sequence with no real token at all attends to every key,
    so that no attention variant meets a row with nothing to attend to (and NaN).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask.bool()
    keep = keep | ~keep.any(dim=1, keepdim=True)
    return keep[:, None, None, :]


class BertModel(nn.Module):
    """The whole encoder. `model(input_ids, attention_mask, token_type_ids)` -> last hidden state (B, T, H);
    packed, `model(input_ids, spans=spans)` with (1, N) inputs -> (1, N, H)."""

    family = "bert"  # whose reference forms, and `matches=` claims, apply (model/attention.py)

    def __init__(self, config: EncoderConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.set_attention(attention)

    def set_attention(self, name: str) -> None:
        """Switch every layer to attention `name`: BERT's own eager / sdpa, or a registered variant. The padding mask
        is the contract's as it is."""
        attend = bind(name, self.family, BERT_FORMS)
        for layer in self.layers:
            layer.attention.attend = attend
        self.attention_name = name

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        spans: Spans | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) int; attention_mask (B, T), 1 for real tokens (default: all ones); token_type_ids
        (B, T) segment ids (default: zeros); position_ids (B, T) (default: from the config's family). Packed input:
        B = 1, spans gives each text's (start, end), and there is no attention_mask (nothing is padded)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids has {tuple(input_ids.shape)}")
        if spans is not None:
            check_spans(spans, input_ids, attention_mask)
        if position_ids is None:
            position_ids = self.embeddings.position_ids(input_ids, spans)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        mask = key_padding_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask, spans)
        return x
