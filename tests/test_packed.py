"""Packed execution: close to the reference, and a text's vector independent of the batch it is encoded in."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

import minienc
from minienc.packed import MIN_ROWS, pack

from .test_sentence import TEXTS, st_folder

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def corpus(n: int, seed: int = 0) -> list[str]:
    """n texts of 1 to ~300 words drawn from a fixed vocabulary, with CJK and emoji among them."""
    rng = random.Random(seed)
    words = "the encoder reads every token attention mixes values 头痛 🙂 naïve pooling vector layer".split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 3, 8, 20, 60, 300]))) for _ in range(n)]


@pytest.fixture(scope="module")
def minilm_packed(minilm_dir):
    return minienc.SentenceEncoder.from_pretrained(minilm_dir)  # packed is the default


def test_packed_is_the_default(minilm_packed):
    assert minilm_packed.execution == "packed"


def test_within_1e6_of_sentence_transformers(minilm_packed, minilm_dir):
    """Packed attention sees each text alone, unpadded: the same math in other matrix shapes, so the last bits
    may differ. The promise: within 1e-6 of sentence-transformers, about 8 float32 ulps of these entries."""
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    texts = TEXTS + corpus(40)
    assert np.abs(minilm_packed.encode(texts) - st.encode(texts)).max() <= 1e-6
    for ours, theirs in zip(minilm_packed.encode(texts, output_value="token_embeddings"),
                            st.encode(texts, output_value="token_embeddings")):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)  # unnormalized hidden states, |x| up to ~10


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlm-roberta"])
def test_bundled_models_within_1e6(name):
    ours = minienc.SentenceEncoder.from_pretrained(WEIGHTS / name)
    st = SentenceTransformer(str(WEIGHTS / name), device="cpu")
    assert np.abs(ours.encode(TEXTS) - st.encode(TEXTS)).max() <= 1e-6


@pytest.mark.parametrize("matmul", ["default", "torch"])
def test_batch_invariance(minilm_packed, minilm_dir, matmul):
    """Alone, in a batch of 64, in a shuffled batch of 17, cut into many small batches: the same bits, with the
    packed default kernel (oneDNN where available) and with transformers' own."""
    if matmul != "default":
        minilm_packed = minienc.SentenceEncoder.from_pretrained(minilm_dir, matmul=matmul)
    texts = corpus(64, seed=1)
    in_64 = minilm_packed.encode(texts)
    alone = np.stack([minilm_packed.encode(t) for t in texts[:20]])
    assert np.array_equal(alone, in_64[:20])
    rng = random.Random(2)
    picked = rng.sample(range(64), 17)
    assert np.array_equal(minilm_packed.encode([texts[i] for i in picked]), in_64[picked])
    assert np.array_equal(minilm_packed.encode(texts, token_budget=50), in_64)  # every text its own small batch
    tokens_alone = minilm_packed.encode(texts[3], output_value="token_embeddings")
    assert torch.equal(tokens_alone, minilm_packed.encode(texts, output_value="token_embeddings")[3])


def test_batch_invariance_with_dense_and_xlmr(tmp_path):
    folder = st_folder(tmp_path, WEIGHTS / "tiny-xlm-roberta", Pooling(32, "cls"), Dense(32, 8), Normalize())
    model = minienc.SentenceEncoder.from_pretrained(folder)
    texts = corpus(30, seed=3)
    batch = model.encode(texts)
    assert np.array_equal(np.stack([model.encode(t) for t in texts]), batch)
    st = SentenceTransformer(str(folder), device="cpu")
    assert np.abs(batch - st.encode(texts)).max() <= 1e-6


def test_token_budget_batches(minilm_packed):
    encodings = minilm_packed.tokenizer.encode(["a " * 100, "b " * 10, "c", "d " * 60])
    lengths = [len(e.ids) for e in encodings]
    batches = minilm_packed.batches(encodings, batch_size=32, token_budget=110)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert all(sum(lengths[i] for i in b) <= 110 or len(b) == 1 for b in batches)
    assert batches[0] == [0]  # longest first; a text over the budget still gets a batch of its own


def test_pack_layout():
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-xlm-roberta")
    encodings = model.tokenizer.encode(["hello world", "x"])
    batch, spans = pack(encodings, first_position=2, pad_token_id=1)
    n = sum(len(e.ids) for e in encodings)
    assert batch["input_ids"].shape == (1, MIN_ROWS)
    assert spans.bounds == (0, len(encodings[0].ids), n, MIN_ROWS)  # the last span is the filler
    assert batch["position_ids"][0, : len(encodings[0].ids)].tolist() == list(range(2, 2 + len(encodings[0].ids)))
    assert batch["input_ids"][0, n:].eq(1).all()


def test_unknown_execution():
    with pytest.raises(ValueError, match=r"unknown execution 'fast'; choose one of \['packed', 'padded'\]"):
        minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", execution="fast")


def test_packed_hidden_states_within_tolerance_of_transformers(minilm_dir):
    """The bare encoder, packed, against transformers' padded batch: same values up to rounding."""
    import transformers

    model = minienc.SentenceEncoder.from_pretrained(minilm_dir, attention="eager")
    texts = TEXTS
    ref = transformers.AutoModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    batch = model.tokenizer(texts)
    with torch.no_grad():
        expected = ref(**batch).last_hidden_state[batch["attention_mask"].bool()]
    got = torch.cat(model.encode(texts, output_value="token_embeddings"))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
