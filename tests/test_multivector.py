"""minienc.heads.multivector against sentence-transformers 6.2's MultiVectorEncoder: seeded tiny models built with its own
classes and saved by its save_pretrained, loaded by both; token vectors, scores, skiplist, query expansion, PyLate
folders as it reads them, and what minienc refuses."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sentence_transformers import MultiVectorEncoder as STMultiVectorEncoder
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.multi_vector_encoder.modules import HierarchicalTokenPooling, MultiVectorMask
from sentence_transformers.sentence_transformer.modules import Pooling
from sentence_transformers.util import similarity as st_similarity
from torch import nn

from minienc.heads.similarity import maxsim, maxsim_pairwise, mean_maxsim
from minienc.heads.multivector import MultiVectorEncoder

from .test_sentence import BY_CHARACTERS

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TEXTS = [
    "Hello, world! How are you?",
    "The capital of France is Paris.",
    "x",
    "what is the (best) thing; really?",
    "long " * 80,  # beyond every length below
    "Bonjour, ça va ? Über naïve café.",
    "...",  # punctuation only: a document with nothing left but [CLS], [D] and [SEP]
]
PACKED_TOKENS = 1e-5  # packed execution: other matrix shapes than sentence-transformers' padded batches (the spec)
SCORES = 1e-4  # the float32 bound for scores of ~30 summed from ~40 dot products of 16 (~56 u * 30); the spec

# name -> (Transformer options, MultiVectorMask options or None for no mask module)
MODELS = {
    "fixed": (dict(query_length=12, document_length=20,
                   query_expansion={"strategy": "fixed", "attend": False, "length": 12}),
              dict(skiplist_words=list(string.punctuation))),
    "fixed-attend": (dict(document_length=20, query_expansion={"strategy": "fixed", "attend": True, "length": 10}),
                     dict(skiplist_words=list(string.punctuation))),
    "min": (dict(query_length=24, query_expansion={"strategy": "min", "attend": False, "length": 10}),
            dict(skiplist_words=[",", ".", "?"], skiplist_tasks=["query", "document"])),
    "no-expansion": (dict(query_length=8, document_length=16), dict(keep_only_token_ids=list(range(100, 305)))),
    "no-mask": (dict(query_expansion={"strategy": "fixed", "attend": False, "length": 12}), None),
}


def save_model(folder: Path, transformer: dict, mask: dict | None, family: str = "bert", bias: bool = False,
               activation: nn.Module | None = None, similarity_fn_name: str | None = None) -> Path:
    """A seeded MultiVectorEncoder: the tiny checkpoint, a random Dense 32 -> 16, the mask, Normalize."""
    modules = [Transformer(str(WEIGHTS / f"tiny-{family}"), **transformer)]
    torch.manual_seed(0)
    modules.append(Dense(32, 16, bias=bias, activation_function=activation or nn.Identity(),
                         module_input_name="token_embeddings"))
    with torch.no_grad():
        modules[-1].linear.weight.mul_(4.0)  # a projection far from the identity's scale
    modules += [MultiVectorMask(**mask)] if mask is not None else []
    modules.append(Normalize(module_input_name="token_embeddings"))
    model = STMultiVectorEncoder(modules=modules, device="cpu", prompts={"query": "[Q] ", "document": "[D] "},
                                 similarity_fn_name=similarity_fn_name)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = save_model(tmp_path_factory.mktemp(name), *MODELS[name])
        return built[name]

    return get


def assert_same_vectors(ours: list[torch.Tensor], theirs: list[torch.Tensor], exact: bool) -> None:
    assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in theirs]
    if exact:
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    else:
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs) if a.numel()) <= PACKED_TOKENS


def compare(folder: Path, texts: list[str] = TEXTS) -> None:
    """Queries, documents and task-less encode(), padded (one batch each: sentence-transformers' bits) and packed;
    then the scores of sentence-transformers' own vectors and of ours."""
    st = STMultiVectorEncoder(str(folder), device="cpu")
    for execution in ("padded", "packed"):
        ours = MultiVectorEncoder.from_pretrained(folder, execution=execution)
        for method in ("encode_query", "encode_document", "encode"):
            expected = getattr(st, method)(texts, batch_size=len(texts))
            assert_same_vectors(getattr(ours, method)(texts, batch_size=len(texts)), expected, execution == "padded")
        q, d = ours.encode_query(texts), ours.encode_document(texts)
        assert torch.allclose(ours.similarity(q, d), st.similarity(q, d), rtol=0, atol=SCORES)
        assert torch.allclose(ours.similarity_pairwise(q, d), st.similarity_pairwise(q, d), rtol=0, atol=SCORES)
    q, d = st.encode_query(texts), st.encode_document(texts)
    assert torch.allclose(ours.similarity(q, d), st.similarity(q, d), rtol=0, atol=SCORES)


@pytest.mark.parametrize("name", list(MODELS))
def test_token_vectors_and_scores_match_sentence_transformers(model_dir, name):
    compare(model_dir(name))


def test_padded_small_batches_are_sentence_transformers_batches(model_dir):
    """In batches of 2, sentence-transformers' order (by characters): the same batches, so the same bits."""
    folder = model_dir("fixed")
    st, ours = STMultiVectorEncoder(str(folder), device="cpu"), MultiVectorEncoder.from_pretrained(folder,
                                                                                                execution="padded")
    texts = BY_CHARACTERS + TEXTS
    for method in ("encode_document", "encode"):
        assert_same_vectors(getattr(ours, method)(texts, batch_size=2), getattr(st, method)(texts, batch_size=2), True)


def test_xlm_roberta_expanded_with_the_pad_token(tmp_path):
    """A RoBERTa-family model gives pad-id tokens the padding position: such expanded queries run padded."""
    expansion = {"strategy": "min", "attend": True, "token": "<pad>", "length": 14}
    folder = save_model(tmp_path / "xlmr", dict(max_seq_length=128, query_expansion=expansion),
                        dict(skiplist_words=[",", "!"]), family="xlm-roberta")
    compare(folder)


def test_dense_bias_and_activation_as_configured(tmp_path):
    compare(save_model(tmp_path / "tanh", MODELS["fixed"][0], MODELS["fixed"][1], bias=True, activation=nn.Tanh()))


def test_meanmaxsim_read_from_the_folder(tmp_path):
    folder = save_model(tmp_path / "mean", *MODELS["fixed"], similarity_fn_name="meanmaxsim")
    ours, st = MultiVectorEncoder.from_pretrained(folder), STMultiVectorEncoder(str(folder), device="cpu")
    assert ours.similarity_fn_name == st.similarity_fn_name == "meanmaxsim"
    q, d = st.encode_query(TEXTS), st.encode_document(TEXTS)
    assert torch.allclose(ours.similarity(q, d), st.similarity(q, d), rtol=0, atol=SCORES)
    assert torch.allclose(ours.similarity(q, d) * torch.tensor([[len(v)] for v in q]),
                          MultiVectorEncoder.from_pretrained(folder, similarity_fn_name="maxsim").similarity(q, d),
                          rtol=0, atol=SCORES)


def test_skiplist_drops_punctuation_from_documents_only(model_dir):
    ours = MultiVectorEncoder.from_pretrained(model_dir("fixed"), execution="padded")
    text = "Hello, world! (what) is it?"
    ids = ours.tokenizer.tokenize(["[D] " + text])[0].ids  # on this vocabulary "[D]" is "[", "d", "]"
    punctuation = {ours.tokenizer.tokenizer.token_to_id(c) for c in string.punctuation} - {None}
    assert set(ours.skiplist_ids.tolist()) == punctuation  # the words not in the vocabulary are left out, as ST does
    kept = [i for i in ids if i not in punctuation]
    assert len(kept) == len(ids) - 7
    document, plain = ours.encode_document(text), ours.encode(text, prompt="[D] ", task="not-a-document")
    assert len(plain) == len(ids) and len(document) == len(kept)
    assert torch.equal(document, plain[torch.tensor([i not in punctuation for i in ids])])
    query = ours.encode_query(text)  # the skiplist is for documents: the query keeps its commas
    assert len(query) == 12


def test_query_expansion_pads_with_mask_tokens(model_dir):
    """fixed, attend=False: every query is 12 vectors, the last ones [MASK]s the text cannot see, so the text's own
    vectors are those of the unexpanded query; attend=True changes them."""
    ours = MultiVectorEncoder.from_pretrained(model_dir("fixed"), execution="padded")
    n = len(ours.tokenizer.tokenize(["[Q] x"])[0].ids)
    tokens, attended = ours.tokenize(["[Q] x"], "query")
    mask_id = ours.tokenizer.tokenizer.token_to_id("[MASK]")
    assert n < 12 and len(tokens[0].ids) == 12 and attended == [n] and set(tokens[0].ids[n:]) == {mask_id}
    expanded = ours.encode_query(["x", "long " * 80])
    assert [len(v) for v in expanded] == [12, 12]
    ours.query_expansion = None
    alone = ours.encode_query("x")
    # within float32 rounding, not bits: a batch of 12-token rows and one of n tokens are matrices of other shapes
    assert len(alone) == n and torch.allclose(expanded[0][:n], alone, rtol=0, atol=1e-6)
    attend = MultiVectorEncoder.from_pretrained(model_dir("fixed-attend"), execution="padded")
    assert attend.tokenize(["[Q] x"], "query")[1] == [10]


def test_min_expansion_keeps_long_queries_whole(model_dir):
    ours = MultiVectorEncoder.from_pretrained(model_dir("min"))
    lengths = [len(v) for v in ours.encode_query(["x", "one two three four five six seven eight nine ten"])]
    assert lengths[0] == 10 and lengths[1] > 10


def pylate_folder(folder: Path, **config) -> Path:
    """A folder laid out as sentence-transformers 6.2's MultiVectorEncoder reads a PyLate v3 save
    (_parse_model_config, _CLASS_REF_ALIASES, _apply_legacy_fixups): modules [Transformer, pylate Dense],
    model_type "ColBERT", the [Q] / [D] prefixes as tokens added to the tokenizer, the settings at the top level."""
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(WEIGHTS / "tiny-bert"))
    tokenizer.add_tokens(["[Q] ", "[D] "])
    torch.manual_seed(1)
    model = BertModel.from_pretrained(str(WEIGHTS / "tiny-bert"))
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 60, "do_lower_case": False}))
    settings = {"model_type": "ColBERT", "prompts": {"query": "", "document": ""}, "similarity_fn_name": "MaxSim",
                "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 16, "document_length": 40,
                "attend_to_expansion_tokens": False, "skiplist_words": None, **config}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    (folder / "1_Dense").mkdir()
    (folder / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 16, "bias": False, "activation_function": "torch.nn.modules.linear.Identity"}))
    save_file({"linear.weight": torch.randn(16, 32)}, str(folder / "1_Dense" / "model.safetensors"))
    return folder


@pytest.mark.parametrize("config", [{}, {"do_query_expansion": False, "skiplist_words": ["!"]},
                                    {"attend_to_expansion_tokens": True}])
def test_pylate_folder_read_as_sentence_transformers_reads_it(tmp_path, config):
    folder = pylate_folder(tmp_path / "pylate", **config)
    ours = MultiVectorEncoder.from_pretrained(folder)
    assert ours.prompts["query"] == "[Q] " and ours.similarity_fn_name == "maxsim"
    assert ours.tokenizer.tokenize(["[Q] hi"])[0].ids[1] == ours.tokenizer.tokenizer.token_to_id("[Q] ")
    compare(folder, TEXTS + ["[q] lowercase marker text, not the token"])


def test_sentence_transformer_with_dense_converted(tmp_path):
    """A sentence-transformers folder: its Pooling and sentence-level Normalize dropped, its Dense moved to the
    tokens, a mask without skiplist and a token Normalize appended, as sentence-transformers converts it."""
    torch.manual_seed(2)
    st = SentenceTransformer(modules=[Transformer(str(WEIGHTS / "tiny-bert")), Pooling(32), Dense(32, 16), Normalize()],
                             device="cpu")
    st.save_pretrained(str(tmp_path / "st"))
    compare(tmp_path / "st")


@pytest.mark.parametrize("documents", [
    [np.ones((3, 4), dtype=np.float32), np.zeros((0, 4), dtype=np.float32)],  # an empty document
    torch.tensor([[[1.0, 2, 0, 1], [0, 0, 0, 0]], [[-1, 0.5, 2, 1], [3, 1, 1, 0]]]),  # padded, all-zero rows padding
    torch.randn(5, 4, generator=torch.Generator().manual_seed(1)),  # one (tokens, dim) matrix: one document
])
def test_scoring_functions_match_sentence_transformers(documents):
    generator = torch.Generator().manual_seed(0)
    queries = [torch.randn(n, 4, generator=generator) for n in (1, 3, 6)]
    expected = st_similarity.maxsim(queries, documents)
    assert torch.allclose(maxsim(queries, documents), expected, rtol=0, atol=SCORES)
    assert torch.allclose(mean_maxsim(queries, documents), st_similarity.mean_maxsim(queries, documents), rtol=0,
                          atol=SCORES)


def test_pairwise_scores_match_sentence_transformers():
    generator = torch.Generator().manual_seed(0)
    queries = [torch.randn(n, 4, generator=generator) for n in (1, 3, 6)]
    documents = [torch.randn(4, 4, generator=generator), torch.zeros(0, 4), torch.randn(9, 4, generator=generator)]
    assert torch.allclose(maxsim_pairwise(queries, documents), st_similarity.maxsim_pairwise(queries, documents),
                          rtol=0, atol=SCORES)


def test_half_precision_scored_in_float32():
    """minienc widens half precision before the products (as minienc/heads/similarity.py does); sentence-transformers
    multiplies in half and sums in float32."""
    q, d = torch.randn(3, 8).half(), torch.randn(5, 8).half()
    assert torch.equal(maxsim(q, d), maxsim(q.float(), d.float()))


def test_scores_are_maxsim_by_hand():
    q, d = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.5, 0.25], [-1.0, 2.0]])
    assert maxsim([q], [d]).item() == 0.5 + 2.0 and mean_maxsim([q], [d]).item() == 1.25


def rewrite(folder: Path, file: str, change) -> None:
    path = folder / file
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_unsupported_folders_are_refused(tmp_path, model_dir):
    plain = tmp_path / "plain"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        plain.mkdir(exist_ok=True)
        (plain / name).write_bytes((WEIGHTS / "tiny-bert" / name).read_bytes())
    with pytest.raises(ValueError, match="no modules.json"):
        MultiVectorEncoder.from_pretrained(plain)
    with pytest.raises(ValueError, match="needs a Transformer and .* a Dense head"):
        MultiVectorEncoder.from_pretrained(WEIGHTS / "tiny-bert")  # a sentence-transformers folder without Dense
    pooled = tmp_path / "pooled"
    STMultiVectorEncoder(modules=[Transformer(str(WEIGHTS / "tiny-bert")), HierarchicalTokenPooling(pool_factor=2)],
                         device="cpu").save_pretrained(str(pooled))
    with pytest.raises(ValueError, match="HierarchicalTokenPooling.* is not supported"):
        MultiVectorEncoder.from_pretrained(pooled)


@pytest.mark.parametrize("file, change, error", [
    ("1_Dense/config.json", lambda c: {**c, "use_residual": True}, "without use_residual"),
    ("1_Dense/config.json", lambda c: {**c, "activation_function": "my.Swish"}, "unsupported activation_function"),
    ("sentence_bert_config.json", lambda c: {**c, "query_expansion": {"strategy": "max", "length": 4}}, "strategy"),
    ("sentence_bert_config.json", lambda c: {**c, "query_expansion": {**c["query_expansion"], "token": "[NOPE]"}},
     "not in the tokenizer's vocabulary"),
    ("sentence_bert_config.json", lambda c: {**c, "query_length": 4}, "smaller than the query_expansion length"),
    ("config_sentence_transformers.json", lambda c: {**c, "model_type": "CrossEncoder"}, "not a multi-vector model"),
])
def test_bad_settings_are_named(tmp_path, file, change, error):
    folder = save_model(tmp_path / "m", *MODELS["fixed"])
    rewrite(folder, file, change)
    with pytest.raises(ValueError, match=error):
        MultiVectorEncoder.from_pretrained(folder)


def test_api_errors(model_dir):
    ours = MultiVectorEncoder.from_pretrained(model_dir("fixed"))
    with pytest.raises(ValueError, match="maxsim"):
        MultiVectorEncoder.from_pretrained(model_dir("fixed"), similarity_fn_name="cosine")
    with pytest.raises(ValueError, match="output_value"):
        ours.encode(["x"], output_value=None)
    with pytest.raises(ValueError, match="prompt_name 'nope'"):
        ours.encode(["x"], prompt_name="nope")
    with pytest.raises(TypeError, match="item 1"):
        ours.encode_query(["x", 3])
    with pytest.raises(ValueError, match="as many queries as documents"):
        ours.similarity_pairwise([torch.ones(2, 16)], [])


def test_output_forms(model_dir):
    ours = MultiVectorEncoder.from_pretrained(model_dir("fixed"))
    assert ours.get_embedding_dimension() == 16
    one, arrays = ours.encode_document("Paris."), ours.encode_document(["Paris.", "x"], convert_to_numpy=True)
    assert isinstance(one, torch.Tensor) and one.shape[1] == 16
    assert isinstance(arrays[0], np.ndarray) and np.array_equal(arrays[0], one.numpy())
    assert torch.allclose(one.norm(dim=-1), torch.ones(len(one)), atol=1e-6)
    assert ours.encode_query([]) == []
    ours.set_matmul("torch")
    assert all(layer.linear.matmul is ours.kernel for layer in ours.dense)
