"""SparseEncoder: text in, one SPLADE vector per text out, as wide as the vocabulary and mostly zeros.

SPLADE reads a text with a masked-language model and keeps, for every vocabulary entry, how strongly any of the
text's tokens predicts it: tokenize -> Encoder -> masked-LM head, a score per (token, vocabulary entry) ->
log(1 + relu(score)) -> max (or sum) over the text's tokens -> a (vocab,) vector whose non-zeros are weighted terms
(`decode` names them). Two texts compare by dot product.

Reproduces sentence-transformers v6.2 SparseEncoder with MLMTransformer / Transformer("fill-mask") + SpladePooling,
e.g. naver/splade-v3: the head is transformers v5.24 BertLMPredictionHead (RobertaLMHead for the RoBERTa family),
the pooling is SpladePooling. Reads the folders sentence-transformers saves (modules.json) and plain
*ForMaskedLM folders, which it reads as SpladePooling("max") as sentence-transformers does. The tokenizer, the
encoder, prompts and the two executions (packed, padded) are SentenceEncoder's (minienc/sentence.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .batching import check_options, check_texts, progress_bar, report_truncation
from .checkpoint import (LEGACY_SUFFIXES, CheckpointError, bad_weight, read_json_object, read_safetensors,
                         resolve_model_dir, weight_files)
from .config import EncoderConfig
from .devices import check_device
from .model import Encoder, Linear
from .packed import run_packed
from .sentence import EXECUTIONS, ROW_BLOCK, SentenceEncoder, default_matmul
from .sentence_folder import SentenceConfig, module_list, setting, text_length, tokenizer_limit
from .similarity import SIMILARITIES, check_pairwise, check_similarity
from .tokenizer import TextTokenizer, Tokens

# checkpoint name -> our name in MLMHead, per family. "bias" and "decoder.bias" are one tensor tied in transformers
# (either or both may be stored); "decoder.weight" is stored when untied, and by some older checkpoints when tied.
HEAD_KEYS: dict[str, dict[str, str]] = {
    "bert": {
        "cls.predictions.transform.dense.weight": "dense.weight",
        "cls.predictions.transform.dense.bias": "dense.bias",
        "cls.predictions.transform.LayerNorm.weight": "norm.weight",
        "cls.predictions.transform.LayerNorm.bias": "norm.bias",
        "cls.predictions.bias": "bias",
        "cls.predictions.decoder.bias": "decoder.bias",
        "cls.predictions.decoder.weight": "decoder.weight",
    },
    "roberta": {
        "lm_head.dense.weight": "dense.weight",
        "lm_head.dense.bias": "dense.bias",
        "lm_head.layer_norm.weight": "norm.weight",
        "lm_head.layer_norm.bias": "norm.bias",
        "lm_head.bias": "bias",
        "lm_head.decoder.bias": "decoder.bias",
        "lm_head.decoder.weight": "decoder.weight",
    },
}
HEAD_KEYS["xlm-roberta"] = HEAD_KEYS["roberta"]
# the activation between the head's dense layer and its LayerNorm: BERT's is config.hidden_act; RobertaLMHead and
# XLMRobertaLMHead call gelu whatever the config says
HEAD_ACTIVATION: dict[str, Callable[[EncoderConfig], str]] = {
    "bert": lambda config: config.hidden_act,
    "roberta": lambda config: "gelu",
    "xlm-roberta": lambda config: "gelu",
}


# reproduces transformers v5.24 BertLMPredictionHead (BertPredictionHeadTransform + decoder) and RobertaLMHead
class MLMHead(nn.Module):
    """Token vectors (..., H) -> a score per vocabulary entry (..., V): decoder(LayerNorm(act(dense(x))))."""

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, layer_norm_eps: float,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size, activation=activation, dtype=dtype)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, dtype=dtype)
        self.decoder = Linear(hidden_size, vocab_size, dtype=dtype)  # weight: the word embeddings, unless untied

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.dense(hidden)  # (..., H): activation(x @ W.T + b)
        x = self.norm(x)
        return self.decoder(x)  # (..., V)

    @classmethod
    def from_checkpoint(cls, folder: Path, encoder: Encoder) -> MLMHead:
        """The head stored beside `encoder` in `folder`, on its device and in its dtype; its decoder shares the
        word-embedding table unless the checkpoint stores its own decoder weight."""
        config, word = encoder.config, encoder.embeddings.word.weight
        tensors = read_head_tensors(folder, config.model_type)
        with torch.device("meta"):  # shapes only: the checkpoint supplies every value
            head = cls(config.hidden_size, config.vocab_size, HEAD_ACTIVATION[config.model_type](config),
                       config.layer_norm_eps, word.dtype)
        expected = {name: t.shape for name, t in head.state_dict().items()}
        wrong = [f"{name} {tuple(t.shape)}, expected {tuple(expected[name])}" for name, t in tensors.items()
                 if t.shape != expected[name]]
        if wrong:
            raise CheckpointError(f"{folder}: masked-LM head tensors (minienc names) of the wrong shape for its "
                                  f"config.json: {'; '.join(wrong)}")
        tensors = {name: t.to(word.dtype) for name, t in tensors.items()}
        head.load_state_dict({"decoder.weight": word, **tensors}, strict=True, assign=True)
        if "decoder.weight" not in tensors:
            head.decoder.weight = word  # tied: one tensor, not a copy
        return head.to(word.device).eval()


def read_head_tensors(folder: Path, model_type: str) -> dict[str, torch.Tensor]:
    """The masked-LM head's tensors in `folder`, under MLMHead's names, as transformers v5 loads them: the decoder
    adds its own stored bias if there is one, else the head's; its weight is stored only when untied."""
    table = HEAD_KEYS[model_type]
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


# reproduces sentence-transformers v6.2 SpladePooling: the activation, then max or sum over the text's tokens.
# In place on the (tokens, V) scores, which are as large as the text times the vocabulary, as SpladePooling does.
SPLADE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda scores: scores.relu_().log1p_(),  # log(1 + relu(x)): every SPLADE model
    "log1p_relu": lambda scores: scores.relu_().log1p_().log1p_(),  # log(1 + log(1 + relu(x))): OpenSearch's
}
SPLADE_POOLERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "max": lambda scores, dim: scores.amax(dim),  # SPLADE v2 and later
    "sum": lambda scores, dim: scores.sum(dim),  # the first SPLADE
}


# reproduces sentence-transformers v6.2 util.select_max_active_dims
def keep_largest(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) -> a copy with all but the k largest values (in absolute terms) of each row set to zero."""
    _, top = torch.topk(vectors.abs(), k=min(k, vectors.shape[-1]), dim=-1)  # (B, k)
    kept = torch.zeros_like(vectors)
    return kept.scatter_(-1, top, vectors.gather(-1, top))


@dataclass(frozen=True)
class SparseFolder:
    """What a sparse model folder says: where the masked-LM checkpoint is, and the settings around it."""

    model_folder: Path                       # config.json, weights and tokenizer.json of the *ForMaskedLM model
    pooling: str = "max"                     # a SPLADE_POOLERS name
    activation: str = "relu"                 # a SPLADE_ACTIVATIONS name
    sentence: SentenceConfig = field(default_factory=SentenceConfig)  # text length, lowercasing, prompts
    similarity_fn_name: str = "dot"          # a minienc/similarity.py name; sparse-aware here (SPARSE_SIMILARITIES)
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
    similarity = extras.get("similarity_fn_name")
    return SparseFolder(
        model_folder=model_folder, pooling=pooling, activation=activation,
        sentence=SentenceConfig(
            max_seq_length=setting(settings, "max_seq_length", int, None, settings_file),
            lowercase=setting(settings, "do_lower_case", bool, False, settings_file),
            tokenizer_max_length=tokenizer_limit(model_folder),
            prompts={name: text or "" for name, text in (extras.get("prompts") or {}).items()},
            default_prompt_name=extras.get("default_prompt_name")),
        similarity_fn_name=similarity if similarity in SIMILARITIES else "dot",  # as sentence-transformers
        max_active_dims=extras.get("max_active_dims"),
    )


def check_max_active_dims(k: int | None) -> int | None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise ValueError(f"max_active_dims must be a positive integer or None, got {k!r}")
    return k


class SparseEncoder(nn.Module):
    """A SentenceEncoder's tokenizer and encoder, the masked-LM head and SPLADE pooling: encode() gives one sparse
    (vocab,) vector per text, decode() names its terms, similarity() scores them (dot product by default)."""

    def __init__(self, sentence: SentenceEncoder, head: MLMHead, pooling: str = "max", activation: str = "relu",
                 similarity_fn_name: str = "dot", max_active_dims: int | None = None):
        super().__init__()
        self.sentence = sentence  # tokenizer, encoder, prompts and execution
        self.head = head
        self.pooling, self.activation = pooling, activation
        self.similarity_fn_name = check_similarity(similarity_fn_name)
        self.max_active_dims = check_max_active_dims(max_active_dims)
        self.head.dense.matmul = self.head.decoder.matmul = sentence.encoder.kernel  # as SentenceEncoder's Dense

    @property
    def encoder(self) -> Encoder:
        return self.sentence.encoder

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.sentence.tokenizer

    @property
    def device(self) -> torch.device:
        return self.sentence.device

    @property
    def max_seq_length(self) -> int:
        return self.sentence.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.sentence.max_seq_length = value

    def get_embedding_dimension(self) -> int:
        """The length of encode()'s vectors: the vocabulary size."""
        return self.head.decoder.out_features

    def set_matmul(self, name: str, row_block: int | None = None) -> None:
        """The kernel of the encoder and of the head (minienc/matmul.py), in blocks of row_block rows if given."""
        self.sentence.set_matmul(name, row_block)
        self.head.dense.matmul = self.head.decoder.matmul = self.encoder.kernel

    @property
    @torch.inference_mode()
    def batch_invariant(self) -> bool:
        """Whether a text's vector is the same bits alone and in any batch (SentenceEncoder.batch_invariant)."""
        kernel = self.encoder.kernel
        return self.sentence.batch_invariant and all(kernel.check(layer.weight, layer.bias, layer.activation)
                                                     for layer in (self.head.dense, self.head.decoder))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        max_seq_length: int | None = None,
        similarity_fn_name: str | None = None,
        max_active_dims: int | None = None,
        attention: str = "sdpa",
        execution: str = "packed",
        matmul: str | None = None,
        row_block: int | str | None = ROW_BLOCK,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
    ) -> SparseEncoder:
        """Load a sentence-transformers sparse folder or a plain *ForMaskedLM one (a path, or a Hub repo id such as
        "naver/splade-v3"). The options are SentenceEncoder.from_pretrained's; padded execution gives
        sentence-transformers' bits, packed (the default) is within float32 rounding of them."""
        if execution not in EXECUTIONS:
            raise ValueError(f"unknown execution {execution!r}; choose one of {list(EXECUTIONS)}")
        device = check_device(device)
        spec = read_sparse_folder(resolve_model_dir(name_or_path, revision=revision))
        encoder = Encoder.from_pretrained(spec.model_folder, attention=attention, device=device, dtype=dtype,
                                          matmul=matmul or default_matmul(execution, device))
        head = MLMHead.from_checkpoint(spec.model_folder, encoder)
        length = text_length(spec.sentence.max_seq_length if max_seq_length is None else max_seq_length,
                             spec.sentence.tokenizer_max_length, encoder.config.max_tokens)
        tokenizer = TextTokenizer.from_file(spec.model_folder / "tokenizer.json", max_length=length,
                                            pad_token_id=encoder.config.pad_token_id, lowercase=spec.sentence.lowercase,
                                            vocab_size=encoder.config.vocab_size)
        sentence = SentenceEncoder(encoder, tokenizer, spec.sentence, execution=execution, row_block=row_block)
        return cls(sentence, head, spec.pooling, spec.activation, similarity_fn_name or spec.similarity_fn_name,
                   max_active_dims if max_active_dims is not None else spec.max_active_dims)

    @torch.inference_mode()
    def embed(self, texts: list[Tokens]) -> torch.Tensor:
        """One batch of tokenized texts -> their SPLADE vectors (B, V), dense."""
        activation, reduce = SPLADE_ACTIVATIONS[self.activation], SPLADE_POOLERS[self.pooling]
        if self.sentence.execution == "packed":
            hidden, spans = run_packed(self.encoder, texts, self.device)  # (N, H): the texts end to end
            scores = self.head(hidden)  # (N, V)
            return torch.stack([reduce(activation(scores[a:b]), 0) for a, b in spans])  # (B, V)
        batch = self.tokenizer.pad(texts, device=self.device)
        scores = self.head(self.encoder(**batch))  # (B, T, V)
        mask = batch["attention_mask"].unsqueeze(-1).to(scores.dtype)  # (B, T, 1): padding's scores become 0
        return reduce(activation(scores * mask), 1)  # (B, V)

    def encode(
        self,
        sentences: str | list[str] | tuple[str, ...] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_tensor: bool = True,
        convert_to_sparse_tensor: bool = True,
        save_to_cpu: bool = False,
        device: str | torch.device | None = None,
        max_active_dims: int | None = None,
        *,
        token_budget: int | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """sentence-transformers' SparseEncoder.encode, its arguments in its order: a list of texts -> a (n, V)
        sparse COO tensor (dense with convert_to_sparse_tensor=False; a list of rows with convert_to_tensor=False);
        one text -> a (V,) vector. max_active_dims (default: the model's) keeps each vector's largest values only.
        Batches: packed, up to token_budget tokens (batch_size unused); padded, batch_size texts by length."""
        token_budget = self.sentence.token_budget if token_budget is None else token_budget
        texts, single = check_texts(sentences)
        check_options("sentence_embedding", batch_size, token_budget, "float32", device, self.device)
        limit = check_max_active_dims(max_active_dims if max_active_dims is not None else self.max_active_dims)
        prefix = self.sentence.prompt_text(prompt_name, prompt)
        tokenized = self.tokenizer.tokenize([prefix + t for t in texts])
        report_truncation(tokenized, self.max_seq_length)
        rows: list[Any] = [None] * len(texts)
        with progress_bar(show_progress_bar, len(texts)) as bar:
            for indices in self.sentence.batches(tokenized, batch_size, token_budget, texts):
                vectors = self.embed([tokenized[i] for i in indices])  # (B, V)
                vectors = keep_largest(vectors, limit) if limit is not None else vectors
                vectors = vectors.to_sparse() if convert_to_sparse_tensor else vectors  # each batch: never n x V dense
                vectors = vectors.cpu() if save_to_cpu else vectors
                for i, row in zip(indices, vectors):
                    rows[i] = row
                bar.update(len(indices))
        if rows:
            stacked = torch.stack(rows)  # (n, V)
        else:  # as sentence-transformers: an empty 1-D tensor
            stacked = torch.tensor([], device="cpu" if save_to_cpu else self.device)
            stacked = stacked.to_sparse() if convert_to_sparse_tensor else stacked
        result = stacked if convert_to_tensor else list(stacked)
        return result[0] if single else result

    def encode_query(self, sentences, **kwargs) -> torch.Tensor | list[torch.Tensor]:
        """encode() with the model's "query" prompt, when it defines one."""
        return self.encode(sentences, **self.sentence.task_prompt("query", kwargs))

    def encode_document(self, sentences, **kwargs) -> torch.Tensor | list[torch.Tensor]:
        """encode() with the model's "document" prompt, when it defines one."""
        return self.encode(sentences, **self.sentence.task_prompt("document", kwargs))

    def similarity(self, a: Any, b: Any) -> torch.Tensor:
        """similarity_fn_name (dot unless the folder says otherwise) between every row of a and of b: dense (n, m)."""
        return SPARSE_SIMILARITIES[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a: Any, b: Any) -> torch.Tensor:
        """similarity_fn_name between a[i] and b[i]: (n,)."""
        return SPARSE_SIMILARITIES[self.similarity_fn_name][1](a, b)

    # reproduces sentence-transformers v6.2 SparseEncoder.decode
    def decode(self, vectors: torch.Tensor, top_k: int | None = None
               ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """A (V,) vector -> its (token, weight) pairs, largest weight first, at most top_k; a (n, V) batch -> a list
        of those per row. Sparse or dense; zeros are left out."""
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        if not isinstance(vectors, torch.Tensor):
            raise TypeError(f"decode() takes a torch.Tensor, got {type(vectors).__name__}")
        if vectors.dim() not in (1, 2):
            raise ValueError(f"decode() takes a (V,) vector or a (n, V) batch, got {vectors.dim()} dimensions")
        rows = vectors.unsqueeze(0) if vectors.dim() == 1 else vectors
        rows = (rows if rows.is_sparse else rows.to_sparse()).coalesce()  # row-major: each row's entries together
        (row_of, token_ids), weights = rows.indices(), rows.values()
        counts = torch.bincount(row_of, minlength=rows.shape[0]).tolist()
        decoded, start = [], 0
        for count in counts:
            ids, values = token_ids[start : start + count], weights[start : start + count]
            start += count
            if top_k is not None and top_k < count:
                values, order = torch.topk(values, top_k)
            else:
                order = torch.argsort(values, descending=True)
                values = values[order]
            tokens = [self.tokenizer.tokenizer.id_to_token(i) for i in ids[order].tolist()]
            decoded.append(list(zip(tokens, values.tolist())))
        return decoded[0] if vectors.dim() == 1 else decoded


def as_float(x: Any) -> torch.Tensor:
    """A float tensor, sparse kept sparse, from a tensor, an array or a list of either (one row each), half
    precision widened to float32 (as sentence-transformers v6.2 util._convert_to_float_tensor), and integers too."""
    if isinstance(x, (list, tuple)):
        rows = [v.coalesce().float() if isinstance(v, torch.Tensor) and v.is_sparse else torch.as_tensor(v) for v in x]
        x = torch.stack(rows) if rows else torch.empty(0)
    x = torch.as_tensor(x)
    return x.float() if not x.is_floating_point() or torch.finfo(x.dtype).bits < 32 else x


def as_rows(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as (rows, V), sparse kept sparse: one vector is one row; no vectors (the empty 1-D tensor encode()
    gives for no texts, or an empty list) are zero rows of the other's width."""
    a, b = as_float(a), as_float(b)
    a, b = (a.unsqueeze(0) if a.dim() == 1 and len(a) else a), (b.unsqueeze(0) if b.dim() == 1 and len(b) else b)
    a = a if len(a) else torch.zeros(0, b.shape[-1], device=b.device).to_sparse()
    b = b if len(b) else torch.zeros(0, a.shape[-1], device=a.device).to_sparse()
    return a, b


def dot(a: Any, b: Any) -> torch.Tensor:
    a, b = as_rows(a, b)
    return torch.mm(a, b.transpose(0, 1)).to_dense()  # sparse x sparse stays sparse until here


def pairwise_dot(a: Any, b: Any) -> torch.Tensor:
    a, b = as_float(a), as_float(b)
    check_pairwise(a, b)
    return (a * b).sum(dim=-1).to_dense()


def densified(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[Any, Any], torch.Tensor]:
    return lambda a, b: fn(as_float(a).to_dense(), as_float(b).to_dense())


# similarity_fn_name -> (all pairs (n, m), pairwise (n,)). Dot products keep sparse inputs sparse, as
# sentence-transformers v6.2 util.dot_score does; the others are minienc/similarity.py's, on dense copies.
SPARSE_SIMILARITIES = {
    "dot": (dot, pairwise_dot),
    **{name: (densified(all_pairs), densified(pairwise))
       for name, (all_pairs, pairwise) in SIMILARITIES.items() if name != "dot"},
}
