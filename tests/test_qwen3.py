"""Qwen3 (minienc/model/qwen3.py) against transformers' Qwen3Model and sentence-transformers, on seeded models built
here: the last hidden state bit for bit (float32 and bfloat16, eager and sdpa, GQA ratios 1, 2 and 4, a head size
other than hidden / heads, no padding, right and left padding), and Qwen3-Embedding's sentence vectors (last-token
pooling, the end-of-text token the tokenizer appends, prompts, either padding side) as sentence-transformers gives
them. Real checkpoints (Qwen/Qwen3-Embedding-0.6B, 4B, 8B) cannot be downloaded here: these are the same
architecture, smaller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders, trainers

import minienc
from minienc.model.attention import CAUSAL_FORMS, matches_for

EOT = "<|endoftext|>"
TEXTS = ["头痛", "脑袋痛死", "呕吐", "How do I initialise DDR4 memory?", "", "🙂🚀 emoji", "x",
         "A medium sentence about decoders used as encoders, rotary positions and the last token. " * 4]
# (query heads, key / value heads, head size): GQA ratios 1, 2 and 4; head sizes other than hidden / heads (64 / 4)
SHAPES = [(4, 4, 16), (4, 2, 24), (8, 2, 12)]


def qwen3_config(heads: int, kv_heads: int, head_dim: int, **overrides) -> transformers.Qwen3Config:
    return transformers.Qwen3Config(vocab_size=400, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                                    max_position_embeddings=256, rms_norm_eps=1e-6, **overrides)


def save_qwen3(folder: Path, config: transformers.Qwen3Config, model_class=transformers.Qwen3Model,
               seed: int = 0) -> Path:
    """A seeded model whose norms are not all ones (so that a missing weight would show), saved as transformers
    saves it."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return folder


def reference(folder: Path, attention: str, dtype: torch.dtype):
    """transformers' model as users load it, in `dtype` (from_pretrained's dtype: .to() would also cast what it keeps
    in float32)."""
    return transformers.AutoModel.from_pretrained(folder, attn_implementation=attention, dtype=dtype).eval()


def batch(seed: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Four rows of 11 token ids, and an attention mask: nothing padded, or rows 1-3 padded on one side."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 400, (4, 11), generator=gen)
    mask = torch.ones(4, 11, dtype=torch.long)
    for row, n in ((1, 7), (2, 3), (3, 1)):
        if side == "right":
            mask[row, n:] = 0
        elif side == "left":
            mask[row, : 11 - n] = 0
    return ids, mask


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}q-{s[1]}kv-{s[2]}hs")
def decoder_dir(request, tmp_path_factory) -> Path:
    return save_qwen3(tmp_path_factory.mktemp("qwen3"), qwen3_config(*request.param))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", sorted(CAUSAL_FORMS))
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(decoder_dir, attention, dtype, side):
    """Every causal form that claims to match transformers does, on every real token (padding's rows are not
    results: a left-padded row's first queries see no key at all)."""
    assert matches_for(attention, "qwen3") == attention
    ids, mask = batch(seed=1, side=side)
    theirs = reference(decoder_dir, attention, dtype)
    ours = minienc.Encoder.from_pretrained(decoder_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, attention_mask=mask)
    assert b.dtype == dtype and b.shape == a.shape
    assert torch.equal(a[mask.bool()], b[mask.bool()])


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_causal_lm_checkpoints_load(tmp_path, tied):
    """A Qwen3ForCausalLM folder (the model under 'model.', an lm_head stored only when untied) loads as the bare
    model, with transformers' Qwen3Model's bits."""
    folder = save_qwen3(tmp_path, qwen3_config(4, 2, 16, tie_word_embeddings=tied), transformers.Qwen3ForCausalLM)
    ids, mask = batch(seed=2, side="right")
    theirs = reference(folder, "sdpa", torch.float32)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = minienc.Encoder.from_pretrained(folder)(ids, attention_mask=mask)
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def test_left_padding_shifts_the_positions(decoder_dir):
    """transformers counts positions from each row's first token, padding included: a left-padded text runs at
    positions shifted by its padding. Rotary positions make attention depend on the distance between two tokens only,
    so the shift changes the result by rounding alone: left padding, right padding, the text alone and the text at
    shifted positions agree within float32 rounding (their matrices have other shapes, so not to the bit)."""
    ids, _ = batch(seed=3, side="none")
    model = minienc.Encoder.from_pretrained(decoder_dir, attention="eager")
    left = torch.cat([ids[:1, :3], ids[:1, :5]], dim=1)
    right = torch.cat([ids[:1, :5], ids[:1, :3]], dim=1)
    with torch.inference_mode():
        alone = model(ids[:1, :5])[0]
        padded_left = model(left, attention_mask=torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]]))[0, 3:]
        padded_right = model(right, attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]]))[0, :5]
        shifted = model(ids[:1, :5], position_ids=torch.arange(100, 105)[None])[0]
        absolute = model.embed(ids[:1, :5])  # what the positions rotate: not the same at 0..4 and at 100..104
    for other in (padded_left, padded_right, shifted):
        torch.testing.assert_close(other, alone, rtol=0, atol=1e-5)
    cos, sin = minienc.model.blocks.rotary_angles(torch.arange(5)[None], model.inv_freq, torch.float32)
    cos_far, _ = minienc.model.blocks.rotary_angles(torch.arange(100, 105)[None], model.inv_freq, torch.float32)
    assert absolute.shape == (1, 5, 64) and not torch.allclose(cos, cos_far, atol=0.1)


def test_packed_texts_are_the_texts_alone(decoder_dir):
    """Packed (one row, each text's span): positions restart at each text and each text attends causally to itself
    alone, so a text's states are its states alone, within float32 rounding of other matrix shapes."""
    ids, _ = batch(seed=4, side="none")
    model = minienc.Encoder.from_pretrained(decoder_dir)
    lengths = [11, 4, 1, 7]
    row = torch.cat([ids[i, :n] for i, n in enumerate(lengths)])[None]
    ends = np.cumsum(lengths).tolist()
    spans = list(zip([0, *ends[:-1]], ends))
    with torch.inference_mode():
        packed = model(row, spans=spans)[0]
        for i, (a, b) in enumerate(spans):
            alone = model(ids[i : i + 1, : lengths[i]])[0]
            torch.testing.assert_close(packed[a:b], alone, rtol=0, atol=1e-5)


def test_config_refusals(tmp_path):
    folder = save_qwen3(tmp_path, qwen3_config(4, 2, 16))
    config = json.loads((folder / "config.json").read_text())
    for changes, message in (({"num_key_value_heads": 3}, "num_key_value_heads \\(3\\) does not divide"),
                             ({"use_sliding_window": True}, "sliding-window attention layers"),
                             ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rotary scaling"),
                             ({"head_dim": 15}, "even head_dim")):
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(ValueError, match=message):
            minienc.Encoder.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown attention 'flash9'"):
        minienc.Encoder.from_pretrained(folder, attention="flash9")


# --- sentence vectors: Qwen3-Embedding as sentence-transformers gives them ------------------------------------------


def byte_level_tokenizer(folder: Path, padding_side: str) -> None:
    """A byte-level BPE tokenizer trained here, whose post-processor appends the end-of-text token (Qwen3-Embedding's
    does), the same token padding uses; and the tokenizer_config.json transformers reads beside it."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=380, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([*TEXTS, "Instruct: find a paragraph\nQuery:", "headache migraine nausea"] * 3,
                                  trainer)
    eot = tokenizer.token_to_id(EOT)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOT}", special_tokens=[(EOT, eot)])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT, "pad_token": EOT,
        "padding_side": padding_side, "model_max_length": 32768}))


@pytest.fixture(scope="module", params=["left", "right"])
def embedding_dir(request, tmp_path_factory) -> Path:
    """A sentence-transformers folder as Qwen3-Embedding's: Transformer, last-token Pooling, Normalize, a query
    prompt; saved by sentence-transformers itself."""
    root = tmp_path_factory.mktemp(f"qwen3-embedding-{request.param}")
    model_dir = save_qwen3(root / "model", qwen3_config(4, 2, 24, pad_token_id=None))
    byte_level_tokenizer(model_dir, request.param)
    transformer = Transformer(str(model_dir), max_seq_length=48)
    st = SentenceTransformer(modules=[transformer, Pooling(64, pooling_mode="lasttoken"), Normalize()], device="cpu",
                             prompts={"query": "Instruct: find a paragraph\nQuery:", "document": ""})
    st.save(str(root / "st"))
    return root / "st"


def test_tokenizer_appends_end_of_text_and_pads_on_its_side(embedding_dir):
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, execution="padded")
    st = SentenceTransformer(str(embedding_dir), device="cpu")
    theirs = st.tokenize(["头痛", "How do I initialise DDR4 memory?"])
    mine = ours.tokenize(["头痛", "How do I initialise DDR4 memory?"])
    assert torch.equal(mine["attention_mask"], theirs["attention_mask"])
    real = theirs["attention_mask"].bool()
    assert torch.equal(mine["input_ids"][real], theirs["input_ids"][real])
    assert ours.tokenizer.padding_side == st.tokenizer.padding_side
    eot = st.tokenizer.convert_tokens_to_ids(EOT)
    last = mine["input_ids"][0, -1] if ours.tokenizer.padding_side == "left" else mine["input_ids"][0, real[0].sum() - 1]
    assert last == eot


def test_sentence_vectors_identical_to_sentence_transformers(embedding_dir):
    """Padded execution: sentence-transformers' batches, padding side and bits; documents and queries (the folder's
    prompt before the text); batch size 3 so that several batches of several lengths run."""
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, execution="padded")
    st = SentenceTransformer(str(embedding_dir), device="cpu")
    assert np.array_equal(ours.encode(TEXTS, batch_size=3), st.encode(TEXTS, batch_size=3))
    assert np.array_equal(ours.encode_query(TEXTS[:3]), st.encode_query(TEXTS[:3]))
    assert np.array_equal(ours.encode_document(TEXTS[:3]), st.encode_document(TEXTS[:3]))


def test_packed_within_1e5(embedding_dir):
    """Packed execution (the default): within 1e-5 of sentence-transformers in float32."""
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir)
    st = SentenceTransformer(str(embedding_dir), device="cpu")
    np.testing.assert_allclose(ours.encode(TEXTS), st.encode(TEXTS), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_packed_batch_invariant(embedding_dir, dtype):
    """Where the row blocks pass their probes on this machine, a text's vector is the same bits alone and in a batch
    (a decoder's causal attention runs text by text, as BERT's does)."""
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, dtype=dtype)
    if not ours.batch_invariant:
        pytest.skip(f"matmul {ours.matmul_name!r} failed the row-block probe on this machine")
    vectors = ours.encode(TEXTS)
    assert all(np.array_equal(ours.encode([text])[0], vectors[i]) for i, text in enumerate(TEXTS))


def test_bfloat16_padded_identical_to_sentence_transformers_bfloat16(embedding_dir):
    """Padded execution in bfloat16 (what sentence-transformers runs a checkpoint stored in bfloat16 in, by default,
    as Qwen3-Embedding's is): its bits."""
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, execution="padded", dtype="bfloat16")
    st = SentenceTransformer(str(embedding_dir), device="cpu", model_kwargs={"dtype": torch.bfloat16})
    assert np.array_equal(ours.encode(TEXTS, batch_size=3), st.encode(TEXTS, batch_size=3))


def test_older_config_spelling(tmp_path):
    """config.json as Qwen3-Embedding's is written (transformers 4: rope_theta at the top level, rope_scaling null,
    no rope_parameters) loads with transformers' bits."""
    folder = save_qwen3(tmp_path, qwen3_config(4, 2, 16, rope_theta=1000000.0))
    config = json.loads((folder / "config.json").read_text())
    theta = config.pop("rope_parameters")["rope_theta"]
    (folder / "config.json").write_text(json.dumps({**config, "rope_theta": theta, "rope_scaling": None}))
    ids, mask = batch(seed=5, side="left")
    with torch.inference_mode():
        a = reference(folder, "sdpa", torch.float32)(input_ids=ids, attention_mask=mask).last_hidden_state
        b = minienc.Encoder.from_pretrained(folder)(ids, attention_mask=mask)
    assert minienc.Encoder.from_pretrained(folder).config.rope_theta == 1000000.0
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def test_bfloat16_within_sentence_transformers_own_drift(embedding_dir):
    """The bfloat16 fast path on a decoder: no further from sentence-transformers' float32 vectors than twice the
    distance of its own bfloat16 vectors (as tests/test_fast_path.py holds BERT's)."""
    st32 = SentenceTransformer(str(embedding_dir), device="cpu").encode(TEXTS)
    st16 = SentenceTransformer(str(embedding_dir), device="cpu", model_kwargs={"dtype": torch.bfloat16}).encode(TEXTS)
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, dtype="bfloat16").encode(TEXTS)
    assert ours.dtype == np.float32
    reference_drift, our_drift = np.abs(st16 - st32).max(), np.abs(ours - st32).max()
    assert our_drift <= 2 * reference_drift, f"ours {our_drift:.3e} vs sentence-transformers {reference_drift:.3e}"


def test_parity_and_trace_commands(embedding_dir, capsys):
    """`minienc parity` holds every stage of the decoder to transformers' (the residual stream after each block and
    the final norm) and the sentence vector to sentence-transformers'; `minienc trace` walks one text through it."""
    from minienc.cli import main
    from minienc.parity import run_parity

    rows, reference = run_parity(embedding_dir, "sdpa")
    assert reference == "sdpa" and [r.stage for r in rows][0] == "embeddings"
    assert [r.stage for r in rows][-3:] == ["norm", "last_hidden_state", "sentence_embedding"]
    assert all(r.identical for r in rows)
    assert main(["trace", "--model", str(embedding_dir), "头痛 is a headache"]) == 0
    out = capsys.readouterr().out
    assert "3. decoder layers" in out and "final RMSNorm" in out and "4. pooling (lasttoken)" in out
    assert f"'{EOT}']" in out  # the end-of-text token the tokenizer appends is the last, pooled one


@pytest.mark.parametrize("name", ["tiny-qwen3-embedding", "tiny-bert"])
def test_attention_weights_and_plot(name, tmp_path):
    """`minienc trace --plot`: the weights it draws are the model's own (transformers' eager attentions for that
    layer and head, float32 rounding apart), under the family's mask: a decoder's causal triangle, BERT's square."""
    from minienc.cli import main
    from minienc.plot import attention_weights

    folder = Path(__file__).resolve().parent.parent / "weights" / name
    model = minienc.SentenceEncoder.from_pretrained(folder, execution="padded")
    text = "头痛 is a headache"
    tokens, weights, allowed = attention_weights(model, text, layer=1, head=2)
    T = len(tokens)
    assert weights.shape == allowed.shape == (T, T)
    assert torch.equal(allowed, torch.ones(T, T, dtype=torch.bool).tril() if name != "tiny-bert" else
                       torch.ones(T, T, dtype=torch.bool))
    assert torch.equal(weights[~allowed], torch.zeros(int((~allowed).sum())))
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(T))
    theirs = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    batch = model.tokenize([text])
    inputs = {key: value for key, value in batch.items() if name == "tiny-bert" or key != "token_type_ids"}
    with torch.inference_mode():
        reference = theirs(**inputs, output_attentions=True).attentions[1][0, 2]  # (T, T)
    torch.testing.assert_close(weights, reference, rtol=0, atol=1e-6)
    pytest.importorskip("matplotlib")
    assert main(["trace", "--model", str(folder), text, "--plot", str(tmp_path / "a.png"), "--layer", "1",
                 "--head", "2"]) == 0
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["trace", "--model", str(folder), text, "--plot", str(tmp_path / "b.png"), "--head", "9"]) == 1
