"""Reading a multi-vector (ColBERT) folder into a plain description: the modules, the token Dense head, the
scoring mask, query and document lengths, query expansion and prompts, as sentence-transformers v6.2 reads its own
MultiVectorEncoder folders and converts PyLate's and sentence-transformers' (minienc/heads/multivector.py uses it).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from ..loading.checkpoint import read_json_object
from .sentence import DENSE_ACTIVATIONS, DenseSpec, module_list

# what each saved module type becomes; Pooling and a sentence-level Normalize occur only in a sentence-transformers
# folder converted to multi-vector, where sentence-transformers drops them
MODULE_KINDS = ("Transformer", "Dense", "MultiVectorMask", "Normalize", "Pooling")
EXPANSION_KEYS = {"strategy", "attend", "token", "length"}
PYLATE_KNOBS = ("query_length", "document_length", "query_expansion")  # PyLate keeps these at the top level
PYLATE_MARKERS = (*PYLATE_KNOBS, "do_query_expansion", "attend_to_expansion_tokens", "attend_to_mask_tokens",
                  "query_prefix", "document_prefix", "skiplist_words")


@dataclass(frozen=True)
class QueryExpansion:
    """ColBERT's query expansion (sentence-transformers' QueryExpansionConfig): queries shorter than `length`
    tokens get expansion tokens appended up to it."""

    strategy: str   # "fixed": queries are cut at `length` too; "min": longer queries are kept whole
    attend: bool    # whether attention sees the expansion tokens (False: they look at the text, unseen)
    token_id: int   # the token appended: the tokenizer's mask token unless the folder names another
    length: int


@dataclass(frozen=True)
class MultiVectorConfig:
    transformer: Path                     # folder with config.json, model.safetensors, tokenizer.json
    dense: tuple[DenseSpec, ...]          # token-level projections, in order
    normalize: bool                       # L2-normalize each token vector
    masking: bool                         # a MultiVectorMask: expansion tokens scored, skiplist applied
    skiplist_words: tuple[str, ...]       # tokens dropped from scoring for skiplist_tasks
    skiplist_tasks: tuple[str, ...]       # "document" (also what encode() without a task counts as), "query"
    keep_only_token_ids: tuple[int, ...]  # if given, all but these are dropped from non-query scoring
    max_seq_length: int | None            # tokens kept per text when no task length applies
    lowercase: bool
    query_length: int | None
    document_length: int | None
    query_expansion: dict | None          # as saved; resolved against the tokenizer in from_pretrained
    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity_fn_name: str | None        # as the folder says (MultiVectorEncoder falls back to "maxsim")
    prefix_tokens: tuple[str, ...]        # PyLate's markers, e.g. "[Q] ", made special tokens as ST does


# reproduces sentence-transformers v6.2 MultiVectorEncoder._parse_model_config (PyLate's top-level settings)
def pylate_settings(extras: dict) -> tuple[dict, dict[str, str]]:
    """The Transformer settings (defaults under sentence_bert_config.json's) and the prompts' prefixes that a
    PyLate config_sentence_transformers.json carries; nothing for a sentence-transformers save."""
    knobs = {k: extras[k] for k in PYLATE_KNOBS if k in extras and (extras[k] is not None or k == "query_expansion")}
    if "query_expansion" not in knobs and any(k in extras for k in PYLATE_MARKERS):
        if extras.get("do_query_expansion") is False:
            knobs["query_expansion"] = None
        else:  # PyLate pads queries to query_length with [MASK]: the expansion length, no longer a cap
            attend = extras.get("attend_to_expansion_tokens", extras.get("attend_to_mask_tokens"))
            length = knobs.pop("query_length", None) or extras.get("query_length") or 32
            knobs["query_expansion"] = {"strategy": "fixed", "attend": bool(attend), "length": length}
    prefixes = {task: extras[key] or "" for key, task in (("query_prefix", "query"), ("document_prefix", "document"))
                if key in extras}
    return knobs, prefixes


def read_token_dense(folder: Path, converting: bool) -> DenseSpec:
    config = read_json_object(folder / "config.json")
    name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if name not in DENSE_ACTIVATIONS:
        raise ValueError(f"{folder}/config.json: unsupported activation_function {name!r}; minienc supports "
                         f"{sorted(DENSE_ACTIVATIONS)}")
    source = config.get("module_input_name", "token_embeddings")  # ST's default for a multi-vector Dense
    if converting and source == "sentence_embedding":  # a sentence-level Dense is moved to the tokens
        source = config["module_output_name"] = "token_embeddings"
    if config.get("use_residual") or (source, config.get("module_output_name", source)) != ("token_embeddings",) * 2:
        raise ValueError(f"{folder}/config.json: minienc supports a Dense from token_embeddings to token_embeddings "
                         f"without use_residual")
    return DenseSpec(folder, config["in_features"], config["out_features"], config.get("bias", True),
                     DENSE_ACTIVATIONS[name])


def read_modules(modules_file: Path, knobs: dict, converting: bool
                 ) -> tuple[Path, dict, list[DenseSpec], bool, dict | None]:
    """modules.json's modules, read: the Transformer's folder and settings (its saved config over PyLate's top-level
    knobs), the Dense projections, whether a token-level Normalize is there, and the MultiVectorMask's config."""
    transformer, settings, dense, normalize, mask = None, {}, [], False, None
    for full_type, kind, path in module_list(modules_file):
        if kind not in MODULE_KINDS or (kind == "Pooling" and not converting):
            raise ValueError(f"{modules_file}: module type {full_type!r} is not supported by minienc's "
                             f"multi-vector encoder (supported: Transformer, Dense, MultiVectorMask, Normalize)")
        file = path / ("sentence_bert_config.json" if kind == "Transformer" else "config.json")
        config = read_json_object(file) if file.is_file() else {}
        if kind == "Transformer":
            transformer = path
            settings = {**knobs, **config}  # the saved module config wins over PyLate's top-level values
            if settings.get("transformer_task", "feature-extraction") != "feature-extraction":
                raise ValueError(f"{path}: transformer_task {settings['transformer_task']!r} is not supported")
        elif kind == "Dense":
            dense.append(read_token_dense(path, converting))
        elif kind == "MultiVectorMask":
            mask = config
        elif kind == "Normalize":  # one on sentence_embedding reads nothing in a multi-vector pipeline
            normalize = normalize or config.get("module_input_name") == "token_embeddings"
    if transformer is None or (converting and not dense):
        raise ValueError(f"{modules_file}: a multi-vector model needs a Transformer and (converting a "
                         f"sentence-transformers folder) a Dense head; sentence-transformers would add a randomly "
                         f"initialized one")
    return transformer, settings, dense, normalize, mask


def read_multivector_folder(folder: Path) -> MultiVectorConfig:
    """A MultiVectorEncoder folder, a PyLate one, or a sentence-transformers one with a Dense head (converted as
    sentence-transformers converts it); anything else is a ValueError saying why."""
    extras_file, modules_file = folder / "config_sentence_transformers.json", folder / "modules.json"
    extras = read_json_object(extras_file) if extras_file.is_file() else {}
    if not modules_file.is_file():
        raise ValueError(f"{folder} has no modules.json: sentence-transformers would add a randomly initialized "
                         f"projection (or, for a Stanford ColBERT checkpoint, read its pickled one); minienc reads "
                         f"MultiVectorEncoder and PyLate folders only")
    model_type = extras.get("model_type", "SentenceTransformer")
    converting = model_type == "SentenceTransformer"
    if model_type not in ("MultiVectorEncoder", "ColBERT", "SentenceTransformer"):
        raise ValueError(f"{extras_file}: model_type {model_type!r} is not a multi-vector model")
    knobs, prefixes = pylate_settings(extras)
    transformer, settings, dense, normalize, mask = read_modules(modules_file, knobs, converting)
    if mask is None and (converting or model_type == "ColBERT"):  # ST appends a mask and a token-level Normalize
        normalize = True
        words = extras.get("skiplist_words")
        mask = {"skiplist_words": list(string.punctuation) if words is None and (prefixes or not converting) else words}
    masking, mask = mask is not None, mask or {}
    tasks = mask.get("skiplist_tasks") or ["document"]
    prompts = dict(extras.get("prompts") or {})
    for task, prefix in prefixes.items():  # PyLate's marker goes before the prompt's own text
        prompts[task] = prefix + (prompts.get(task) or "").removeprefix(prefix)
    return MultiVectorConfig(
        transformer=transformer, dense=tuple(dense), normalize=normalize, masking=masking,
        skiplist_words=tuple(mask.get("skiplist_words") or ()),
        skiplist_tasks=(tasks,) if isinstance(tasks, str) else tuple(tasks),
        keep_only_token_ids=tuple(mask.get("keep_only_token_ids") or ()),
        max_seq_length=settings.get("max_seq_length"), lowercase=settings.get("do_lower_case", False),
        query_length=settings.get("query_length"), document_length=settings.get("document_length"),
        query_expansion=settings.get("query_expansion"),
        prompts={"query": "", "document": "", **{k: v or "" for k, v in prompts.items()}},
        default_prompt_name=extras.get("default_prompt_name"),
        similarity_fn_name=extras.get("similarity_fn_name"),
        prefix_tokens=tuple(prefixes.values()),
    )


def special_token(folder: Path, name: str) -> str | None:
    """tokenizer_config.json's (or special_tokens_map.json's) mask_token / eos_token, e.g. "[MASK]"."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        value = read_json_object(folder / file).get(name) if (folder / file).is_file() else None
        if value is not None:
            return value["content"] if isinstance(value, dict) else value
    return None


# reproduces sentence-transformers v6.2 Transformer._normalize_query_expansion and _validate_query_expansion_token
def resolve_expansion(saved: dict | None, tokenizer: Tokenizer, folder: Path, query_length: int | None
                      ) -> QueryExpansion | None:
    if saved is None:
        return None
    if set(saved) - EXPANSION_KEYS or saved.get("strategy") not in ("fixed", "min"):
        raise ValueError(f"{folder}: query_expansion {saved} needs strategy 'fixed' or 'min' and only the keys "
                         f"{sorted(EXPANSION_KEYS)}")
    length, attend = saved.get("length"), saved.get("attend", False)
    if not isinstance(length, int) or isinstance(length, bool) or length < 1 or not isinstance(attend, bool):
        raise ValueError(f"{folder}: query_expansion needs a positive int length and a bool attend, got {saved}")
    if query_length is not None and query_length < length:
        raise ValueError(f"{folder}: query_length {query_length} is smaller than the query_expansion length {length}")
    token = saved.get("token") or special_token(folder, "mask_token") or special_token(folder, "eos_token")
    token_id = None if token is None else tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"{folder}: query_expansion token {token!r} is not in the tokenizer's vocabulary; name one "
                         f"in sentence_bert_config.json's query_expansion 'token'")
    return QueryExpansion(saved["strategy"], attend, token_id, length)


# reproduces sentence-transformers v6.2 MultiVectorEncoder._register_prefix_tokens
def register_prefix_tokens(tokenizer: Tokenizer, prefixes: tuple[str, ...]) -> None:
    """Make a PyLate marker ("[Q] ", "[unused0] ") a special token matched on the raw text, so that prepending it
    as text gives the one token PyLate inserted; a marker the vocabulary lacks stays plain text."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    found = []
    for value in (p for p in prefixes if p.split()):
        for prefix in (value, value.split(None, 1)[0]):
            if prefix in vocab:
                if tokenizer.encode(prefix, add_special_tokens=False).tokens != [prefix]:
                    found.append(AddedToken(prefix, normalized=False, special=True))
                break
    if found:
        tokenizer.add_special_tokens(found)
