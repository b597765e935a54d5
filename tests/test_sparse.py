"""SparseEncoder (SPLADE) against sentence-transformers' SparseEncoder on seeded tiny masked-language models: the
folders it saves, plain *ForMaskedLM folders, the head's tied and untied decoder, RoBERTa-family heads, decode,
similarity, max_active_dims, and the errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from sentence_transformers import SparseEncoder
from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

from minienc.loading.checkpoint import CheckpointError
from minienc.cli import main
from minienc.heads.sparse import SparseEncoder as OurSparseEncoder

from .test_sentence import BY_CHARACTERS, TEXTS

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TEXTS_SPARSE = ["capital of France", *TEXTS]
# the tiny tokenizers' vocabularies (tokenizer.json) set vocab_size; initializer_range 0.2 keeps scores far from 0
TINY_MLM = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                initializer_range=0.2)
FAMILIES = {
    "bert": (transformers.BertConfig, transformers.BertForMaskedLM, "tiny-bert",
             dict(vocab_size=305, max_position_embeddings=64)),
    "xlm-roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaForMaskedLM, "tiny-xlm-roberta",
                    dict(vocab_size=298, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         type_vocab_size=1)),
}


def save_mlm(folder: Path, family: str = "bert", seed: int = 0, **overrides) -> Path:
    """A seeded random *ForMaskedLM model with the bundled tokenizer whose vocabulary it matches. transformers
    initializes the head's biases to 0 and its LayerNorm to 1: they are perturbed so that loading them is tested."""
    config_class, model_class, tokenizer, sizes = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_class(config_class(**{**TINY_MLM, **sizes, **overrides}))
    head = model.cls if family == "bert" else model.lm_head
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name != "decoder.weight":
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(folder)
    shutil.copy(WEIGHTS / tokenizer / "tokenizer.json", folder / "tokenizer.json")
    return folder


def st_save(folder: Path, *modules, **options) -> Path:
    SparseEncoder(modules=list(modules), device="cpu", **options).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def mlm(tmp_path_factory) -> Path:
    return save_mlm(tmp_path_factory.mktemp("mlm"))


@pytest.fixture(scope="module")
def layouts(mlm, tmp_path_factory) -> dict[str, Path]:
    """Each kind of folder minienc reads, by name."""
    root = tmp_path_factory.mktemp("layouts")
    mlm_transformer = lambda source=mlm, **kw: MLMTransformer(str(source), **kw)  # noqa: E731
    # another hidden_act: BERT's head follows it, RoBERTa's calls gelu whatever it says
    xlmr = save_mlm(root / "xlmr-mlm", "xlm-roberta", seed=1, hidden_act="gelu_new")
    return {
        "plain": mlm,  # a BertForMaskedLM folder: sentence-transformers infers Transformer + SpladePooling("max")
        "mlm_transformer": st_save(root / "mlm_transformer", mlm_transformer(), SpladePooling("max")),
        "fill_mask": st_save(root / "fill_mask", *SparseEncoder(str(mlm), device="cpu")),  # what 6.2 infers and saves
        "sum_log1p_relu": st_save(root / "sum", mlm_transformer(), SpladePooling("sum", "log1p_relu")),
        "untied": save_mlm(root / "untied", seed=2, tie_word_embeddings=False, hidden_act="gelu_new"),
        # an explicit limit: sentence-transformers would allow a tiny XLM-R all 66 position rows, not 64
        "xlm-roberta": st_save(root / "xlmr", mlm_transformer(xlmr, max_seq_length=64), SpladePooling("max")),
    }


@pytest.fixture(scope="module")
def reference(layouts) -> dict[str, tuple[SparseEncoder, torch.Tensor]]:
    """sentence-transformers' model and its vectors for TEXTS_SPARSE, per layout (one batch, as ours in the tests)."""
    found = {}
    for name, folder in layouts.items():
        st = SparseEncoder(str(folder), device="cpu")
        found[name] = st, st.encode(TEXTS_SPARSE, batch_size=len(TEXTS_SPARSE))
    return found


def test_layouts_are_what_sentence_transformers_writes(layouts):
    types = lambda name: [m["type"].rsplit(".", 1)[-1] for m in json.loads((layouts[name] / "modules.json").read_text())]  # noqa: E731
    assert types("mlm_transformer") == ["MLMTransformer", "SpladePooling"]
    assert types("fill_mask") == ["Transformer", "SpladePooling"]
    assert json.loads((layouts["fill_mask"] / "sentence_bert_config.json").read_text())["transformer_task"] == "fill-mask"
    assert not (layouts["plain"] / "modules.json").exists()


@pytest.mark.parametrize("layout", ["plain", "mlm_transformer", "fill_mask", "sum_log1p_relu", "untied", "xlm-roberta"])
def test_padded_gives_sentence_transformers_bits(layout, layouts, reference):
    """Padded execution runs sentence-transformers' ops in its order on the same (B, T) batch: the same bits."""
    st, expected = reference[layout]
    ours = OurSparseEncoder.from_pretrained(layouts[layout], execution="padded")
    assert ours.max_seq_length == st.max_seq_length
    got = ours.encode(TEXTS_SPARSE, batch_size=len(TEXTS_SPARSE))
    assert got.is_sparse and got.shape == expected.shape == (len(TEXTS_SPARSE), ours.get_embedding_dimension())
    assert torch.equal(got.to_dense(), expected.to_dense())
    assert torch.equal(got.coalesce().indices(), expected.coalesce().indices())


def test_padded_small_batches_are_sentence_transformers_batches(layouts, reference):
    """In batches of 2, sentence-transformers' order (by characters): the same batches, so the same bits."""
    st, _ = reference["mlm_transformer"]
    ours = OurSparseEncoder.from_pretrained(layouts["mlm_transformer"], execution="padded")
    texts = BY_CHARACTERS + TEXTS_SPARSE
    assert torch.equal(ours.encode(texts, batch_size=2).to_dense(), st.encode(texts, batch_size=2).to_dense())


@pytest.mark.parametrize("layout", ["plain", "sum_log1p_relu", "untied", "xlm-roberta"])
def test_packed_is_within_float32_rounding(layout, layouts, reference):
    """Packed execution sums in another order (texts attend alone, not through a padding mask; its own kernel):
    the same non-zero terms, weights within 1e-5. The hidden states come out about 1e-6 apart; the head turns that
    into score differences of a few 1e-6 on scores of up to ~20, and log1p passes on those of scores near 0 as they
    are. 1e-5 leaves room for other CPUs' kernels."""
    _, expected = reference[layout]
    ours = OurSparseEncoder.from_pretrained(layouts[layout])
    got = ours.encode(TEXTS_SPARSE)
    assert (got.to_dense() - expected.to_dense()).abs().max() <= 1e-5
    assert torch.equal(got.coalesce().indices(), expected.coalesce().indices())


def test_head_is_tied_unless_the_checkpoint_stores_a_decoder(layouts):
    tied = OurSparseEncoder.from_pretrained(layouts["plain"])
    assert tied.head.decoder.weight is tied.encoder.embeddings.word.weight
    untied = OurSparseEncoder.from_pretrained(layouts["untied"])
    assert not torch.equal(untied.head.decoder.weight, untied.encoder.embeddings.word.weight)


def test_outputs_shaped_like_sentence_transformers(layouts, reference):
    st, expected = reference["mlm_transformer"]
    ours = OurSparseEncoder.from_pretrained(layouts["mlm_transformer"], execution="padded")
    one, st_one = ours.encode("capital of France"), st.encode("capital of France")
    assert one.is_sparse and one.dim() == 1 and torch.equal(one.to_dense(), st_one.to_dense())
    dense = ours.encode(TEXTS_SPARSE, batch_size=len(TEXTS_SPARSE), convert_to_sparse_tensor=False)
    assert not dense.is_sparse and torch.equal(dense, expected.to_dense())
    rows = ours.encode(TEXTS_SPARSE, batch_size=len(TEXTS_SPARSE), convert_to_tensor=False)
    st_rows = st.encode(TEXTS_SPARSE, batch_size=len(TEXTS_SPARSE), convert_to_tensor=False)
    assert len(rows) == len(st_rows) and all(torch.equal(a.to_dense(), b.to_dense()) for a, b in zip(rows, st_rows))
    empty, st_empty = ours.encode([]), st.encode([])
    assert empty.is_sparse == st_empty.is_sparse and empty.shape == st_empty.shape


@pytest.mark.parametrize("top_k", [None, 1, 5])
def test_decode_like_sentence_transformers(top_k, layouts, reference):
    """On sentence-transformers' own vectors, so that only decoding is compared: sparse and dense, one and many."""
    st, expected = reference["mlm_transformer"]
    ours = OurSparseEncoder.from_pretrained(layouts["mlm_transformer"])
    assert ours.decode(expected, top_k=top_k) == st.decode(expected, top_k=top_k)
    assert ours.decode(expected[0], top_k=top_k) == st.decode(expected[0], top_k=top_k)
    assert ours.decode(expected.to_dense()[3], top_k=top_k) == st.decode(expected.to_dense()[3], top_k=top_k)
    first = ours.decode(expected[0], top_k=top_k)
    assert len(first) == (top_k or expected[0].coalesce().values().numel()) and first[0][1] >= first[-1][1] > 0


def test_similarity_like_sentence_transformers(layouts, reference):
    st, expected = reference["mlm_transformer"]
    ours = OurSparseEncoder.from_pretrained(layouts["mlm_transformer"])
    assert ours.similarity_fn_name == st.similarity_fn_name == "dot"
    some = expected.index_select(0, torch.tensor([0, 2, 5]))  # sparse tensors take no slices
    assert torch.equal(ours.similarity(expected, some), st.similarity(expected, some))
    assert torch.equal(ours.similarity(expected[0], expected), st.similarity(expected[0], expected))
    rows = list(expected)
    assert torch.equal(ours.similarity(rows, rows), st.similarity(rows, rows))
    assert torch.equal(ours.similarity_pairwise(expected, expected), st.similarity_pairwise(expected, expected))
    ours.similarity_fn_name = st.similarity_fn_name = "cosine"
    # minienc's cosine normalizes a dense copy, sentence-transformers the sparse values: float32 rounding apart
    assert torch.allclose(ours.similarity(expected, expected), st.similarity(expected, expected), atol=1e-6)


def test_similarity_of_no_texts_and_of_unequal_pairs(layouts, reference):
    st, expected = reference["mlm_transformer"]
    ours = OurSparseEncoder.from_pretrained(layouts["mlm_transformer"])
    none = ours.encode([])  # as sentence-transformers: an empty 1-D tensor
    for name in ("dot", "cosine"):
        ours.similarity_fn_name = name
        assert ours.similarity(none, expected).shape == (0, len(TEXTS_SPARSE))
        assert ours.similarity(expected, []).shape == (len(TEXTS_SPARSE), 0)
        with pytest.raises(ValueError, match=rf"compares a\[i\] with b\[i\]: got {len(TEXTS_SPARSE)} vectors and 1 vector$"):
            ours.similarity_pairwise(expected, expected.index_select(0, torch.tensor([0])))


@pytest.mark.parametrize("layout, formula, pooling", [("mlm_transformer", "log(1 + relu(x))", "max"),
                                                     ("sum_log1p_relu", "log(1 + log(1 + relu(x)))", "sum")])
def test_trace_walks_through_the_head(layouts, capsys, layout, formula, pooling):
    """`minienc trace --sparse`: the encoder's stages, then the masked-LM head, the activation and the pooling, ending
    at encode()'s vector (the same padded ops on one text) and its largest terms, as decode() names them."""
    text = "capital of France"
    assert main(["trace", "--sparse", "--model", str(layouts[layout]), "--json", text]) == 0
    data = json.loads(capsys.readouterr().out)
    model = OurSparseEncoder.from_pretrained(layouts[layout], execution="padded")
    vector = model.encode(text).to_dense()
    n, vocab = len(data["input_ids"]), model.get_embedding_dimension()
    assert data["head"]["shape"] == data["weights"]["shape"] == [n, vocab] and data["pooled"]["shape"] == [vocab]
    assert data["pooled"]["norm"] == float(vector.norm()) and data["nonzero"] == int((vector != 0).sum()) > 0
    assert data["terms"] == [[token, round(weight, 6)] for token, weight in model.decode(vector, top_k=8)]
    assert main(["trace", "--sparse", "--model", str(layouts[layout]), text]) == 0
    page = capsys.readouterr().out
    assert f"5. SPLADE activation ({formula})" in page and f"6. pooling ({pooling} over the tokens)" in page
    assert f"{data['nonzero']} non-zero of {vocab}; largest: {data['terms'][0][0]} " in page


def test_trace_applies_max_active_dims(mlm, tmp_path, capsys):
    folder = st_save(tmp_path / "st", MLMTransformer(str(mlm)), SpladePooling("max"), max_active_dims=7)
    assert main(["trace", "--sparse", "--model", str(folder), "--json", "capital of France"]) == 0
    data = json.loads(capsys.readouterr().out)
    vector = OurSparseEncoder.from_pretrained(folder, execution="padded").encode("capital of France").to_dense()
    assert data["nonzero"] == int((vector != 0).sum()) == 7 and data["pooled"]["norm"] == float(vector.norm())


def test_max_active_dims_prompts_and_similarity_from_the_folder(mlm, tmp_path):
    """max_active_dims keeps each vector's largest values, from the folder or per call; prompts and similarity_fn_name
    come from the folder as well."""
    folder = st_save(tmp_path / "st", MLMTransformer(str(mlm)), SpladePooling("max"), max_active_dims=7,
                     prompts={"query": "query: "}, similarity_fn_name="cosine")
    st = SparseEncoder(str(folder), device="cpu")
    ours = OurSparseEncoder.from_pretrained(folder, execution="padded")
    assert (ours.max_active_dims, ours.similarity_fn_name) == (st.max_active_dims, st.similarity_fn_name) == (7, "cosine")
    n = len(TEXTS_SPARSE)
    got = ours.encode(TEXTS_SPARSE, batch_size=n)
    assert torch.equal(got.to_dense(), st.encode(TEXTS_SPARSE, batch_size=n).to_dense())
    assert int((got.to_dense() != 0).sum(dim=1).max()) == 7
    three = ours.encode(TEXTS_SPARSE, batch_size=n, max_active_dims=3)
    assert torch.equal(three.to_dense(), st.encode(TEXTS_SPARSE, batch_size=n, max_active_dims=3).to_dense())
    assert int((three.to_dense() != 0).sum(dim=1).max()) == 3
    queries = ours.encode_query(TEXTS_SPARSE, batch_size=n)
    assert torch.equal(queries.to_dense(), st.encode_query(TEXTS_SPARSE, batch_size=n).to_dense())
    assert not torch.equal(queries.to_dense(), got.to_dense())


def test_packed_batch_invariance(layouts):
    """A text's vector is the same bits alone, in a batch, and in many small batches."""
    ours = OurSparseEncoder.from_pretrained(layouts["plain"])
    if not ours.batch_invariant:
        pytest.skip(f"matmul {ours.matmul_name!r} failed the row-block probe on this machine")
    together = ours.encode(TEXTS_SPARSE).to_dense()
    alone = torch.stack([ours.encode(t).to_dense() for t in TEXTS_SPARSE])
    assert torch.equal(alone, together)
    assert torch.equal(ours.encode(TEXTS_SPARSE, token_budget=10).to_dense(), together)


def test_bare_encoder_is_not_a_splade_model(tmp_path):
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**TINY_MLM, vocab_size=305)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="CSR"):
        OurSparseEncoder.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(CheckpointError, match=r"cls\.predictions\.transform\.dense\.weight") as err:
        OurSparseEncoder.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value) and "cls.predictions.bias" in str(err.value)


def test_untied_config_needs_a_decoder_weight(mlm, tmp_path):
    shutil.copytree(mlm, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(CheckpointError, match=r"missing cls\.predictions\.decoder\.weight"):
        OurSparseEncoder.from_pretrained(tmp_path / "m")


def test_unsupported_modules_and_pooling(mlm, layouts, tmp_path):
    bare = tmp_path / "bare"
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**TINY_MLM, vocab_size=305)).save_pretrained(bare)
    shutil.copy(mlm / "tokenizer.json", bare / "tokenizer.json")
    csr = st_save(tmp_path / "csr", *SparseEncoder(str(bare), device="cpu"))  # Transformer, Pooling, SparseAutoEncoder
    with pytest.raises(ValueError, match="SparseAutoEncoder"):
        OurSparseEncoder.from_pretrained(csr)
    bad = shutil.copytree(layouts["mlm_transformer"], tmp_path / "bad")
    (bad / "1_SpladePooling" / "config.json").write_text(json.dumps({"pooling_strategy": "mean"}))
    with pytest.raises(ValueError, match="pooling_strategy"):
        OurSparseEncoder.from_pretrained(bad)


def test_argument_errors(layouts, reference):
    _, expected = reference["plain"]
    ours = OurSparseEncoder.from_pretrained(layouts["plain"])
    with pytest.raises(ValueError, match="top_k"):
        ours.decode(expected, top_k=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ours.decode(expected.to_dense().numpy())
    with pytest.raises(ValueError, match="3 dimensions"):
        ours.decode(expected.to_dense()[None])
    with pytest.raises(ValueError, match="max_active_dims"):
        ours.encode("x", max_active_dims=0)
    with pytest.raises(ValueError, match="execution"):
        OurSparseEncoder.from_pretrained(layouts["plain"], execution="ragged")
