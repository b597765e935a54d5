"""Reading a SPLADE model's folder: the sentence-transformers sparse layout (modules.json: MLMTransformer, or
Transformer("fill-mask"), then SpladePooling) or a plain *ForMaskedLM folder, and the masked-LM head's tensors
under our names (by the family's table of transformers v5 BertLMPredictionHead / RobertaLMHead keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..loading.checkpoint import (LEGACY_SUFFIXES, CheckpointError, bad_weight, read_json_object, read_safetensors,
                                  weight_files)
from ..model.pooling import SPLADE_ACTIVATIONS, SPLADE_POOLERS
from .sentence import SentenceConfig, module_list, setting, tokenizer_limit

def read_head_tensors(folder: Path, table: dict[str, str]) -> dict[str, torch.Tensor]:
    """The masked-LM head's tensors in `folder`, under MLMHead's names by `table` (checkpoint name -> ours, from the
    family's record: model/bert.py), as transformers v5 loads them: the decoder adds its own stored bias if there is
    one, else the head's; its weight is stored only when untied."""
    found: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        for key, tensor in read_safetensors(path).items():
            for old, new in LEGACY_SUFFIXES.items():
                key = key[: -len(old)] + new if key.endswith(old) else key
            if key in table:
                found[table[key]] = tensor
    shared_bias = found.pop("bias", None)
    if shared_bias is not None:
        found.setdefault("decoder.bias", shared_bias)
    tied = read_json_object(folder / "config.json").get("tie_word_embeddings", True)
    needed = ["dense.weight", "dense.bias", "norm.weight", "norm.bias", "decoder.bias"]
    needed += [] if tied else ["decoder.weight"]
    theirs = {ours: key for key, ours in table.items()}
    theirs["decoder.bias"] = theirs["bias"]  # either name may hold it: report the usual one
    missing = [theirs[name] for name in needed if name not in found]
    if missing:
        raise CheckpointError(f"{folder} has no masked-language-model head: missing {', '.join(missing)}. A SPLADE "
                              f"model needs the whole *ForMaskedLM checkpoint, not the bare encoder")
    for name, tensor in found.items():
        problem = bad_weight(tensor)
        if problem:
            raise CheckpointError(f"{folder}: the masked-LM head's {theirs[name]} {problem}")
    return found


@dataclass(frozen=True)
class SparseFolder:
    """What a sparse model folder says: where the masked-LM checkpoint is, and the settings around it."""

    model_folder: Path                       # config.json, weights and tokenizer.json of the *ForMaskedLM model
    pooling: str = "max"                     # a SPLADE_POOLERS name
    activation: str = "relu"                 # a SPLADE_ACTIVATIONS name
    sentence: SentenceConfig = field(default_factory=SentenceConfig)  # text length, lowercasing, prompts
    similarity_fn_name: str | None = None    # as the folder says (SparseEncoder falls back to "dot")
    max_active_dims: int | None = None       # keep only this many largest values per vector; None: all


def transformer_task(kind: str, path: Path) -> str:
    """What a Transformer module computes: MLMTransformer is always "fill-mask"; Transformer says so in its
    sentence_bert_config.json (sentence-transformers 6), else it gives token vectors ("feature-extraction")."""
    settings = path / "sentence_bert_config.json"
    default = "fill-mask" if kind == "MLMTransformer" else "feature-extraction"
    return (read_json_object(settings) if settings.is_file() else {}).get("transformer_task", default)


def read_sparse_folder(folder: Path) -> SparseFolder:
    """A sentence-transformers sparse folder (modules.json: MLMTransformer or Transformer("fill-mask"), then
    SpladePooling), or a plain *ForMaskedLM folder, read as sentence-transformers reads it."""
    modules_file = folder / "modules.json"
    model_folder, splade = folder, {}
    if modules_file.is_file():
        kinds = [(kind, path) for _, kind, path in module_list(modules_file)]
        names = [kind for kind, _ in kinds]
        if (names not in (["MLMTransformer", "SpladePooling"], ["Transformer", "SpladePooling"])
                or transformer_task(*kinds[0]) != "fill-mask"):
            raise ValueError(f"{modules_file}: modules {names} are not a SPLADE model; minienc's SparseEncoder reads "
                             f"MLMTransformer (or Transformer with transformer_task 'fill-mask') then SpladePooling")
        model_folder = kinds[0][1]
        splade = read_json_object(kinds[1][1] / "config.json")
    else:
        architectures = read_json_object(folder / "config.json").get("architectures") or []
        if not any(name.endswith("ForMaskedLM") for name in architectures):
            raise ValueError(f"{folder} is neither a sentence-transformers sparse folder (no modules.json) nor a "
                             f"masked-language model (config.json's architectures: {architectures}); "
                             f"sentence-transformers would build a CSR model from it, which minienc does not support")
    pooling, activation = splade.get("pooling_strategy", "max"), splade.get("activation_function", "relu")
    if pooling not in SPLADE_POOLERS or activation not in SPLADE_ACTIVATIONS:
        raise ValueError(f"{folder}: SpladePooling({pooling!r}, {activation!r}) is not supported; pooling_strategy "
                         f"is one of {sorted(SPLADE_POOLERS)}, activation_function one of {sorted(SPLADE_ACTIVATIONS)}")
    settings_file = model_folder / "sentence_bert_config.json"
    extras_file = folder / "config_sentence_transformers.json"
    settings = read_json_object(settings_file) if settings_file.is_file() else {}
    extras = read_json_object(extras_file) if extras_file.is_file() else {}
    return SparseFolder(
        model_folder=model_folder, pooling=pooling, activation=activation,
        sentence=SentenceConfig(
            max_seq_length=setting(settings, "max_seq_length", int, None, settings_file),
            lowercase=setting(settings, "do_lower_case", bool, False, settings_file),
            tokenizer_max_length=tokenizer_limit(model_folder),
            prompts={name: text or "" for name, text in (extras.get("prompts") or {}).items()},
            default_prompt_name=extras.get("default_prompt_name")),
        similarity_fn_name=extras.get("similarity_fn_name"),
        max_active_dims=extras.get("max_active_dims"),
    )


