"""What the package knows of a model family, in one record that the family's own file holds (`FAMILY` in each family
file of this folder: bert.py, distilbert.py, mpnet.py, nomic_bert.py, gte.py, jina_embeddings_v3.py, qwen3.py,
llama.py, qwen2.py, mistral.py, modernbert.py, gemma3.py). The loader, the checkpoint reader, trace, parity and the SPLADE head
read the records, never a model_type string: adding a family is its file, its tiny weights and its tests
(docs/adding-a-family.md).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

Point = tuple[str, str, bool]  # (stage name, module path, read its input: True, or its output: False)


@dataclass(frozen=True)
class Stages:
    """Where trace and parity read a model's stages (stages.py), by module path: the embedding stages, the module in
    each layer whose input (before) or output is the residual stream after attention, and the final norm (None: the
    last layer's output is the last hidden state)."""

    embeddings: tuple[Point, ...]
    attention: tuple[str, bool]
    final_norm: str | None = None
    layers: str = "layers"


@dataclass(frozen=True)
class MaskedLMHead:
    """A masked-LM head stored beside the encoder (SPLADE reads it): checkpoint name -> MLMHead's name, and the
    activation between its dense layer and its norm (None: config.json's hidden_act)."""

    keys: Mapping[str, str]
    activation: str | None = None


@dataclass(frozen=True, eq=False)  # one record per family: compared and hashed as itself
class Family:
    name: str                            # whose reference forms and `matches=` claims apply (model/attention.py)
    model_types: Mapping[str, str | tuple[str, ...]]  # config.json's model_type -> the prefix (or prefixes) task
                                                      # models store the model under
    config: type                         # its config dataclass: config.from_dict(config.json's fields)
    model: type[nn.Module]               # model(config, attention=name)
    keys: Mapping[str, str | None]       # checkpoint name -> ours; "{}" the layer index, None ignored on purpose
    reference: str                       # the transformers class it is held to, bit for bit (its tests, the docs)
    ours: Stages                         # where its stages are read in minienc's model...
    theirs: Stages                       # ... and in transformers'
    token_types: bool = False            # takes token_type_ids (segments)
    reference_options: Mapping[str, object] = field(default_factory=dict)  # from_pretrained options for parity
    reference_claims: Mapping[str, str] = field(default_factory=dict)  # our form -> the transformers one it is, where
                                                                        # the names differ (MPNet: sdpa is eager)
    trace_words: tuple[str, str, str] | None = None  # trace's words: its embeddings, its layers, its final norm
    heads: tuple[str, ...] = ()          # task heads of this family only, stored beside the model, ignored
    masked_lm: Mapping[str, MaskedLMHead] = field(default_factory=dict)  # model_type -> its masked-LM head


@functools.cache
def families() -> dict[str, Family]:
    """model_type -> its family: the FAMILY of every module of this package that has one. A module that fails to
    import, or a model_type two families claim, is an error naming the file."""
    found: dict[str, Family] = {}
    for module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        try:
            record = getattr(importlib.import_module(f"{__package__}.{module.name}"), "FAMILY", None)
        except Exception as err:
            raise ImportError(f"minienc/model/{module.name}.py does not import ({err}), so no family can be "
                              f"looked up") from err
        if not isinstance(record, Family):
            continue
        for model_type in record.model_types:
            if model_type in found:
                raise ValueError(f"model_type {model_type!r} is claimed by two families: {found[model_type].name} "
                                 f"and {record.name} (minienc/model/{module.name}.py)")
            found[model_type] = record
    return found


def family_of(model_type: object) -> Family:
    """The family config.json's model_type names; an error lists those minienc computes."""
    known = families()
    if not isinstance(model_type, str) or model_type not in known:
        found = "no 'model_type'" if model_type is None else f"unsupported model_type {model_type!r}"
        raise ValueError(f"{found}; minienc supports {sorted(known)}")
    return known[model_type]
