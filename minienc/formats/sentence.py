"""Reading a sentence-transformers model folder into a plain description: which modules follow the encoder, and
the settings around it (text length, lowercasing, prompts).

A sentence-transformers folder lists its modules in modules.json, each in a subfolder with its own config.json:
Transformer (the encoder: config.json, the weights and the tokenizer, at the top level or, in older folders, in
the module's own folder such as 0_Transformer), Pooling, Dense (a linear layer and an
activation, applied to the pooled vector), Normalize. Module types are class paths, old
(`sentence_transformers.models.Pooling`) or new (`sentence_transformers.sentence_transformer.modules.pooling.Pooling`):
the class name decides. The text length limit is sentence_bert_config.json's max_seq_length where it is given
(sentence-transformers before 6 wrote it, with do_lower_case), else tokenizer_config.json's model_max_length (6.x
keeps it there), capped by the model's positions. config_sentence_transformers.json gives the prompts, the
similarity function and truncate_dim. A folder without modules.json is a plain transformers checkpoint: mean pooling,
no Dense, no normalization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..loading.checkpoint import read_json, read_json_object
from ..model.pooling import POOLERS

# sentence-transformers' legacy Pooling config keys -> pooling mode
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# the activation classes a Dense config names -> the same function
DENSE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "torch.nn.modules.activation.Tanh": torch.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.ReLU": torch.relu,
    "torch.nn.modules.activation.GELU": F.gelu,
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
}
MODULE_KINDS = ("Transformer", "Pooling", "Dense", "Normalize")
# modules of the other encoders' folders -> (what it is, what loads it)
OTHER_ENCODERS = {
    "MLMTransformer": ("sparse (SPLADE)", "minienc.SparseEncoder"),
    "SpladePooling": ("sparse (SPLADE)", "minienc.SparseEncoder"),
    "MultiVectorMask": ("multi-vector (ColBERT)", "minienc.MultiVectorEncoder"),
}


@dataclass(frozen=True)
class DenseSpec:
    """One Dense module: activation(x @ weight.T + bias), weights in folder/model.safetensors."""

    folder: Path
    in_features: int
    out_features: int
    bias: bool
    activation: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SentenceConfig:
    pooling: tuple[str, ...] = ("mean",)   # POOLERS names, concatenated in this order
    dense: tuple[DenseSpec, ...] = ()       # applied to the pooled vector, in order
    normalize: bool = False                 # L2-normalize the final vector
    transformer: Path | None = None          # the folder of config.json, the weights and the tokenizer (modules.json's
                                            # Transformer path); None: the model folder itself
    max_seq_length: int | None = None       # tokens kept per text, as the folder says; None: as many as fit
    tokenizer_max_length: int | None = None  # tokenizer_config.json's model_max_length, used when the above is None
    lowercase: bool = False                 # lowercase texts before tokenizing
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name -> text put before each input
    default_prompt_name: str | None = None  # the prompt used when encode() names none
    include_prompt: bool = True             # False: the prompt's tokens (and [CLS]) are left out of pooling
    similarity_fn_name: str = "cosine"      # a name in heads/similarity.py's SIMILARITIES (checked by the head)
    truncate_dim: int | None = None         # keep only the first truncate_dim dimensions (Matryoshka)


def check_pooling(modes: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [m for m in modes if m not in POOLERS]
    if unknown or not modes:
        raise ValueError(f"unknown pooling {unknown or list(modes)}; choose from {sorted(POOLERS)}")
    return modes


def pooling_modes(config: dict) -> tuple[str, ...]:
    """The pooling mode(s) of a sentence-transformers Pooling config, new style or legacy boolean keys."""
    modes = config.get("pooling_mode") or [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)]
    modes = (modes,) if isinstance(modes, str) else modes
    if not isinstance(modes, (list, tuple)) or not all(isinstance(mode, str) for mode in modes):
        raise ValueError(f"pooling_mode must be a name or a list of names from {sorted(POOLERS)}, got {modes!r}")
    return check_pooling(tuple(modes))


def read_dense(folder: Path) -> DenseSpec:
    config_file = folder / "config.json"
    config = read_json_object(config_file)
    name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if name not in DENSE_ACTIVATIONS:
        raise ValueError(f"{config_file}: unsupported activation_function {name!r}; "
                         f"minienc supports {sorted(DENSE_ACTIVATIONS)}")
    names = (config.get("module_input_name", "sentence_embedding"), config.get("module_output_name", "sentence_embedding"))
    if config.get("use_residual") or names != ("sentence_embedding", "sentence_embedding"):
        raise ValueError(f"{config_file}: a Dense with use_residual, or that reads or writes anything but the "
                         f"sentence_embedding, is not supported by minienc")
    sizes = [setting(config, key, int, None, config_file) for key in ("in_features", "out_features")]
    if None in sizes:
        raise ValueError(f"{config_file}: a Dense needs in_features and out_features")
    return DenseSpec(folder, *sizes, setting(config, "bias", bool, True, config_file), DENSE_ACTIVATIONS[name])


def module_list(modules_file: Path) -> list[tuple[str, str, Path]]:
    """modules.json as (type, kind: the type's last name, folder) per module; anything but a list of objects with
    a "type" is a ValueError naming the file."""
    folder, modules = modules_file.parent, read_json(modules_file)
    well_formed = isinstance(modules, list) and all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                    for m in modules)
    if not well_formed:
        raise ValueError(f"{modules_file}: expected a list of modules, each an object with a 'type'")
    return [(m["type"], m["type"].rsplit(".", 1)[-1], folder / str(m.get("path") or "")) for m in modules]


def read_modules(modules_file: Path) -> list[tuple[str, Path]]:
    """modules.json -> (kind, folder) per module, checked: Transformer first, then Pooling, any Dense, and
    Normalize last, as sentence-transformers' SentenceTransformer chains them."""
    found = []
    for full_type, kind, path in module_list(modules_file):
        if kind not in MODULE_KINDS:
            other = OTHER_ENCODERS.get(kind)
            hint = f"; this is a {other[0]} folder: load it with {other[1]}" if other else ""
            raise ValueError(f"{modules_file}: module type {full_type!r} is not supported by SentenceEncoder "
                             f"(supported: {', '.join(MODULE_KINDS)}){hint}")
        found.append((kind, path))
    kinds = [kind for kind, _ in found]
    allowed = kinds[:2] == ["Transformer", "Pooling"] and all(k == "Dense" for k in kinds[2:len(kinds) - 1]) and (
        len(kinds) == 2 or kinds[-1] in ("Dense", "Normalize"))
    if not allowed:
        raise ValueError(f"{modules_file}: modules {kinds}; SentenceEncoder reads Transformer, Pooling, any Dense, "
                         f"then an optional Normalize, in that order")
    return found


def setting(settings: dict, key: str, kind: type, default: Any, file: Path) -> Any:
    """settings[key] if it is of `kind` (an int that is at least 1, for int), else a ValueError naming the file."""
    value = settings.get(key, default)
    wrong = value is not default and (isinstance(value, bool) != (kind is bool) or not isinstance(value, kind)
                                      or (kind is int and value < 1))
    if wrong:
        raise ValueError(f"{file}: {key} must be {'a positive integer' if kind is int else kind.__name__}, got "
                         f"{value!r}")
    return value


def tokenizer_limit(folder: Path) -> int | None:
    """tokenizer_config.json's model_max_length in `folder`; None where there is none, or where transformers wrote
    its ~1e30 for "no limit"."""
    file = folder / "tokenizer_config.json"
    limit = read_json_object(file).get("model_max_length") if file.is_file() else None
    return int(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) and 1 <= limit < 1e9 else None


def text_length(max_seq_length: int | None, tokenizer_max_length: int | None, positions: int) -> int:
    """Tokens kept per text, as sentence-transformers decides: the folder's (or the caller's) max_seq_length, which
    must fit the model's positions, else the tokenizer's limit capped by the positions."""
    if max_seq_length is None:
        return min(tokenizer_max_length or positions, positions)
    whole = not isinstance(max_seq_length, bool) and isinstance(max_seq_length, (int, np.integer))
    if not whole or not 1 <= max_seq_length <= positions:
        raise ValueError(f"max_seq_length must be an integer from 1 to the model's {positions} positions, got "
                         f"{max_seq_length!r}")
    return int(max_seq_length)


def read_sentence_folder(folder: Path) -> SentenceConfig:
    """The description of `folder`; a plain transformers folder gives the defaults."""
    pooling, dense, normalize, include_prompt, transformer = ("mean",), [], False, True, folder
    modules_file = folder / "modules.json"
    for kind, path in read_modules(modules_file) if modules_file.is_file() else []:
        if kind == "Transformer":
            transformer = path
        elif kind == "Pooling":
            pooling_config = read_json_object(path / "config.json")
            pooling = pooling_modes(pooling_config)
            include_prompt = pooling_config.get("include_prompt", True) is not False
        elif kind == "Dense":
            dense.append(read_dense(path))
        elif kind == "Normalize":
            normalize = True
    settings_file = transformer / "sentence_bert_config.json"
    settings = read_json_object(settings_file) if settings_file.is_file() else {}
    extras_file = folder / "config_sentence_transformers.json"
    extras = read_json_object(extras_file) if extras_file.is_file() else {}
    return SentenceConfig(
        pooling=pooling,
        dense=tuple(dense),
        normalize=normalize,
        transformer=transformer,
        max_seq_length=setting(settings, "max_seq_length", int, None, settings_file),
        tokenizer_max_length=tokenizer_limit(transformer),
        lowercase=setting(settings, "do_lower_case", bool, False, settings_file),
        prompts={name: text or "" for name, text in (extras.get("prompts") or {}).items()},
        default_prompt_name=extras.get("default_prompt_name"),
        include_prompt=include_prompt,
        similarity_fn_name=extras.get("similarity_fn_name") or "cosine",
        truncate_dim=extras.get("truncate_dim"),
    )
