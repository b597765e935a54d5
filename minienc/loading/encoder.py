"""From a checkpoint folder to a model: config.json -> the family's model class -> its weights, strictly.

`Encoder.from_pretrained` is the entry point users call; the model classes themselves (model/) know nothing of
files, the Hub or kernels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..model.family import family_of
from ..runtime.devices import check_device, check_dtype
from ..runtime.matmul import get_matmul, use_kernel
from .checkpoint import load_weights, read_json
from .hub import resolve_model_dir

def read_config(path: Path):
    """config.json as its family's config; an error naming the file and the field that is missing or wrong."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: config.json must hold a JSON object, got {type(raw).__name__}")
    try:
        family = family_of(raw.get("model_type"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    try:
        return family.config.from_dict(raw)
    except KeyError as err:
        raise ValueError(f"{path} lacks the field {err.args[0]!r}") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


class Encoder:
    """The bare model of a checkpoint: `Encoder.from_pretrained(folder)(input_ids, attention_mask, token_type_ids)`
    -> last hidden state (B, T, H). The class it returns is the family's, as its record in model/ names it (BertModel
    for BERT, MiniLM, RoBERTa, XLM-R and DistilBERT; LlamaModel for Qwen3, Llama, Qwen2 and Mistral; ...), chosen by
    config.json's model_type."""

    def __new__(cls, *args, **kwargs):
        raise TypeError("Encoder is built from a checkpoint: Encoder.from_pretrained(name_or_path)")

    @staticmethod
    def from_pretrained(
        name_or_path: str | Path,
        *,
        attention: str = "sdpa",
        matmul: str = "torch",
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        use_cache: bool | None = None,
    ) -> nn.Module:
        """Load a BERT / MiniLM / RoBERTa / XLM-R / Qwen3 / ModernBERT / EmbeddingGemma checkpoint from a local folder
        or a Hub repo id, in eval mode.

        dtype (a torch.dtype, "float32", "float16", "bfloat16", or "auto": bfloat16 where the device computes it
        natively) defaults to float32 whatever the file stores; device defaults to the CPU. matmul "torch" (the
        default) keeps transformers' bits; "onednn" is faster on x86 CPUs with AVX2 or AVX-512 (runtime/matmul.py).
        use_cache: the decoders' (Qwen3, EmbeddingGemma) transformers setting, config.json's by default, as
        transformers' from_pretrained; sentence-transformers loads with False. No cache is kept: it decides only the
        memory layout attention reads keys and values in (model/attention.py, as_cached), which some CPUs' kernels
        round by; pass what the model you compare with ran.
        """
        device = check_device(device)
        dtype = check_dtype(dtype, device)
        get_matmul(matmul)  # an unknown kernel is refused before anything is read
        folder = resolve_model_dir(name_or_path, revision=revision)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} has no config.json")
        config = read_config(folder / "config.json")
        if use_cache is not None and hasattr(config, "use_cache"):
            config = dataclasses.replace(config, use_cache=use_cache)
        with torch.device("meta"):  # shapes only: the checkpoint supplies every value
            model = family_of(config.model_type).model(config, attention=attention)
        expected = {name: t.shape for name, t in model.state_dict().items()}
        weights = load_weights(folder, config.model_type, expected, config.num_layers, dtype=dtype)
        model.load_state_dict(weights, strict=True, assign=True)
        use_kernel(model, matmul)
        return model.to(device).eval()
