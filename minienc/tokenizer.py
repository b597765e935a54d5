"""Text -> token ids, with the `tokenizers` library reading tokenizer.json.

A tokenizer.json may carry its own padding and truncation (all-MiniLM-L6-v2's pads and truncates to 128 while the
model reads 256 tokens). The model's max_seq_length decides, as in sentence-transformers, so both are replaced.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Encoding, Tokenizer


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_token_id: int, lowercase: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.lowercase = lowercase
        tokenizer.no_padding()  # we pad per batch, in pad()
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, pad_token_id: int, lowercase: bool = False) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: minienc reads fast tokenizers saved as tokenizer.json")
        return cls(Tokenizer.from_file(str(path)), max_length, pad_token_id, lowercase)

    def tokenize(self, texts: list[str], pairs: list[str] | None = None) -> list[Encoding]:
        """Tokenize, add the model's special tokens, truncate to max_length (both texts of a pair together)."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
            pairs = None if pairs is None else [t.lower() for t in pairs]
        inputs = texts if pairs is None else list(zip(texts, pairs))
        return self.tokenizer.encode_batch(inputs)

    def pad(self, encodings: list[Encoding], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Right-pad to the longest: input_ids, attention_mask, token_type_ids, each (B, T) int64."""
        longest = max(len(e.ids) for e in encodings)
        ids = torch.full((len(encodings), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), longest), dtype=torch.long)
        types = torch.zeros((len(encodings), longest), dtype=torch.long)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = torch.tensor(e.ids)
            mask[row, :n] = 1
            types[row, :n] = torch.tensor(e.type_ids)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": types.to(device)}

    def __call__(self, texts: list[str], pairs: list[str] | None = None, device=None) -> dict[str, torch.Tensor]:
        return self.pad(self.tokenize(texts, pairs), device)
