"""Reading a checkpoint's safetensors weights into our names (loading/hub.py finds the folder).

Strict by design: every weight the model needs must be there with the right shape, every tensor in the file must
be one we use or one we ignore on purpose, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..model.family import family_of

WEIGHTS_FILE = "model.safetensors"
SHARD_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")

# task heads stored beside the encoder, ignored on purpose (a family's own, such as ModernBERT's masked-LM head, are in
# its record); each family's key table and task-model prefixes are in its record too (model/family.py)
HEADS = ("cls.", "lm_head.", "classifier.", "qa_outputs.", "score.")
# TensorFlow-era LayerNorm names still found in old checkpoints
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: the message names the file or the keys and what to do."""


Targets = tuple[str, ...]  # our names for one checkpoint tensor: one, or several it holds fused (q, k, v)


def layer_table(model_type: str, num_layers: int) -> dict[str, Targets]:
    """The family's key table with "{}" written out for layers 0..num_layers-1: an exact lookup, no pattern matching.
    Each checkpoint name maps to the names of ours it holds: none (ignored on purpose), one, or a fused tensor's
    parts, in order (a key table writes those as a tuple)."""
    table: dict[str, Targets] = {}
    for theirs, ours in family_of(model_type).keys.items():
        names = () if ours is None else (ours,) if isinstance(ours, str) else tuple(ours)
        indices = range(num_layers) if "{}" in theirs else [None]
        for i in indices:
            table[theirs.format(i)] = tuple(name.format(i) for name in names)
    return table


def checkpoint_name(key: str, model_type: str) -> str | None:
    """A tensor's name in the file -> its name in the family's key table, or None for a task head we ignore."""
    for old, new in LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    family = family_of(model_type)
    for prefix in prefixes(model_type):
        if key.startswith(prefix):
            return key[len(prefix) :]
    if key.startswith(HEADS + family.heads):
        return None
    return key


def prefixes(model_type: str) -> tuple[str, ...]:
    """The prefixes task models of this model_type store the model under (the family's record: one, or several)."""
    stored = family_of(model_type).model_types[model_type]
    return (stored,) if isinstance(stored, str) else tuple(stored)


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


def prefix_hint(unexpected: list[str], table: dict[str, Targets], model_type: str) -> str:
    """Where every unexpected key is a model key behind one other prefix ("model.", or BERT's under an XLM-R config),
    a line saying so; else nothing."""
    if not unexpected or not all("." in key for key in unexpected):
        return ""
    heads = {key.split(".", 1)[0] for key in unexpected}
    if len(heads) != 1 or not all(checkpoint_name(key.split(".", 1)[1], model_type) in table for key in unexpected):
        return ""
    return (f"\n  every unexpected key starts with '{heads.pop()}.', a prefix {model_type} checkpoints do not use "
            f"(minienc strips {' or '.join(repr(p) for p in prefixes(model_type))}): check config.json's model_type, or "
            f"save the bare encoder")


FINITE_CHECK_PART = 1 << 22  # elements bad_weight checks at once
FINITE_CHECK_BYTES = 1 << 22  # bytes read_weights_file reads from a file at once
FILE_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def bad_weight(tensor: torch.Tensor, finite: bool | None = None) -> str | None:
    """Why a weight tensor cannot be a model's: not floating-point (an integer or bool file would be cast to float
    silently), or holding NaN / infinity; None when it can. finite: already known (read_weights_file), else checked
    here, in parts: torch.isfinite builds temporaries as large as the tensor."""
    if not tensor.is_floating_point():
        return f"stored as {str(tensor.dtype).removeprefix('torch.')}, not a floating-point type"
    if finite is None:  # float8 has no isfinite of its own: its parts are widened first
        finite = all(bool(torch.isfinite(part if part.dtype.itemsize > 1 else part.float()).all())
                     for part in tensor.reshape(-1).split(FINITE_CHECK_PART))
    return None if finite else "holds NaN or infinite values"


def read_weights_file(path: Path, dtype: torch.dtype, wanted: Callable[[str], bool] = lambda key: True
                      ) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """Every tensor of a safetensors file, and whether each wanted floating-point one is free of NaN and infinity
    (the others, a task head ignored on purpose, are neither checked nor cast: views of the file, never read). A tensor
    stored in `dtype` is a view of the mapped file: no copy, a page is read when a weight first is, and the rows of
    an embedding table no text reaches are never read (EmbeddingGemma's table is 0.8 GB of 1.2). Another
    floating-point one is cast from the file into memory of its own. Both are read from the file through one 4 MiB
    buffer, never through the mapped views: reading those would keep every page of the file resident beside the
    model (or beside its cast copy). Integers and float8 are left as stored: load_weights refuses integers, and
    bad_weight checks float8 itself (widened a part at a time; the pages it reads stay resident)."""
    tensors = read_safetensors(path)
    finite: dict[str, bool] = {}
    buffer = torch.empty(FINITE_CHECK_BYTES, dtype=torch.uint8)
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        for key, info in json.loads(file.read(size)).items():
            stored = FILE_DTYPES.get(info.get("dtype")) if isinstance(info, dict) else None  # __metadata__ too
            if stored is None or not wanted(key):
                continue
            start, end = info["data_offsets"]
            file.seek(8 + size + start)
            cast = torch.empty(tensors[key].shape, dtype=dtype) if stored != dtype else None
            finite[key], flat = True, None if cast is None else cast.view(-1)
            step = FINITE_CHECK_BYTES - FINITE_CHECK_BYTES % stored.itemsize
            for offset in range(start, end, step):
                n = min(step, end - offset)
                if file.readinto(memoryview(buffer.numpy())[:n]) != n:
                    raise CheckpointError(f"{path} ends inside {key}: it may be truncated, download it again")
                values = buffer[:n].view(stored)
                finite[key] = finite[key] and bool(torch.isfinite(values).all())
                if flat is not None:
                    first = (offset - start) // stored.itemsize
                    flat[first:first + values.numel()].copy_(values)
                elif not finite[key]:
                    break
            tensors[key] = tensors[key] if cast is None else cast
    return tensors, finite


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


def report(problems: dict[str, list[str]]) -> str:
    """The strict report: each kind of problem found, with its count and its items, one per line."""
    return "\n".join(f"  {title} ({len(items)}):\n" + "\n".join(f"    {item}" for item in items)
                     for title, items in problems.items() if items)


def check_part(key: str, tensor: torch.Tensor, shape: torch.Size, part_of: str | None,
               finite: bool | None) -> tuple[str, str] | None:
    """(kind of problem, line) where checkpoint tensor `key` (or the part of it that is `part_of`) cannot be the
    weight of that shape; None where it can. finite: the whole tensor's, from read_weights_file."""
    if tensor.shape != shape:
        where = f" for {part_of}" if part_of else ""
        return "wrong shapes", f"{key}: checkpoint {tuple(tensor.shape)}, model expects {tuple(shape)}{where}"
    problem = bad_weight(tensor, finite)
    return ("not floating-point numbers", f"{key}: {problem}") if problem else None


def load_weights(
    folder: Path,
    model_type: str,
    expected: dict[str, torch.Size],
    num_layers: int,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Read every tensor of the checkpoint in `folder` and return them under our names, cast to `dtype`
    (float32 when None). `expected` maps each of our names to its shape; anything else is an error."""
    table = layer_table(model_type, num_layers)
    ours_to_theirs: dict[str, list[str]] = {}  # our name -> every checkpoint name that may hold it
    for theirs, targets in table.items():
        for ours in targets:
            ours_to_theirs.setdefault(ours, []).append(theirs)
    weights: dict[str, torch.Tensor] = {}
    found_as: dict[str, str] = {}  # our name -> the checkpoint key it was read from
    problems: dict[str, list[str]] = {"missing weights": [], "stored twice": [], "wrong shapes": [],
                                      "not floating-point numbers": [], "unexpected tensors": []}
    for path in weight_files(folder):
        tensors, finite = read_weights_file(path, dtype or torch.float32,
                                            wanted=lambda key: bool(table.get(checkpoint_name(key, model_type))))
        for key, tensor in tensors.items():
            name = checkpoint_name(key, model_type)
            targets = table.get(name, ()) if name is not None else ()
            if name is not None and (name not in table or any(ours not in expected for ours in targets)):
                problems["unexpected tensors"].append(key)  # not ours, or not in this config's model (a bias)
                continue
            # a fused tensor (q, k and v in one) is cut in equal parts along its rows, as transformers' loading does
            if len(targets) > 1 and (tensor.dim() == 0 or tensor.shape[0] % len(targets)):
                problems["wrong shapes"].append(f"{key}: checkpoint {tuple(tensor.shape)}, which does not cut into "
                                                f"{len(targets)} equal parts along its rows ({', '.join(targets)})")
                found_as.update({ours: key for ours in targets})
                continue
            parts = tensor.chunk(len(targets), dim=0) if len(targets) > 1 else (tensor,)
            for index, (ours, part) in enumerate(zip(targets, parts)):
                if ours in found_as:
                    problems["stored twice"].append(f"{key} and {found_as[ours]} both hold minienc's {ours}")
                    continue
                found_as[ours] = f"{key} ({path.name})"
                whole = finite.get(key) if index == 0 or key not in finite else True  # a fused key's, said once
                problem = check_part(key, part, expected[ours], ours if len(targets) > 1 else None, whole)
                if problem:
                    problems[problem[0]].append(problem[1])
                else:
                    weights[ours] = part.to(dtype or torch.float32)
    problems["missing weights"] = [f"{' or '.join(ours_to_theirs[ours])} (minienc: {ours})" for ours in expected
                                   if ours not in found_as]
    if any(problems.values()):
        raise CheckpointError(f"{folder} does not match its config.json ({model_type}):\n{report(problems)}"
                              f"{prefix_hint(problems['unexpected tensors'], table, model_type)}")
    return weights
