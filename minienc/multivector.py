"""Multi-vector (ColBERT, late-interaction) embeddings: one vector per token, and MaxSim to score them.

Reproduces sentence-transformers v6.2 MultiVectorEncoder for the folders it saves, and for those it converts on
loading: PyLate's (config_sentence_transformers.json model_type "ColBERT") and a sentence-transformers model with a
Dense head (its pooling dropped, the Dense applied to every token). One text's path:

    text -> prompt prepended as text: the folder's "query" / "document" prompt, e.g. "[Q] " / "[D] "
         -> tokens, cut at the task's length (query_length / document_length, else max_seq_length)
         -> queries with query expansion: [MASK] tokens appended up to the expansion length; attention sees them
            or not (attend), but they always get vectors, which ColBERT scores like the query's own tokens
         -> Encoder (minienc/model.py) -> last hidden states (n, H)
         -> Dense projection(s) (n, D)
         -> scoring mask: documents drop their skiplist tokens (punctuation, in PyLate's models)
         -> L2-normalize each token vector -> (n_kept, D)

Scoring: MaxSim(q, d) = sum over q's token vectors of the largest dot product with any of d's; "meanmaxsim"
divides it by q's number of tokens. The encoder and tokenizer are a SentenceEncoder's (minienc/sentence.py), so
packed execution is the default; execution="padded" runs sentence-transformers' padded batches. Queries expanded
with attend=False always run padded: their [MASK] tokens read the text but the text must not read them, which
a packed row (one text, everything visible) cannot express; so do RoBERTa-family queries expanded with the pad
token, which transformers gives the padding position.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer
from torch import nn

from .batching import batches, check_options, check_texts, progress_bar, report_truncation, to_numpy
from .checkpoint import read_json, resolve_model_dir
from .devices import check_device
from .model import Encoder
from .packed import pack
from .pooling import l2_normalize
from .sentence import ROW_BLOCK, Dense, SentenceEncoder, default_matmul
from .sentence_folder import DENSE_ACTIVATIONS, DenseSpec, SentenceConfig
from .similarity import Embeddings
from .tokenizer import TextTokenizer, Tokens

# what each saved module type becomes; Pooling and a sentence-level Normalize occur only in a sentence-transformers
# folder converted to multi-vector, where sentence-transformers drops them
MODULE_KINDS = ("Transformer", "Dense", "MultiVectorMask", "Normalize", "Pooling")
EXPANSION_KEYS = {"strategy", "attend", "token", "length"}
PYLATE_KNOBS = ("query_length", "document_length", "query_expansion")  # PyLate keeps these at the top level
PYLATE_MARKERS = (*PYLATE_KNOBS, "do_query_expansion", "attend_to_expansion_tokens", "attend_to_mask_tokens",
                  "query_prefix", "document_prefix", "skiplist_words")
EMPTY_DOCUMENT_SCORE = -1e9  # sentence-transformers' score for a document with no token left to match


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
    similarity_fn_name: str
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
    config = read_json(folder / "config.json")
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


def read_multivector_folder(folder: Path) -> MultiVectorConfig:
    """A MultiVectorEncoder folder, a PyLate one, or a sentence-transformers one with a Dense head (converted as
    sentence-transformers converts it); anything else is a ValueError saying why."""
    extras_file, modules_file = folder / "config_sentence_transformers.json", folder / "modules.json"
    extras = read_json(extras_file) if extras_file.is_file() else {}
    if not modules_file.is_file():
        raise ValueError(f"{folder} has no modules.json: sentence-transformers would add a randomly initialized "
                         f"projection (or, for a Stanford ColBERT checkpoint, read its pickled one); minienc reads "
                         f"MultiVectorEncoder and PyLate folders only")
    model_type = extras.get("model_type", "SentenceTransformer")
    converting = model_type == "SentenceTransformer"
    if model_type not in ("MultiVectorEncoder", "ColBERT", "SentenceTransformer"):
        raise ValueError(f"{extras_file}: model_type {model_type!r} is not a multi-vector model")
    knobs, prefixes = pylate_settings(extras)
    transformer, settings, dense, normalize, mask = None, {}, [], False, None
    for module in read_json(modules_file):
        kind, path = module["type"].rsplit(".", 1)[-1], folder / module.get("path", "")
        if kind not in MODULE_KINDS or (kind == "Pooling" and not converting):
            raise ValueError(f"{modules_file}: module type {module['type']!r} is not supported by minienc's "
                             f"multi-vector encoder (supported: Transformer, Dense, MultiVectorMask, Normalize)")
        file = path / ("sentence_bert_config.json" if kind == "Transformer" else "config.json")
        config = read_json(file) if file.is_file() else {}
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
    if mask is None and (converting or model_type == "ColBERT"):  # ST appends a mask and a token-level Normalize
        normalize = True
        words = extras.get("skiplist_words")
        mask = {"skiplist_words": list(string.punctuation) if words is None and (prefixes or not converting) else words}
    masking, mask = mask is not None, mask or {}
    tasks = mask.get("skiplist_tasks") or ["document"]
    prompts = dict(extras.get("prompts") or {})
    for task, prefix in prefixes.items():  # PyLate's marker goes before the prompt's own text
        prompts[task] = prefix + (prompts.get(task) or "").removeprefix(prefix)
    name = extras.get("similarity_fn_name")
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
        similarity_fn_name=name if name in MULTIVECTOR_SIMILARITIES else "maxsim",
        prefix_tokens=tuple(prefixes.values()),
    )


def special_token(folder: Path, name: str) -> str | None:
    """tokenizer_config.json's (or special_tokens_map.json's) mask_token / eos_token, e.g. "[MASK]"."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        value = read_json(folder / file).get(name) if (folder / file).is_file() else None
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


class MultiVectorEncoder(nn.Module):
    def __init__(self, sentence: SentenceEncoder, config: MultiVectorConfig, expansion: QueryExpansion | None):
        super().__init__()
        self.sentence = sentence  # the encoder, the tokenizer and the execution
        dtype = next(sentence.encoder.parameters()).dtype
        self.dense = nn.ModuleList(Dense(spec, dtype) for spec in config.dense).to(sentence.device)
        for layer in self.dense:
            layer.linear.matmul = sentence.encoder.kernel
        self.normalize, self.masking = config.normalize, config.masking
        self.query_length, self.document_length, self.query_expansion = (config.query_length, config.document_length,
                                                                         expansion)
        # expanded queries a packed row cannot hold: tokens attention must not see, or (RoBERTa family) the pad
        # token, which takes the padding position in transformers
        encoder_config = sentence.encoder.config
        self.queries_padded = expansion is not None and (not expansion.attend or (
            encoder_config.positions_from_input_ids and expansion.token_id == encoder_config.pad_token_id))
        vocab = sentence.tokenizer.tokenizer.get_vocab(with_added_tokens=True)  # a skiplist word not in it is unused
        self.skiplist_ids = torch.tensor(sorted({vocab[w] for w in config.skiplist_words if w in vocab}),
                                         dtype=torch.long)
        self.skiplist_tasks = config.skiplist_tasks
        self.keep_only_token_ids = torch.tensor(config.keep_only_token_ids, dtype=torch.long)
        self.prompts, self.default_prompt_name = dict(config.prompts), config.default_prompt_name
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not one of {sorted(self.prompts)}")
        self.similarity_fn_name = check_multivector_similarity(config.similarity_fn_name)

    @property
    def device(self) -> torch.device:
        return self.sentence.device

    def set_matmul(self, name: str, row_block: int | None = None) -> None:
        """The encoder's and the projections' kernel (minienc/matmul.py), as SentenceEncoder.set_matmul."""
        self.sentence.set_matmul(name, row_block)
        for layer in self.dense:
            layer.linear.matmul = self.sentence.encoder.kernel

    def get_embedding_dimension(self) -> int:
        """The length of each token vector."""
        return self.dense[-1].linear.out_features if len(self.dense) else self.sentence.encoder.config.hidden_size

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text where no query_length / document_length / expansion length applies."""
        return self.sentence.max_seq_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        similarity_fn_name: str | None = None,
        attention: str = "sdpa",
        execution: str = "packed",
        matmul: str | None = None,
        row_block: int | None = ROW_BLOCK,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
    ) -> MultiVectorEncoder:
        """Load a MultiVectorEncoder or PyLate folder (or Hub repo id, e.g. answerdotai/answerai-colbert-small-v1).
        The options are SentenceEncoder.from_pretrained's; similarity_fn_name "maxsim" or "meanmaxsim"."""
        device = check_device(device)
        config = read_multivector_folder(resolve_model_dir(name_or_path, revision=revision))
        folder = config.transformer
        matmul = matmul or default_matmul(execution, device)
        encoder = Encoder.from_pretrained(folder, attention=attention, matmul=matmul, device=device, dtype=dtype)
        tokenizer_file = folder / "tokenizer_config.json"
        limit = read_json(tokenizer_file).get("model_max_length") if tokenizer_file.is_file() else None
        limit = limit if isinstance(limit, (int, float)) and limit < 1e9 else encoder.config.max_tokens
        length = config.max_seq_length or min(int(limit), encoder.config.max_tokens)  # as SentenceEncoder's
        tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", max_length=length,
                                            pad_token_id=encoder.config.pad_token_id, lowercase=config.lowercase)
        register_prefix_tokens(tokenizer.tokenizer, config.prefix_tokens)
        expansion = resolve_expansion(config.query_expansion, tokenizer.tokenizer, folder, config.query_length)
        sentence = SentenceEncoder(encoder, tokenizer, SentenceConfig(), execution=execution, row_block=row_block)
        model = cls(sentence, config, expansion)
        if similarity_fn_name is not None:
            model.similarity_fn_name = check_multivector_similarity(similarity_fn_name)
        return model

    def task_length(self, task: str | None) -> int:
        """Tokens kept per text for `task`, special tokens included (sentence-transformers' Transformer.preprocess)."""
        expansion = self.query_expansion if task == "query" else None
        if expansion is not None and expansion.strategy == "fixed":
            return expansion.length
        length = {"query": self.query_length, "document": self.document_length}.get(task or "")
        if expansion is not None and length is not None:
            return max(length, expansion.length)
        return length or self.max_seq_length

    def tokenize(self, texts: list[str], task: str | None) -> tuple[list[Tokens], list[int]]:
        """Each text's tokens, cut at the task's length and, for queries, expanded; and how many of them attention
        sees (all but the expansion tokens, when attend is False)."""
        tokenizer = self.sentence.tokenizer
        default, tokenizer.max_length = tokenizer.max_length, self.task_length(task)
        try:
            tokenized = tokenizer.tokenize(texts)
        finally:
            tokenizer.max_length = default
        report_truncation(tokenized, self.task_length(task))
        expansion = self.query_expansion if task == "query" else None
        if expansion is None:
            return tokenized, [len(t.ids) for t in tokenized]
        expanded = []
        for t in tokenized:
            extra = max(expansion.length - len(t.ids), 0)
            expanded.append(Tokens(np.concatenate([t.ids, np.full(extra, expansion.token_id, dtype=np.int32)]),
                                   np.concatenate([t.type_ids, np.zeros(extra, dtype=np.int32)]), t.truncated))
        return expanded, [len(e.ids) if expansion.attend else len(t.ids) for t, e in zip(tokenized, expanded)]

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dense head(s), then normalization, on every token: (..., H) -> (..., D)."""
        for layer in self.dense:
            hidden = layer(hidden)
        return l2_normalize(hidden) if self.normalize else hidden

    def scoring_mask(self, ids: np.ndarray, attended: int, task: str | None) -> torch.Tensor:
        """(n,) bool: the tokens that keep a vector (sentence-transformers v6.2 MultiVectorMask.forward); without
        that module, the tokens attention saw."""
        ids = torch.from_numpy(ids).long()
        keep = torch.arange(len(ids)) < (len(ids) if self.masking else attended)
        if (task or "document") in self.skiplist_tasks and len(self.skiplist_ids):
            keep &= ~torch.isin(ids, self.skiplist_ids)
        if task != "query" and len(self.keep_only_token_ids):
            keep &= torch.isin(ids, self.keep_only_token_ids)
        return keep.to(self.device)

    @torch.inference_mode()
    def embed(self, texts: list[Tokens], attended: list[int], task: str | None) -> list[torch.Tensor]:
        """One batch through the pipeline: each text's token vectors, (n_kept, D). Text i's first attended[i]
        tokens are what attention sees; the rest (query expansion, attend=False) only look."""
        encoder = self.sentence.encoder
        if self.sentence.execution == "packed" and not (task == "query" and self.queries_padded):
            batch, spans = pack(texts, device=self.device)
            vectors = self.project(encoder(**batch, spans=spans))[0]  # (N, D): the texts end to end
            rows = [vectors[a:b] for a, b in spans]
        else:
            batch = self.sentence.tokenizer.pad(texts, device=self.device)
            for row, n in enumerate(attended):
                batch["attention_mask"][row, n:] = 0
            vectors = self.project(encoder(**batch))  # (B, T, D)
            rows = [vectors[row, : len(t.ids)] for row, t in enumerate(texts)]
        return [v[self.scoring_mask(t.ids, n, task)] for v, t, n in zip(rows, texts, attended)]

    def encode(
        self,
        sentences: str | list[str] | tuple[str, ...] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str = "token_embeddings",
        convert_to_numpy: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = False,
        *,
        task: str | None = None,
        token_budget: int = 2048,
    ) -> Any:
        """One (n_tokens, D) tensor per text (an array with convert_to_numpy), in input order; for one str, that
        tensor alone. task "query" / "document" picks the length, expansion and skiplist (encode_query /
        encode_document set it). Batches as SentenceEncoder.encode's."""
        if output_value != "token_embeddings":
            raise ValueError(f"output_value must be 'token_embeddings' (minienc returns no raw feature dicts), got "
                             f"{output_value!r}")
        texts, single = check_texts(sentences)
        check_options(output_value, batch_size, token_budget, "float32", device, self.device)
        prefix = self.prompt_text(prompt_name, prompt)
        tokenized, attended = self.tokenize([prefix + t for t in texts], task)
        found: list[Any] = [None] * len(texts)
        with progress_bar(show_progress_bar, len(texts)) as bar:
            for indices in batches([len(t.ids) for t in tokenized], self.sentence.execution == "packed",
                                   batch_size, token_budget):
                vectors = self.embed([tokenized[i] for i in indices], [attended[i] for i in indices], task)
                for i, v in zip(indices, vectors):
                    v = l2_normalize(v) if normalize_embeddings else v.clone()  # its own storage, not the batch's
                    found[i] = to_numpy(v) if convert_to_numpy else v
                bar.update(len(indices))
        return found[0] if single else found

    def encode_query(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> Any:
        """encode() as a query: the "query" prompt, query_length, query expansion."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name, prompt, task="query", **kwargs)

    def encode_document(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> Any:
        """encode() as a document: the first of the "document" / "passage" / "corpus" prompts, document_length,
        the skiplist."""
        if prompt_name is None and prompt is None:
            prompt_name = next((p for p in ("document", "passage", "corpus") if p in self.prompts), None)
        return self.encode(sentences, prompt_name, prompt, task="document", **kwargs)

    def prompt_text(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is not None and name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts {sorted(self.prompts)}")
        return "" if name is None else self.prompts[name]

    def similarity(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name (maxsim unless the folder says meanmaxsim) of every query in a with every document
        in b: (n_a, n_b) float32."""
        return MULTIVECTOR_SIMILARITIES[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a: Embeddings, b: Embeddings) -> torch.Tensor:
        """similarity_fn_name of a[i] with b[i]: (n,) float32."""
        return MULTIVECTOR_SIMILARITIES[self.similarity_fn_name][1](a, b)


# --- scoring --------------------------------------------------------------------------------------------------------


def token_matrices(x: Embeddings) -> list[torch.Tensor]:
    """Multi-vector embeddings as a list of (n_i, D) float tensors, from: a list of tensors or arrays; one (n, D)
    matrix (one item); or a padded (B, T, D) tensor whose all-zero rows are padding (sentence-transformers' rule).
    Half precision and integer (quantized) values are widened to float32."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        if x.dim() not in (2, 3):
            raise ValueError(f"multi-vector embeddings are (tokens, dim) or (items, tokens, dim), got {tuple(x.shape)}")
        items = [x] if x.dim() == 2 else [row[row.ne(0).any(dim=-1)] for row in x]
    else:
        items = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in x]
    return [v if v.is_floating_point() and torch.finfo(v.dtype).bits >= 32 else v.float() for v in items]


# reproduces sentence-transformers v6.2 util/similarity.py maxsim / _maxsim_score_documents (one query at a time)
def maxsim(a: Embeddings, b: Embeddings, length_normalize: bool = False) -> torch.Tensor:
    """(n_a, n_b) float32: sum over each query's tokens of the max dot product with any of the document's tokens.
    A document with no tokens scores EMPTY_DOCUMENT_SCORE; length_normalize divides by the query's token count."""
    queries, documents = token_matrices(a), token_matrices(b)
    device = documents[0].device if documents else torch.device("cpu")
    scores = torch.zeros(len(queries), len(documents), dtype=torch.float32, device=device)
    if not queries or not documents:
        return scores
    lengths = torch.tensor([len(d) for d in documents], device=device)
    padded = nn.utils.rnn.pad_sequence(documents, batch_first=True)  # (n_b, T, D), zero padding
    padding = torch.arange(padded.shape[1], device=device)[None, :] >= lengths[:, None]  # (n_b, T)
    for i, query in enumerate(queries):
        if padded.shape[1] == 0 or len(query) == 0:
            continue  # nothing to match: 0, or the empty-document score below
        dots = torch.einsum("sh,bth->bst", query.to(device), padded)  # (n_b, s, T)
        dots.masked_fill_(padding[:, None, :], torch.finfo(dots.dtype).min)  # padding never wins the max
        scores[i] = dots.max(dim=-1).values.float().sum(dim=-1)
    scores[:, lengths == 0] = EMPTY_DOCUMENT_SCORE
    if length_normalize:
        scores /= torch.tensor([max(len(q), 1) for q in queries], dtype=torch.float32, device=device)[:, None]
    return scores


def maxsim_pairwise(a: Embeddings, b: Embeddings, length_normalize: bool = False) -> torch.Tensor:
    """(n,) float32: maxsim of a[i] with b[i] (sentence-transformers v6.2 maxsim_pairwise)."""
    queries, documents = token_matrices(a), token_matrices(b)
    if len(queries) != len(documents):
        raise ValueError(f"pairwise scoring needs as many queries as documents, got {len(queries)} and "
                         f"{len(documents)}")
    return torch.stack([maxsim([q], [d], length_normalize)[0, 0] for q, d in zip(queries, documents)]) if queries \
        else torch.zeros(0)


def mean_maxsim(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return maxsim(a, b, length_normalize=True)


def mean_maxsim_pairwise(a: Embeddings, b: Embeddings) -> torch.Tensor:
    return maxsim_pairwise(a, b, length_normalize=True)


# similarity_fn_name -> (all pairs, pairwise), the names sentence-transformers' MultiVectorEncoder accepts
MULTIVECTOR_SIMILARITIES = {"maxsim": (maxsim, maxsim_pairwise), "meanmaxsim": (mean_maxsim, mean_maxsim_pairwise)}


def check_multivector_similarity(name: str) -> str:
    if name not in MULTIVECTOR_SIMILARITIES:
        raise ValueError(f"a multi-vector model scores with {sorted(MULTIVECTOR_SIMILARITIES)}, not {name!r} "
                         f"(cosine, dot, ... compare one vector per text)")
    return name
