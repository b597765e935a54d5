"""Text -> token ids, with the `tokenizers` library reading tokenizer.json.

A tokenizer.json may carry its own padding and truncation (all-MiniLM-L6-v2's pads and truncates to 128 while the
model reads 256 tokens). The model's max_seq_length decides, as in sentence-transformers, so both are replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from ..runtime.batching import Tokens
from .checkpoint import read_json_object

CHUNK = 1024  # texts tokenized at a time: a tokenizers Encoding is large, the Tokens kept from it are small


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_token_id: int, lowercase: bool = False,
                 padding_side: str = "right"):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.lowercase = lowercase
        self.padding_side = padding_side  # where pad() puts the padding: decoders pooled by their last token may want
        # it on the left, and transformers' positions then start after it
        tokenizer.no_padding()  # we pad per batch, in pad()
        self.max_length = max_length

    @property
    def max_length(self) -> int:
        """Tokens kept per text (both texts of a pair together), special tokens included."""
        return self.tokenizer.truncation["max_length"]

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.tokenizer.enable_truncation(max_length=value, strategy="longest_first")

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, pad_token_id: int, lowercase: bool = False,
                  vocab_size: int | None = None) -> TextTokenizer:
        """tokenizer.json, padding on the side its tokenizer_config.json names (default right); with vocab_size (the
        model's word-embedding rows), a tokenizer whose ids go beyond them (another model's tokenizer) is refused."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: minienc reads fast tokenizers saved as tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises a bare Exception for a file it cannot parse
            raise ValueError(f"{path} is not a tokenizer the tokenizers library can read ({err})") from None
        if vocab_size is not None and tokenizer.get_vocab_size(with_added_tokens=False) > vocab_size:
            raise ValueError(f"{path} has {tokenizer.get_vocab_size(with_added_tokens=False)} tokens, but the model's "
                             f"word-embedding table has {vocab_size} rows: the tokenizer belongs to another model")
        settings = path.parent / "tokenizer_config.json"
        side = (read_json_object(settings) if settings.is_file() else {}).get("padding_side") or "right"
        return cls(tokenizer, max_length, pad_token_id, lowercase, side)

    def encodings(self, texts: list[str], pairs: list[str] | None = None) -> list[Encoding]:
        """Tokenize, add the model's special tokens, truncate to max_length (both texts of a pair together): the
        full Encodings, with token strings and offsets."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
            pairs = None if pairs is None else [t.lower() for t in pairs]
        inputs = texts if pairs is None else list(zip(texts, pairs))
        return self.tokenizer.encode_batch(inputs)

    @contextmanager
    def truncating_at(self, max_length: int) -> Iterator[None]:
        """Within the block, texts are cut at max_length tokens (a query's length, bge-m3's max_length); the
        tokenizer's own length comes back after it."""
        kept, self.max_length = self.max_length, max_length
        try:
            yield
        finally:
            self.max_length = kept

    def tokenize(self, texts: list[str], pairs: list[str] | None = None) -> list[Tokens]:
        """The same, keeping only ids, segment ids and whether the text was cut, CHUNK texts at a time."""
        found: list[Tokens] = []
        for start in range(0, len(texts), CHUNK):
            chunk_pairs = None if pairs is None else pairs[start : start + CHUNK]
            for e in self.encodings(texts[start : start + CHUNK], chunk_pairs):
                found.append(Tokens(np.array(e.ids, dtype=np.int32), np.array(e.type_ids, dtype=np.int32),
                                    truncated=bool(e.overflowing)))
        return found

    def windows(self, texts: list[str], size: int, overlap: int) -> list[list[Tokens]]:
        """Each text cut into windows of at most `size` tokens (special tokens included, added to every window),
        each starting `overlap` tokens before the last one ended: the whole text, nothing truncated."""
        kept = self.max_length
        self.tokenizer.enable_truncation(max_length=size, stride=overlap, strategy="longest_first")
        try:
            encodings = self.encodings(texts)
        finally:
            self.max_length = kept
        compact = lambda e: Tokens(np.array(e.ids, dtype=np.int32), np.array(e.type_ids, dtype=np.int32), False)  # noqa: E731
        return [[compact(e), *map(compact, e.overflowing)] for e in encodings]

    def pad(self, tokens: list[Tokens], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Pad to the longest, on padding_side: input_ids, attention_mask, token_type_ids, each (B, T) int64 ((0, 0)
        for none)."""
        longest = max((len(t.ids) for t in tokens), default=0)
        ids = torch.full((len(tokens), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(tokens), longest), dtype=torch.long)
        types = torch.zeros((len(tokens), longest), dtype=torch.long)
        for row, t in enumerate(tokens):
            n = len(t.ids)
            place = slice(0, n) if self.padding_side == "right" else slice(longest - n, longest)
            ids[row, place] = torch.from_numpy(t.ids)
            mask[row, place] = 1
            types[row, place] = torch.from_numpy(t.type_ids)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": types.to(device)}

    def prefix_length(self, prompt: str) -> int:
        """How many tokens a text's prompt takes at its start: the leading special token(s) and the prompt's own
        (sentence-transformers' prompt_length: the prompt tokenized alone, less a closing special token)."""
        encoding = self.encodings([prompt])[0]
        return len(encoding.ids) - (1 if encoding.special_tokens_mask and encoding.special_tokens_mask[-1] else 0)

    def __call__(self, texts: list[str], pairs: list[str] | None = None, device=None) -> dict[str, torch.Tensor]:
        return self.pad(self.tokenize(texts, pairs), device)
