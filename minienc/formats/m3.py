"""bge-m3's folder: its two heads, shipped as pickles (`colbert_linear.pt`, `sparse_linear.pt`) beside the XLM-R
weights. minienc never unpickles while loading, so `convert_heads` (the CLI's `minienc convert-heads FOLDER`)
rewrites them once as safetensors, reading the pickles with torch.load(weights_only=True); `read_head` loads the
converted files. Also the special tokens FlagEmbedding leaves out of lexical weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from ..loading.checkpoint import CheckpointError, read_json_object, read_linear
from ..model.linear import Linear

HEADS = ("colbert_linear", "sparse_linear")  # file stems, beside the encoder's weights
# FlagEmbedding leaves these out of lexical weights; the token strings are transformers' XLMRobertaTokenizer
# defaults, replaced by what the folder's tokenizer_config.json, then special_tokens_map.json, names
UNUSED_TOKENS = {"cls_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def convert_heads(folder: str | Path) -> list[Path]:
    """Rewrite FOLDER/colbert_linear.pt and FOLDER/sparse_linear.pt as .safetensors beside them; the paths written.

    Each pickle is read with torch.load(weights_only=True), which builds tensors and plain containers only and
    refuses any other object the file names. Run it once, where you trust the files."""
    folder = Path(folder)
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise ImportError(f"convert_heads needs torch 2.6 or later, whose torch.load(weights_only=True) cannot be "
                           f"made to run code (CVE-2025-32434); this is torch {torch.__version__}")
    missing = [f"{name}.pt" for name in HEADS if not (folder / f"{name}.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {' and no '.join(missing)}: download them with the model "
                                f"(`hf download BAAI/bge-m3 colbert_linear.pt sparse_linear.pt --local-dir {folder}`)")
    written = []
    for name in HEADS:
        state = torch.load(folder / f"{name}.pt", weights_only=True, map_location="cpu")
        if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{folder / (name + '.pt')} is not a Linear layer's state dict (weight, bias): "
                                  f"found {found}")
        save_file({key: t.contiguous() for key, t in state.items()}, str(folder / f"{name}.safetensors"))
        written.append(folder / f"{name}.safetensors")
    return written


def read_head(folder: Path, name: str, hidden_size: int, dtype: torch.dtype) -> Linear:
    """FOLDER/name.safetensors as a minienc Linear (hidden_size -> its rows), or a CheckpointError saying what to do."""
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        if (folder / f"{name}.pt").is_file():
            raise CheckpointError(f"{folder} holds {name}.pt, a pickle, and no {name}.safetensors; minienc never "
                                  f"unpickles while loading. Convert the heads once, where you trust the files: "
                                  f"`minienc convert-heads {folder}`")
        raise CheckpointError(f"{folder} has no {name}.safetensors (nor {name}.pt): get bge-m3's heads with "
                              f"`hf download BAAI/bge-m3 colbert_linear.pt sparse_linear.pt --local-dir {folder}`, "
                              f"then run `minienc convert-heads {folder}`")
    tensors = read_linear(path, hidden_size, 1 if name == "sparse_linear" else None, True, dtype)
    layer = Linear(hidden_size, tensors["weight"].shape[0], dtype=dtype)
    layer.load_state_dict(tensors)
    return layer


def unused_token_ids(folder: Path, vocab: Tokenizer) -> frozenset[int]:
    """The ids of the cls, eos, pad and unk tokens (FlagEmbedding reads them from transformers' special_tokens_map)."""
    names = dict(UNUSED_TOKENS)
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        found = read_json_object(folder / file) if (folder / file).is_file() else {}
        for key in names:
            value = found.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            names[key] = value if isinstance(value, str) else names[key]
    ids = (vocab.token_to_id(token) for token in names.values())
    return frozenset(i for i in ids if i is not None)


