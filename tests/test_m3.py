"""bge-m3 (minienc/heads/m3.py) against a reference written here from FlagEmbedding v1.4.2, run on transformers'
XLMRobertaModel; and the heads' conversion from pickles, the one place where minienc reads a pickle.

FlagEmbedding itself is not a test dependency (its package imports datasets, peft, accelerate and rerankers that
transformers 5 breaks), so `Reference` below re-states its inference code, each step naming the function of
FlagEmbedding/inference/embedder/encoder_only/m3.py (M3Embedder) or
FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py (EncoderOnlyEmbedderM3Model...) it copies. Where
MINIENC_FLAGEMBEDDING_PYTHON names a python that has FlagEmbedding (scripts/peers.sh builds one),
test_reference_is_flagembedding holds `Reference` to FlagEmbedding itself, run in that python
(tests/flagembedding_worker.py).
The model: weights/tiny-xlm-roberta (XLM-R, hidden 32, Unigram tokenizer) plus seeded heads saved as FlagEmbedding
saves them, `torch.save(linear.state_dict(), "colbert_linear.pt")`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

import minienc.heads.m3
from minienc.loading.checkpoint import CheckpointError
from minienc.formats.m3 import convert_heads
from minienc.heads.m3 import M3Encoder

from .conftest import add_to_hf_cache

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TEXTS = [
    "the the the encoder reads the the token",  # repeated ids: the lexical weight is the largest of them
    "头痛 🙂",  # characters outside the tiny vocabulary: <unk>, which lexical weights leave out
    "",
    "Bonjour, ça va ? Über naïve café.",
    "long " * 200,  # truncated at max_length
    "x y z the a",
    "attention mixes values",
]
PAIRS = [(TEXTS[i], TEXTS[j]) for i, j in [(0, 5), (1, 0), (2, 3), (6, 4), (0, 1), (5, 0), (4, 2), (3, 3), (6, 2)]]


def save_model(folder: Path, colbert_dim: int, seed: int = 0) -> Path:
    """tiny-xlm-roberta plus seeded heads saved as EncoderOnlyEmbedderM3Model.save() saves them,
    torch.save(linear.state_dict()). Each bias cancels the mean hidden state's projection, so that ColBERT
    similarities take both signs and about half the lexical weights are positive, as a trained head's do."""
    shutil.copytree(WEIGHTS / "tiny-xlm-roberta", folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.XLMRobertaModel.from_pretrained(folder, add_pooling_layer=False).eval()
    with torch.no_grad():
        inputs = tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
        mean = model(**inputs).last_hidden_state.mean((0, 1))  # (H,)
        torch.manual_seed(seed)
        hidden = model.config.hidden_size
        for name, head in {"colbert_linear": torch.nn.Linear(hidden, colbert_dim),
                           "sparse_linear": torch.nn.Linear(hidden, 1)}.items():
            head.bias.copy_(head.bias * 0.1 - head.weight @ mean)
            torch.save(head.state_dict(), folder / f"{name}.pt")
    return folder


class Reference:
    """FlagEmbedding v1.4.2's M3Embedder on CPU in float32 (it calls model.float() there), normalize_embeddings=True,
    pooling "cls": transformers' tokenizer and XLMRobertaModel, and torch.nn.Linear heads."""

    def __init__(self, folder: Path):
        # EncoderOnlyEmbedderM3Runner.get_model: AutoModel, Linear(H, colbert_dim), Linear(H, 1), torch.load
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.XLMRobertaModel.from_pretrained(folder, add_pooling_layer=False).eval()
        heads = {name: torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
                 for name in ("colbert_linear", "sparse_linear")}
        hidden = self.model.config.hidden_size
        self.colbert_linear = torch.nn.Linear(hidden, heads["colbert_linear"]["weight"].shape[0])
        self.colbert_linear.load_state_dict(heads["colbert_linear"])
        self.sparse_linear = torch.nn.Linear(hidden, 1)
        self.sparse_linear.load_state_dict(heads["sparse_linear"])
        self.vocab_size = self.model.config.vocab_size

    def unused_tokens(self) -> set[int]:
        # M3Embedder.encode_single_device._process_token_weights, its first loop
        unused = set()
        for _token in ["cls_token", "eos_token", "pad_token", "unk_token"]:
            if _token in self.tokenizer.special_tokens_map:
                unused.add(self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens_map[_token]))
        return unused

    @torch.no_grad()
    def forward(self, text_input, return_sparse_embedding: bool = False) -> dict:
        # EncoderOnlyEmbedderM3ModelForInference.forward, all three outputs
        last_hidden_state = self.model(**text_input, return_dict=True).last_hidden_state
        dense_vecs = last_hidden_state[:, 0]  # _dense_embedding, "cls"
        token_weights = torch.relu(self.sparse_linear(last_hidden_state))  # _sparse_embedding
        if return_sparse_embedding:  # _sparse_embedding, self.training False
            sparse_embedding = torch.zeros(text_input["input_ids"].size(0), self.vocab_size, dtype=token_weights.dtype)
            sparse_embedding = sparse_embedding.scatter_reduce(
                dim=-1, index=text_input["input_ids"], src=token_weights.squeeze(-1), reduce="amax")
            tok = self.tokenizer
            sparse_embedding[:, [tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id]] *= 0.0
            token_weights = sparse_embedding
        colbert_vecs = self.colbert_linear(last_hidden_state[:, 1:])  # _colbert_embedding
        colbert_vecs = colbert_vecs * text_input["attention_mask"][:, 1:][:, :, None].float()
        return {"dense_vecs": F.normalize(dense_vecs, dim=-1), "sparse_vecs": token_weights,
                "colbert_vecs": F.normalize(colbert_vecs, dim=-1)}

    def pad(self, examples: list[dict]):
        # FlagEmbedding.utils.tokenizer_compat.pad_with_compat, then tokenizer.pad
        columns = {key: [example[key] for example in examples] for key in examples[0]}
        return self.tokenizer.pad(columns, padding=True, return_tensors="pt")

    def encode(self, sentences: list[str], batch_size: int = 256, max_length: int = 128) -> dict:
        # M3Embedder.encode_single_device
        unused_tokens = self.unused_tokens()

        def _process_token_weights(token_weights: np.ndarray, input_ids: list):
            result = defaultdict(int)
            for w, idx in zip(token_weights, input_ids):
                if idx not in unused_tokens and w > 0:
                    idx = str(idx)
                    if w > result[idx]:
                        result[idx] = w
            return result

        def _process_colbert_vecs(colbert_vecs: np.ndarray, attention_mask: list):
            tokens_num = np.sum(attention_mask)
            return colbert_vecs[: tokens_num - 1]

        all_inputs = []
        for start_index in range(0, len(sentences), batch_size):
            inputs_batch = self.tokenizer(sentences[start_index : start_index + batch_size], truncation=True,
                                          max_length=max_length)
            all_inputs.extend({k: inputs_batch[k][i] for k in inputs_batch.keys()}
                              for i in range(len(sentences[start_index : start_index + batch_size])))
        length_sorted_idx = np.argsort([-len(x["input_ids"]) for x in all_inputs])
        all_inputs_sorted = [all_inputs[i] for i in length_sorted_idx]
        dense, lexical, colbert = [], [], []
        for start_index in range(0, len(sentences), batch_size):
            inputs_batch = self.pad(all_inputs_sorted[start_index : start_index + batch_size])
            outputs = self.forward(inputs_batch)
            dense.append(outputs["dense_vecs"].numpy())
            lexical.extend(map(_process_token_weights, outputs["sparse_vecs"].squeeze(-1).numpy(),
                               inputs_batch["input_ids"].numpy().tolist()))
            colbert.extend(map(_process_colbert_vecs, outputs["colbert_vecs"].numpy(),
                               inputs_batch["attention_mask"].numpy()))
        order = np.argsort(length_sorted_idx)
        return {"dense_vecs": np.concatenate(dense, axis=0)[order], "lexical_weights": [lexical[i] for i in order],
                "colbert_vecs": [colbert[i] for i in order]}

    def compute_score(self, sentence_pairs, batch_size=256, max_query_length=128, max_passage_length=128,
                      weights_for_different_modes=None) -> dict:
        # M3Embedder.compute_score_single_device, with compute_dense_score, compute_sparse_score and
        # compute_colbert_score of EncoderOnlyEmbedderM3Model (temperature 1)
        def _tokenize(texts: list, max_length: int):
            return self.tokenizer(texts, max_length=max_length, padding=True, return_token_type_ids=False,
                                  truncation=True, return_tensors="pt")

        all_scores = {"colbert": [], "sparse": [], "dense": [], "sparse+dense": [], "colbert+sparse+dense": []}
        for start_index in range(0, len(sentence_pairs), batch_size):
            sentences_batch = sentence_pairs[start_index : start_index + batch_size]
            queries_inputs = _tokenize([pair[0] for pair in sentences_batch], max_length=max_query_length)
            corpus_inputs = _tokenize([pair[1] for pair in sentences_batch], max_length=max_passage_length)
            q = self.forward(queries_inputs, return_sparse_embedding=True)
            p = self.forward(corpus_inputs, return_sparse_embedding=True)
            dense_scores = torch.matmul(q["dense_vecs"], p["dense_vecs"].transpose(0, 1))
            sparse_scores = torch.matmul(q["sparse_vecs"], p["sparse_vecs"].transpose(0, 1))
            token_scores = torch.einsum("qin,pjn->qipj", q["colbert_vecs"], p["colbert_vecs"])
            scores, _ = token_scores.max(-1)
            colbert_scores = scores.sum(1) / queries_inputs["attention_mask"][:, 1:].sum(-1, keepdim=True)
            if weights_for_different_modes is None:
                weights_for_different_modes, weight_sum = [1.0, 1.0, 1.0], 3
            else:
                weight_sum = sum(weights_for_different_modes)
            w = weights_for_different_modes
            inx = torch.arange(0, len(sentences_batch))
            dense_scores, sparse_scores, colbert_scores = (dense_scores[inx, inx].float(),
                                                           sparse_scores[inx, inx].float(),
                                                           colbert_scores[inx, inx].float())
            all_scores["colbert"].extend(colbert_scores.numpy().tolist())
            all_scores["sparse"].extend(sparse_scores.numpy().tolist())
            all_scores["dense"].extend(dense_scores.numpy().tolist())
            all_scores["sparse+dense"].extend(
                ((sparse_scores * w[1] + dense_scores * w[0]) / (w[1] + w[0])).numpy().tolist())
            all_scores["colbert+sparse+dense"].extend(
                ((colbert_scores * w[2] + sparse_scores * w[1] + dense_scores * w[0]) / weight_sum).numpy().tolist())
        return all_scores


# M3Embedder.compute_lexical_matching_score
def reference_lexical_matching_score(lexical_weights_1, lexical_weights_2):
    def _compute_single_lexical_matching_score(lw1, lw2):
        scores = 0
        for token, weight in lw1.items():
            if token in lw2:
                scores += weight * lw2[token]
        return scores

    if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
        return _compute_single_lexical_matching_score(lexical_weights_1, lexical_weights_2)
    return np.array([[_compute_single_lexical_matching_score(lw1, lw2) for lw2 in lexical_weights_2]
                     for lw1 in lexical_weights_1])


# M3Embedder.colbert_score
def reference_colbert_score(q_reps, p_reps):
    q_reps, p_reps = torch.from_numpy(q_reps), torch.from_numpy(p_reps)
    token_scores = torch.einsum("in,jn->ij", q_reps, p_reps)
    scores, _ = token_scores.max(-1)
    return torch.sum(scores) / q_reps.size(0)


@pytest.fixture(scope="module", params=[32, 16], ids=["colbert-HxH", "colbert-Hx16"])
def folder(request, tmp_path_factory) -> Path:
    """bge-m3's layout (H -> H ColBERT head, as bge-m3 ships it, and H -> 16), heads converted."""
    folder = save_model(tmp_path_factory.mktemp("m3") / "model", colbert_dim=request.param)
    convert_heads(folder)
    return folder


@pytest.fixture(scope="module")
def reference(folder) -> Reference:
    return Reference(folder)


# --- the reference itself ---------------------------------------------------------------------------------------

FLAGEMBEDDING_PYTHON = os.environ.get("MINIENC_FLAGEMBEDDING_PYTHON")
ENCODE_OPTIONS = [{"max_length": 128}, {"max_length": 9}, {"max_length": 20, "batch_size": 3}]
SCORE_OPTIONS = [{"batch_size": b, "max_query_length": 12, "max_passage_length": 20, "weights_for_different_modes": w}
                 for b in (256, 3) for w in (None, [0.4, 0.2, 0.4])]


@pytest.mark.skipif(not FLAGEMBEDDING_PYTHON, reason="MINIENC_FLAGEMBEDDING_PYTHON is not set: the python of a venv "
                    "with FlagEmbedding (scripts/peers.sh builds ~/.cache/minienc-peers/flagembedding)")
def test_reference_is_flagembedding(folder, reference):
    """`Reference` (transformers 5 in this environment) gives FlagEmbedding's own outputs (its venv's transformers)
    bit for bit: every encode output, every score, for the options the tests below use."""
    request = {"folder": str(folder), "colbert_dim": reference.colbert_linear.out_features,
               "threads": torch.get_num_threads(), "texts": TEXTS, "encode": ENCODE_OPTIONS,
               "pairs": PAIRS, "score": SCORE_OPTIONS}
    worker = Path(__file__).with_name("flagembedding_worker.py")
    done = subprocess.run([FLAGEMBEDDING_PYTHON, str(worker)], input=json.dumps(request), capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout)
    for options, flag in zip(ENCODE_OPTIONS, theirs["encode"], strict=True):
        ours = reference.encode(TEXTS, **options)
        assert np.array_equal(ours["dense_vecs"], np.array(flag["dense_vecs"], dtype=np.float32)), options
        assert [{k: float(v) for k, v in w.items()} for w in ours["lexical_weights"]] == flag["lexical_weights"]
        assert [c.tolist() for c in ours["colbert_vecs"]] == flag["colbert_vecs"], options
    for options, flag in zip(SCORE_OPTIONS, theirs["score"], strict=True):
        assert reference.compute_score(PAIRS, **options) == flag, options


# --- the heads' files ---------------------------------------------------------------------------------------------


def test_convert_heads_writes_the_same_tensors(tmp_path, monkeypatch):
    folder = save_model(tmp_path / "m", colbert_dim=32)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    written = convert_heads(folder)
    assert written == [folder / "colbert_linear.safetensors", folder / "sparse_linear.safetensors"]
    assert calls == [{"weights_only": True, "map_location": "cpu"}] * 2
    for path in written:
        pickled = real_load(path.with_suffix(".pt"), weights_only=True)
        converted = minienc.loading.checkpoint.read_safetensors(path)
        assert set(converted) == set(pickled) == {"weight", "bias"}
        assert all(torch.equal(converted[k], pickled[k]) for k in pickled)


class Payload:
    """An object whose unpickling would create `marker`: what a malicious .pt file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_convert_heads_runs_no_code_from_the_pickle(tmp_path):
    folder = save_model(tmp_path / "m", colbert_dim=32)
    marker = tmp_path / "code-ran"
    torch.save({"weight": torch.zeros(1, 32), "bias": Payload(marker)}, folder / "sparse_linear.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        convert_heads(folder)
    assert not marker.exists()
    torch.save({"weight": torch.zeros(1, 32)}, folder / "sparse_linear.pt")  # loads, but is no Linear
    with pytest.raises(CheckpointError, match=r"sparse_linear.pt is not a Linear layer's state dict .* \['weight'\]"):
        convert_heads(folder)


def test_convert_heads_refuses_torch_before_2_6(tmp_path, monkeypatch, capsys):
    """Before 2.6, weights_only=True could be made to run code: refused, from Python and as one CLI error line."""
    from minienc.cli import main

    folder = save_model(tmp_path / "m", colbert_dim=32)
    capsys.readouterr()  # transformers' loading messages
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(ImportError, match=r"needs torch 2.6 or later.*CVE-2025-32434.*this is torch 2.5.1"):
        convert_heads(folder)
    assert main(["convert-heads", str(folder)]) == 1
    assert capsys.readouterr().err.startswith("minienc convert-heads: error: convert_heads needs torch 2.6 or later")
    assert not (folder / "colbert_linear.safetensors").exists()


def test_loading_never_unpickles(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called while loading")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert M3Encoder.from_pretrained(folder).encode("a b")["dense_vecs"].shape == (32,)


def test_pickle_only_heads_name_the_command(tmp_path):
    folder = save_model(tmp_path / "m", colbert_dim=32)
    with pytest.raises(CheckpointError, match=f"`minienc convert-heads {folder}`"):
        M3Encoder.from_pretrained(folder)
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        (folder / name).unlink()
    with pytest.raises(CheckpointError, match="no colbert_linear.safetensors .*hf download BAAI/bge-m3"):
        M3Encoder.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="has no colbert_linear.pt and no sparse_linear.pt"):
        convert_heads(folder)


def test_repo_id_and_revision_from_the_hub_cache(tmp_path, monkeypatch):
    """A Hub repo id resolves from the Hugging Face cache, at the revision asked for, heads included."""
    from huggingface_hub import constants

    cache, repo = tmp_path / "hub", "minienc-test/tiny-m3"
    for seed, commit, ref in ((0, "a" * 40, "main"), (1, "b" * 40, "v1")):
        folder = save_model(tmp_path / f"m{seed}", colbert_dim=16, seed=seed)
        convert_heads(folder)
        add_to_hf_cache(cache, repo, folder, commit, ref=ref)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    def colbert(name_or_path, **options) -> np.ndarray:
        return M3Encoder.from_pretrained(name_or_path, **options).encode(TEXTS[0], return_colbert_vecs=True)[
            "colbert_vecs"]

    assert np.array_equal(colbert(repo), colbert(tmp_path / "m0"))
    assert np.array_equal(colbert(repo, revision="v1"), colbert(tmp_path / "m1"))
    assert not np.array_equal(colbert(tmp_path / "m0"), colbert(tmp_path / "m1"))  # the heads' seeds differ


def test_head_of_the_wrong_width_is_refused(tmp_path):
    folder = save_model(tmp_path / "m", colbert_dim=32)
    torch.save(torch.nn.Linear(32, 2).state_dict(), folder / "sparse_linear.pt")
    convert_heads(folder)
    with pytest.raises(CheckpointError, match=r"sparse_linear.safetensors: expected weight \(1, 32\) and bias \(1,\); found .*\(2, 32\)"):
        M3Encoder.from_pretrained(folder)


# --- encode -------------------------------------------------------------------------------------------------------


def test_special_tokens_are_flagembeddings(folder, reference, tmp_path):
    model = M3Encoder.from_pretrained(folder)
    assert model.unused_ids == reference.unused_tokens()
    renamed = Path(shutil.copytree(folder, tmp_path / "renamed"))
    (renamed / "special_tokens_map.json").write_text('{"unk_token": {"content": "\\u2581the"}}')
    vocab = model.tokenizer.tokenizer
    expected = {vocab.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "\u2581the")}
    assert M3Encoder.from_pretrained(renamed).unused_ids == expected


@pytest.mark.parametrize("max_length", [128, 9])
def test_padded_identical_to_flagembedding(folder, reference, max_length):
    """Padded execution runs transformers' ops on FlagEmbedding's batch shapes (one batch here, both sides), heads
    included: the same bits, every output, and FlagEmbedding's types (str keys, NumPy float32 weights)."""
    model = M3Encoder.from_pretrained(folder, execution="padded")
    ours = model.encode(TEXTS, max_length=max_length, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    theirs = reference.encode(TEXTS, max_length=max_length)
    assert ours["dense_vecs"].dtype == np.float32 and np.array_equal(ours["dense_vecs"], theirs["dense_vecs"])
    assert ours["lexical_weights"] == theirs["lexical_weights"]
    for mine in ours["lexical_weights"]:
        assert type(mine) is defaultdict and all(type(k) is str and type(v) is np.float32 for k, v in mine.items())
    assert [c.shape for c in ours["colbert_vecs"]] == [c.shape for c in theirs["colbert_vecs"]]
    assert all(np.array_equal(a, b) for a, b in zip(ours["colbert_vecs"], theirs["colbert_vecs"]))
    # not vacuous: special tokens had positive weights to drop, and a repeated token kept its largest weight
    every = model.outputs(TEXTS, max_length, batch_size=256, token_budget=2048)  # each token's weight, before the dict
    assert any(w > 0 and i in model.unused_ids for o in every for w, i in zip(o.weights.tolist(), o.ids.tolist()))
    raw, ids = every[0].weights.numpy(), every[0].ids.tolist()
    repeated = [w for w, i in zip(raw, ids) if i == ids[1]]
    assert len(set(repeated)) > 1 and ours["lexical_weights"][0][str(ids[1])] == max(repeated)


def test_packed_close_to_flagembedding(folder, reference):
    """Packed execution: the same math on unpadded texts, another kernel (oneDNN on x86), so the last bits differ.
    Within 1e-6 for the unit vectors (a few float32 ulps); lexical weights, unnormalized with |w| up to ~2, compared
    as vocabulary-sized vectors within 1e-5 (a weight near 0 may fall on either side of relu's 0)."""
    ours = M3Encoder.from_pretrained(folder).encode(TEXTS, return_dense=True, return_sparse=True,
                                                    return_colbert_vecs=True)
    theirs = reference.encode(TEXTS)
    assert np.abs(ours["dense_vecs"] - theirs["dense_vecs"]).max() <= 1e-6
    for a, b in zip(ours["colbert_vecs"], theirs["colbert_vecs"]):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6
    for a, b in zip(ours["lexical_weights"], theirs["lexical_weights"]):
        assert max((abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b)), default=0) <= 1e-5


def test_batch_invariance_in_packed_execution(folder):
    model = M3Encoder.from_pretrained(folder)
    if not model.batch_invariant:
        pytest.skip("the row blocks failed their probe on this machine (minienc/runtime/matmul.py reports it)")
    together = model.encode(TEXTS, return_sparse=True, return_colbert_vecs=True)
    for i, text in enumerate(TEXTS):
        alone = model.encode(text, return_sparse=True, return_colbert_vecs=True)
        assert np.array_equal(alone["dense_vecs"], together["dense_vecs"][i])
        assert alone["lexical_weights"] == together["lexical_weights"][i]
        assert np.array_equal(alone["colbert_vecs"], together["colbert_vecs"][i])


def test_set_matmul_reaches_the_heads(folder):
    model = M3Encoder.from_pretrained(folder)
    model.set_matmul("torch", None)
    assert model.colbert_linear.matmul is model.sparse_linear.matmul is model.kernel
    assert model.batch_invariant is False  # one call per matrix: nothing is promised


def test_output_forms(folder):
    model = M3Encoder.from_pretrained(folder)
    default = model.encode(["a b", "c"])  # FlagEmbedding's defaults: dense only
    assert default["dense_vecs"].shape == (2, 32) and default["lexical_weights"] is default["colbert_vecs"] is None
    one = model.encode("a b", return_dense=False, return_sparse=True, return_colbert_vecs=True)
    assert one["dense_vecs"] is None and isinstance(one["lexical_weights"], dict)
    assert one["colbert_vecs"].shape[0] == len(model.tokenizer.tokenize(["a b"])[0].ids) - 1
    empty = model.encode([], return_sparse=True, return_colbert_vecs=True)
    assert empty["dense_vecs"].shape == (0, 32) and empty["lexical_weights"] == empty["colbert_vecs"] == []
    assert np.array_equal(model.encode(TEXTS[::-1])["dense_vecs"][::-1], model.encode(TEXTS)["dense_vecs"])
    short = M3Encoder.from_pretrained(folder, query_max_length=4)
    assert short.encode_queries(TEXTS[0], return_colbert_vecs=True)["colbert_vecs"].shape[0] == 3  # <s> a b </s>
    assert short.encode_corpus(TEXTS[0], return_colbert_vecs=True)["colbert_vecs"].shape[0] > 3
    with pytest.raises(ValueError, match="Must choose one or more"):
        model.encode("a", return_dense=False)
    with pytest.raises(ValueError, match="max_length must be from 2"):
        model.encode("a", max_length=1000)


def test_lexical_and_colbert_scores_as_flagembedding(folder):
    out = M3Encoder.from_pretrained(folder).encode(TEXTS, return_sparse=True, return_colbert_vecs=True)
    lw, cv = out["lexical_weights"], out["colbert_vecs"]
    pairs = [(0, 5), (0, 0), (1, 3), (6, 0)]
    for i, j in pairs:
        mine = M3Encoder.compute_lexical_matching_score(lw[i], lw[j])
        theirs = reference_lexical_matching_score(lw[i], lw[j])
        assert mine == theirs and type(mine) is type(theirs)
        assert torch.equal(M3Encoder.colbert_score(cv[i], cv[j]), reference_colbert_score(cv[i], cv[j]))
    assert any(reference_lexical_matching_score(lw[i], lw[j]) > 0 for i, j in pairs)  # shared tokens exist
    assert np.array_equal(minienc.heads.m3.compute_lexical_matching_score(lw[:3], lw[2:]),
                          reference_lexical_matching_score(lw[:3], lw[2:]))
    with pytest.raises(ValueError, match="The input format of lexical_weights is not correct"):
        minienc.heads.m3.compute_lexical_matching_score(lw[0], lw)


@pytest.mark.parametrize("batch_size", [256, 3])
@pytest.mark.parametrize("weights", [None, [0.4, 0.2, 0.4]])
def test_compute_score_as_flagembedding(folder, reference, batch_size, weights):
    """Padded, each batch of pairs is FlagEmbedding's padded batch, so the dense scores (the same matrix product)
    are its bits. Sparse and ColBERT scores sum the same products in another order (a dict walk for its
    vocabulary-sized product; text by text for its batch-wide einsum): within 1e-6 (a few float32 ulps; every
    score is at most a few units)."""
    model = M3Encoder.from_pretrained(folder, execution="padded")
    kwargs = dict(batch_size=batch_size, max_query_length=12, max_passage_length=20,
                  weights_for_different_modes=weights)
    ours, theirs = model.compute_score(PAIRS, **kwargs), reference.compute_score(PAIRS, **kwargs)
    assert list(ours) == list(theirs) and all(len(v) == len(PAIRS) for v in ours.values())
    assert ours["dense"] == theirs["dense"]
    for mode in theirs:
        np.testing.assert_allclose(ours[mode], theirs[mode], rtol=0, atol=1e-6, err_msg=mode)
    # not vacuous: the batch's padding changed some ColBERT score from the unpadded one, and we follow it
    queries = reference.encode([q for q, _ in PAIRS], max_length=12)["colbert_vecs"]
    passages = reference.encode([p for _, p in PAIRS], max_length=20)["colbert_vecs"]
    unpadded = [float(reference_colbert_score(q, p)) for q, p in zip(queries, passages)]
    assert max(abs(a - b) for a, b in zip(theirs["colbert"], unpadded)) > 1e-3


def test_bad_pairs_and_options_are_named(folder):
    model = M3Encoder.from_pretrained(folder)
    for bad, error, message in (([("a", "b"), ("a", None)], TypeError, "pair 1: the passage is NoneType, not str"),
                                ([(1, "b")], TypeError, "pair 0: the query is int, not str"),
                                ([("a", "b", "c")], TypeError, r"pair 0 is \('a', 'b', 'c'\)"),
                                ([("a",)], TypeError, r"pair 0 is \('a',\)"),
                                (None, TypeError, "takes a \\(query, passage\\) pair or a list of them, got NoneType"),
                                ([("a", "\ud800")], ValueError, "pair 0: the passage is not valid Unicode")):
        with pytest.raises(error, match=message):
            model.compute_score(bad)
    assert model.compute_score(()) == [] and model.compute_score([]) == []
    for options, message in ((dict(batch_size=0), "batch_size must be"), (dict(max_query_length=0), "max_length")):
        with pytest.raises(ValueError, match=message):
            model.compute_score(PAIRS, **options)
    for options, message in ((dict(batch_size=0), "batch_size must be"), (dict(max_length=0), "max_length must be")):
        with pytest.raises(ValueError, match=message):
            model.encode(TEXTS, **options)


def test_compute_score_forms(folder):
    model = M3Encoder.from_pretrained(folder)
    one = model.compute_score(PAIRS[0], weights_for_different_modes=[0.4, 0.2, 0.4])
    assert set(one) == set(minienc.heads.m3.SCORE_MODES) and all(type(v) is float for v in one.values())
    listed = model.compute_score(PAIRS[:1], weights_for_different_modes=[0.4, 0.2, 0.4])
    assert one == {mode: scores[0] for mode, scores in listed.items()}
    assert model.compute_score([]) == []
    with pytest.raises(ValueError, match="weights_for_different_modes is \\[dense, sparse, colbert\\], 3 numbers"):
        model.compute_score(PAIRS, weights_for_different_modes=[1.0, 1.0])
