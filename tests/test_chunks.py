"""Long documents in overlapping windows: nothing truncated, each window embedded as sentence-transformers would
embed those tokens, and the aggregates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import minienc
from minienc.heads.chunks import best_window

from .test_packed import corpus

LONG = " ".join(corpus(40, seed=5))  # some thousands of tokens


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return minienc.SentenceEncoder.from_pretrained(minilm_dir), SentenceTransformer(str(minilm_dir), device="cpu")


def test_windows_cover_the_whole_text(minilm):
    model, _ = minilm
    tokenizer = model.tokenizer
    tokenizer.max_length = 10_000
    try:
        whole = tokenizer.tokenize([LONG])[0].ids[1:-1].tolist()  # without [CLS] / [SEP]
    finally:
        tokenizer.max_length = 256
    windows = tokenizer.windows([LONG], size=64, overlap=16)[0]
    assert len(whole) > 1000 and all(len(w.ids) <= 64 for w in windows)
    rebuilt = windows[0].ids[1:-1].tolist()
    for w in windows[1:]:
        inner = w.ids[1:-1].tolist()
        assert inner[:16] == rebuilt[-16:]  # each window starts 16 tokens before the last one ended
        rebuilt += inner[16:]
    assert rebuilt == whole
    assert tokenizer.max_length == 256  # the encode() limit is left as it was


def test_each_window_is_embedded_as_sentence_transformers_would(minilm):
    model, st = minilm
    windows = model.tokenizer.windows([LONG], size=128, overlap=32)[0]
    got = model.encode_chunks(LONG, chunk_size=128, overlap=32, aggregate=None)
    assert got.shape == (len(windows), 384)
    ids = [torch.from_numpy(w.ids).long() for w in windows]
    batch = {"input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)}
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1])[None] < torch.tensor([len(i) for i in ids])[:, None]).long()
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    with torch.inference_mode():
        expected = st(batch)["sentence_embedding"].numpy()
    assert np.abs(got - expected).max() <= 1e-6  # packed execution: within 1e-6 of sentence-transformers


def test_aggregates_and_short_texts(minilm):
    model, _ = minilm
    texts = [LONG, "a short text", LONG[: len(LONG) // 3]]
    per_text = model.encode_chunks(texts, aggregate=None)
    mean = model.encode_chunks(texts)
    assert [len(v) for v in per_text][1] == 1 and len(per_text[0]) > len(per_text[2]) > 1
    assert np.array_equal(per_text[1][0], model.encode("a short text"))  # one window: the text as encode() sees it
    for windows, vector in zip(per_text, mean):
        normalized = windows / np.linalg.norm(windows, axis=1, keepdims=True)
        # within float32 rounding: NumPy's mean and normalization sum in another order than torch's
        np.testing.assert_allclose(vector, normalized.mean(axis=0), rtol=0, atol=1e-6)
    assert best_window(model.encode("a short text"), per_text[1]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(chunk_size=600), "chunk_size must be from 3 to the model's 512 positions"),
    (dict(chunk_size=64, overlap=40), "overlap must be from 0 to half of a window's 62 text tokens"),
    (dict(chunk_size=4, overlap=2), "overlap must be from 0 to half of a window's 2 text tokens"),
    (dict(aggregate="max"), "aggregate must be one of"),
    (dict(chunk_size=0), "chunk_size must be from 3 to the model's 512 positions, got 0"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(token_budget=0), "token_budget must be a positive integer, got 0"),
])
def test_bad_arguments(minilm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        minilm[0].encode_chunks("text", **kwargs)


def test_smallest_windows_and_no_text(minilm):
    model = minilm[0]
    assert model.encode_chunks("a b c d e", chunk_size=4, overlap=1, aggregate=None).shape[1] == 384
    assert model.encode_chunks([]).shape == (0, 384) and model.encode_chunks([]).dtype == np.float32
