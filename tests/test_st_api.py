"""The sentence-transformers switch: folders its 5.x and 6.x releases write, and the API people already type,
each compared with the installed sentence-transformers (values, not just shapes)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer, quantize_embeddings
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

import minienc

from .test_packed import corpus
from .test_sentence import TEXTS

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@pytest.fixture(scope="module")
def resaved_minilm(minilm_dir, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 saved again by the installed sentence-transformers: today's layout."""
    folder = tmp_path_factory.mktemp("resaved") / "minilm"
    SentenceTransformer(str(minilm_dir), device="cpu").save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def pair(resaved_minilm):
    """(minienc padded, minienc packed, sentence-transformers) on the re-saved folder."""
    return (minienc.SentenceEncoder.from_pretrained(resaved_minilm, execution="padded"),
            minienc.SentenceEncoder.from_pretrained(resaved_minilm),
            SentenceTransformer(str(resaved_minilm), device="cpu"))


def test_todays_layout_is_what_we_read(resaved_minilm):
    settings = json.loads((resaved_minilm / "sentence_bert_config.json").read_text())
    assert "max_seq_length" not in settings  # the limit lives in tokenizer_config.json now
    types = [m["type"] for m in json.loads((resaved_minilm / "modules.json").read_text())]
    assert not any(t.startswith("sentence_transformers.models.") for t in types)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["old", "new"])
def test_folder_layouts_identical_padded_close_packed(layout, minilm_dir, resaved_minilm):
    folder = minilm_dir if layout == "old" else resaved_minilm
    st = SentenceTransformer(str(folder), device="cpu")
    padded = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    packed = minienc.SentenceEncoder.from_pretrained(folder)
    assert padded.max_seq_length == packed.max_seq_length == st.max_seq_length == 256
    texts = TEXTS + corpus(30)
    expected = st.encode(texts)
    assert np.array_equal(padded.encode(texts, batch_size=len(texts)), st.encode(texts, batch_size=len(texts)))
    assert np.abs(packed.encode(texts) - expected).max() <= 1e-6


def test_new_layout_dense_cls_and_include_prompt(tmp_path):
    """Pooling(include_prompt=False): the prompt's tokens and [CLS] are left out of the mean, as in sentence-
    transformers; Dense and Normalize in today's layout."""
    source = Transformer(str(WEIGHTS / "tiny-bert"), max_seq_length=128)
    model = SentenceTransformer(modules=[source, Pooling(32, "mean", include_prompt=False), Dense(32, 8), Normalize()],
                                device="cpu", prompts={"query": "query: "})
    model.save_pretrained(str(tmp_path / "st"))
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ours = minienc.SentenceEncoder.from_pretrained(tmp_path / "st", execution="padded")
    assert not ours.include_prompt
    assert np.array_equal(ours.encode(TEXTS, prompt_name="query"), st.encode(TEXTS, prompt_name="query"))
    assert np.array_equal(ours.encode(TEXTS), st.encode(TEXTS))
    packed = minienc.SentenceEncoder.from_pretrained(tmp_path / "st")
    assert np.abs(packed.encode(TEXTS, prompt_name="query") - st.encode(TEXTS, prompt_name="query")).max() <= 1e-6


@pytest.mark.parametrize("include_prompt", [False, True])
def test_trace_puts_the_prompt_first_and_pools_as_encode(tmp_path, capsys, include_prompt):
    """`minienc trace --prompt-name` walks the prompted text, and its pooling step leaves the prompt's tokens out
    where the folder says include_prompt false: the vector it prints last is sentence-transformers'; without
    --prompt-name the folder's default prompt goes first, as in encode()."""
    from minienc.cli import main

    source = Transformer(str(WEIGHTS / "tiny-bert"), max_seq_length=128)
    model = SentenceTransformer(modules=[source, Pooling(32, "mean", include_prompt=include_prompt), Normalize()],
                                device="cpu", prompts={"query": "query: ", "passage": "passage: "},
                                default_prompt_name="passage")
    model.save_pretrained(str(tmp_path / "st"))
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    for option, name in (["--prompt-name", "query"], "query"), ([], "passage"):
        assert main(["trace", "--model", str(tmp_path / "st"), "--json", *option, "hello world"]) == 0
        data = json.loads(capsys.readouterr().out)
        expected = st.encode("hello world", prompt_name=name)
        assert data["prompt"] == f"{name}: " and data["tokens"][0] == "[CLS]" and "hello" in data["tokens"]
        assert data["normalized"]["values"] == [round(float(x), 6) for x in expected[:4]]
        assert data["pooled_from"] == (0 if include_prompt else data["prompt_tokens"]) and data["prompt_tokens"] > 1
    assert main(["trace", "--model", str(tmp_path / "st"), "--prompt-name", "query", "hello world"]) == 0
    page = capsys.readouterr().out
    assert "  prompt          'query: ' first: tokens 0..6" in page
    assert ("4. pooling (mean, the prompt's tokens included)" if include_prompt else
            "4. pooling (mean over tokens 7..9: the prompt's 0..6 left out, include_prompt false)") in page


def test_inputs_accepted_like_sentence_transformers(pair):
    ours, _, st = pair
    as_array = np.array(TEXTS[:4])
    assert np.array_equal(ours.encode(as_array), st.encode(as_array))
    assert np.array_equal(ours.encode(tuple(TEXTS[:4])), st.encode(list(TEXTS[:4])))
    assert np.array_equal(ours.encode(TEXTS, None, None, 2), st.encode(TEXTS, None, None, 2))  # batch_size, 4th
    with pytest.raises(TypeError, match="item 1 is list, not str"):
        ours.encode(["a", ["b"]])
    with pytest.raises(TypeError, match="of 2 dimensions"):
        ours.encode(np.array([["a", "b"]]))


@pytest.mark.parametrize("normalize", [False, True])
def test_truncate_dim(pair, resaved_minilm, normalize):
    ours, _, st = pair
    expected = st.encode(TEXTS, truncate_dim=64, normalize_embeddings=normalize)
    got = ours.encode(TEXTS, truncate_dim=64, normalize_embeddings=normalize)
    assert got.shape == (len(TEXTS), 64) and np.array_equal(got, expected)
    loaded = minienc.SentenceEncoder.from_pretrained(resaved_minilm, truncate_dim=32, execution="padded")
    st32 = SentenceTransformer(str(resaved_minilm), device="cpu", truncate_dim=32)
    assert loaded.get_sentence_embedding_dimension() == 32 == st32.get_embedding_dimension()
    assert np.array_equal(loaded.encode(TEXTS), st32.encode(TEXTS))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_precision(pair, precision):
    ours, _, st = pair
    texts = TEXTS + corpus(20)
    expected = st.encode(texts, precision=precision)
    got = ours.encode(texts, precision=precision)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert np.array_equal(got, quantize_embeddings(ours.encode(texts), precision))
    as_tensor = ours.encode(texts, precision=precision, convert_to_tensor=True)
    assert torch.equal(as_tensor, st.encode(texts, precision=precision, convert_to_tensor=True))
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        ours.encode("a", precision="int4")


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_functions(pair, name):
    ours, _, st = pair
    a, b = ours.encode(TEXTS[:4]), ours.encode(TEXTS[4:])
    ours.similarity_fn_name = st.similarity_fn_name = name
    try:
        assert torch.equal(ours.similarity(a, b), st.similarity(a, b))
        assert torch.equal(ours.similarity(a[0], b), st.similarity(a[0], b))
        assert torch.equal(ours.similarity_pairwise(a, b[:4]), st.similarity_pairwise(a, b[:4]))
        half = torch.from_numpy(a).to(torch.bfloat16)
        assert torch.equal(ours.similarity(half, half), st.similarity(half, half))
    finally:
        ours.similarity_fn_name = st.similarity_fn_name = "cosine"


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_of_odd_inputs(pair, name):
    """Where sentence-transformers overflows or fails, minienc gives the value: quantized vectors are compared in
    float32, no vectors give an empty matrix, and pairwise inputs of different lengths are an error."""
    ours, _, _ = pair
    ours.similarity_fn_name = name
    try:
        vectors = ours.encode(TEXTS[:5])
        quantized = ours.encode(TEXTS[:5], precision="int8")
        expected = ours.similarity(quantized.astype(np.float32), quantized.astype(np.float32))
        assert torch.equal(ours.similarity(quantized, quantized), expected)
        if name == "dot":  # what sentence-transformers gives: products summed in int8
            assert not torch.equal(torch.mm(*(torch.from_numpy(q) for q in (quantized, quantized.T))).float(), expected)
        assert ours.similarity(ours.encode([]), vectors).shape == (0, 5)
        assert ours.similarity(vectors, []).shape == (5, 0)
        assert ours.similarity_pairwise([], []).shape == (0,)
        with pytest.raises(ValueError, match=r"compares a\[i\] with b\[i\]: got 5 vectors and 2 vectors"):
            ours.similarity_pairwise(vectors, vectors[:2])
        with pytest.raises(ValueError, match="got one vector and 2 vectors"):
            ours.similarity_pairwise(vectors[0], vectors[:2])
    finally:
        ours.similarity_fn_name = "cosine"


def test_similarity_fn_name_read_from_the_folder(tmp_path):
    model = SentenceTransformer(str(WEIGHTS / "tiny-bert"), device="cpu", similarity_fn_name="manhattan")
    model.save_pretrained(str(tmp_path / "st"))
    ours = minienc.SentenceEncoder.from_pretrained(tmp_path / "st")
    assert ours.similarity_fn_name == "manhattan"
    with pytest.raises(ValueError, match="unknown similarity_fn_name 'maxsim'"):
        minienc.SentenceEncoder.from_pretrained(tmp_path / "st", similarity_fn_name="maxsim")


def test_max_seq_length_really_truncates(resaved_minilm):
    ours = minienc.SentenceEncoder.from_pretrained(resaved_minilm, execution="padded")
    st = SentenceTransformer(str(resaved_minilm), device="cpu")
    ours.max_seq_length = st.max_seq_length = 16
    assert ours.max_seq_length == 16
    assert np.array_equal(ours.encode(TEXTS), st.encode(TEXTS))
    assert ours.tokenize(["word " * 100])["input_ids"].shape == (1, 16)
    with pytest.raises(ValueError, match="max_seq_length must be from 1 to the model's 512 positions"):
        ours.max_seq_length = 513


def test_tokenize_gives_the_model_inputs(pair):
    ours, _, st = pair
    mine, theirs = ours.tokenize(TEXTS), st.tokenize(TEXTS)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(mine[key], theirs[key]), key


def test_truncation_is_reported_once_per_call(pair, caplog):
    ours = pair[0]
    with caplog.at_level(logging.WARNING, logger="minienc"):
        ours.encode(["short", "long " * 300, "longer " * 400])
        ours.encode(["short"])
    messages = [r.getMessage() for r in caplog.records if r.name == "minienc"]
    assert messages == ["2 of 3 texts were longer than max_seq_length (256 tokens) and were truncated; "
                        "encode_chunks() embeds long texts whole"]


@pytest.mark.parametrize("execution", ["packed", "padded"])
def test_progress_bar_counts_texts(resaved_minilm, execution, capsys):
    model = minienc.SentenceEncoder.from_pretrained(resaved_minilm, execution=execution)
    model.encode(corpus(70), batch_size=8, token_budget=300, show_progress_bar=True)
    assert "70/70" in capsys.readouterr().err


def test_drop_in_import(resaved_minilm):
    """The common calls, spelled as sentence-transformers users spell them."""
    from minienc import SentenceTransformer as Drop_in

    model = Drop_in(str(resaved_minilm), "cpu", execution="padded")
    assert isinstance(model, minienc.SentenceEncoder)
    st = SentenceTransformer(str(resaved_minilm), device="cpu")
    queries, docs = ["capital of France"], ["Paris is the capital of France.", "Bread is baked."]
    assert torch.equal(model.similarity(model.encode(queries), model.encode(docs)),
                       st.similarity(st.encode(queries), st.encode(docs)))
    assert model.get_sentence_embedding_dimension() == model.get_embedding_dimension() == st.get_embedding_dimension()
    assert np.array_equal(model.encode(docs, batch_size=2, normalize_embeddings=True, precision="binary"),
                          st.encode(docs, batch_size=2, normalize_embeddings=True, precision="binary"))
