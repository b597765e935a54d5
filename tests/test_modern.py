"""ModernBERT (minienc/model/modernbert.py) and EmbeddingGemma (minienc/model/gemma3.py) against transformers'
ModernBertModel / Gemma3TextModel and sentence-transformers, on seeded models built here: the last hidden state bit
for bit (float32 and bfloat16, eager and sdpa, texts shorter and longer than the window, no, right and left padding),
the masks by transformers' own rules, the local attention against a textbook computation, and the sentence vectors
(mean pooling; EmbeddingGemma's two Dense layers; prompts) as sentence-transformers gives them. Real checkpoints
(answerdotai/ModernBERT-base, Alibaba-NLP/gte-modernbert-base, nomic-ai/modernbert-embed-base,
google/embeddinggemma-300m) cannot be downloaded here: these are the same architectures, smaller."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import minienc
from minienc.model.attention import UPCAST_FORMS, band

WINDOW = 8  # each family's local layers see 8 tokens each way: local_attention / sliding_window 16
TEXTS = ["头痛", "脑袋痛死", "呕吐", "How do I initialise DDR4 memory?", "", "🙂🚀 emoji", "x",
         "A medium sentence about encoders whose layers alternate local and global attention, longer than the "
         "window. " * 3]


def modernbert_config(**overrides) -> transformers.ModernBertConfig:
    """Four layers: 0 and 3 global, 1 and 2 local (every third layer global, as ModernBERT-base)."""
    settings = dict(vocab_size=400, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                    local_attention=2 * WINDOW, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
                    eos_token_id=2, cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=3,
                    global_rope_theta=1000.0, local_rope_theta=100.0)
    return transformers.ModernBertConfig(**{**settings, **overrides})


def gemma_config(**overrides) -> transformers.Gemma3TextConfig:
    """Seven layers: 0-4 and 6 local, 5 global (EmbeddingGemma's pattern); 4 query heads sharing 2 key heads of 24
    (not hidden / heads), a scale from query_pre_attn_scalar, bidirectional; a hidden size whose square root (the
    embeddings' scale) is not a bfloat16 number."""
    settings = dict(vocab_size=400, hidden_size=48, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=20, sliding_window=2 * WINDOW,
                    use_bidirectional_attention=True, max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                    eos_token_id=1, rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                                     "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}})
    return transformers.Gemma3TextConfig(**{**settings, **overrides})


FAMILIES = {"modernbert": (modernbert_config, transformers.ModernBertModel),
            "gemma3": (gemma_config, transformers.Gemma3TextModel)}


def save_seeded(folder: Path, config, model_class, seed: int = 0) -> Path:
    """A seeded model whose norms are not their initial values (so that a missing weight or a wrong norm would
    show), saved as transformers saves it."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(-0.5, 0.5) if name.endswith("bias") else parameter.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return folder


def reference(folder: Path, attention: str, dtype: torch.dtype = torch.float32):
    return transformers.AutoModel.from_pretrained(folder, attn_implementation=attention, dtype=dtype).eval()


def copy_folder(source: Path, target: Path) -> Path:
    """A copy of a model folder whose config.json a test may rewrite."""
    return Path(shutil.copytree(source, target, dirs_exist_ok=True))


def batch(T: int, side: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of T token ids and their mask: nothing padded, or rows 1 and 2 padded on one side."""
    ids = torch.randint(3, 400, (3, T), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(3, T, dtype=torch.long)
    for row, n in ((1, T // 2), (2, T - 1)):
        if side == "right":
            mask[row, n:] = 0
        elif side == "left":
            mask[row, : T - n] = 0
    return ids, mask


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model_dir(request, tmp_path_factory) -> Path:
    config, model_class = FAMILIES[request.param]
    return save_seeded(tmp_path_factory.mktemp(request.param), config(), model_class)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
@pytest.mark.parametrize("T", [6, WINDOW, 40], ids=["shorter", "window", "longer"])
def test_last_hidden_state_bit_for_bit(model_dir, attention, dtype, side, T):
    """Both attention forms, on every real token, for texts shorter than the window, as long, and five times
    longer (where local layers see a part of the text only)."""
    ids, mask = batch(T, side)
    theirs = reference(model_dir, attention, dtype)
    ours = minienc.Encoder.from_pretrained(model_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, attention_mask=mask)
    assert b.dtype == dtype and b.shape == a.shape
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def layer_masks(model, ids, mask, ours: bool) -> list:
    """The mask each layer is handed, read as the model runs (transformers passes it by name, minienc by position)."""
    seen = []
    for layer in model.layers:
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(args[3] if ours else kwargs["attention_mask"]), with_kwargs=True)
    with torch.inference_mode():
        model(ids, attention_mask=mask) if ours else model(input_ids=ids, attention_mask=mask)
    return seen


@pytest.mark.parametrize("T", [5, WINDOW - 1, WINDOW, WINDOW + 1, 30])
@pytest.mark.parametrize("side", ["absent", "none", "right", "left"])
def test_masks_by_transformers_rules(model_dir, T, side):
    """Each layer gets the mask transformers gives it under sdpa, and no mask exactly where transformers gives none
    (ModernBERT: global layers where nothing is padded, local layers where also the text is shorter than the window;
    Gemma: always a mask). On the CPU this was written on (an Intel Xeon with AMX) a masked and an unmasked sdpa call
    gave the same bits, so there only this test held the rule; on CUDA they choose different kernels."""
    ids, mask = batch(T, "none" if side == "absent" else side, seed=T)
    mask = None if side == "absent" else mask  # no attention_mask passed at all
    theirs = layer_masks(reference(model_dir, "sdpa"), ids, mask, ours=False)
    ours = layer_masks(minienc.Encoder.from_pretrained(model_dir), ids, mask, ours=True)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert (a is None) == (b is None), f"layer {i}: transformers {'no ' if a is None else ''}mask, minienc " \
                                           f"{'no ' if b is None else ''}mask"
        if a is not None:
            assert torch.equal(a.expand(3, 1, T, T), b.expand(3, 1, T, T)), f"layer {i}"


def textbook_local_attention(q, k, v, radius: int, scale: float) -> torch.Tensor:
    """Each query attends to the keys at most `radius` positions away, one query at a time, in float64: the
    definition, written independently of any mask."""
    q, k, v = q.double(), k.double(), v.double()
    T = q.shape[2]
    rows = []
    for i in range(T):
        lo, hi = max(0, i - radius), min(T, i + radius + 1)
        weights = torch.softmax(q[:, :, i : i + 1] @ k[:, :, lo:hi].transpose(2, 3) * scale, dim=-1)
        rows.append(weights @ v[:, :, lo:hi])
    return torch.cat(rows, dim=2)


@pytest.mark.parametrize("name", sorted(UPCAST_FORMS))
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_local_attention_against_the_textbook_and_eager(name, kv_heads):
    """Every registered form with the band mask a local layer gets computes local attention (float32 rounding apart
    from the definition, and, other than eager, from eager); grouped key heads are shared as repeat_kv shares them."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 37, 16, generator=gen)
    k, v = torch.randn(2, kv_heads, 37, 16, generator=gen), torch.randn(2, kv_heads, 37, 16, generator=gen)
    mask = band(37, WINDOW, q.device)
    got = UPCAST_FORMS[name](q, k, v, mask, 0.25)
    repeated = [t.repeat_interleave(4 // kv_heads, dim=1) for t in (k, v)]
    torch.testing.assert_close(got.double(), textbook_local_attention(q, *repeated, WINDOW, 0.25), rtol=0, atol=1e-6)
    if name != "eager":
        torch.testing.assert_close(got, UPCAST_FORMS["eager"](q, k, v, mask, 0.25), rtol=0, atol=1e-6)
    assert not torch.allclose(got, UPCAST_FORMS[name](q, k, v, None, 0.25), atol=1e-3)  # the window changes the result


def test_no_window_is_the_model_with_a_window_wider_than_the_text(model_dir, tmp_path):
    """`attention="no_window"` (local layers made global) is transformers' eager on the same weights with a window
    wider than the text; and on texts shorter than the window it is eager itself, to the bit."""
    config = json.loads((model_dir / "config.json").read_text())
    width = "local_attention" if config["model_type"] == "modernbert" else "sliding_window"
    wide = copy_folder(model_dir, tmp_path / "wide")
    (wide / "config.json").write_text(json.dumps({**config, width: 200}))
    ids, mask = batch(40, "right")
    no_window = minienc.Encoder.from_pretrained(model_dir, attention="no_window")
    with torch.inference_mode():
        a = reference(wide, "eager")(input_ids=ids, attention_mask=mask).last_hidden_state
        b = no_window(ids, attention_mask=mask)
        windowed = minienc.Encoder.from_pretrained(model_dir, attention="eager")(ids, attention_mask=mask)
        short = ids[:, :6]
        same = torch.equal(no_window(short), minienc.Encoder.from_pretrained(model_dir, attention="eager")(short))
    real = mask.bool()
    assert torch.equal(a[real], b[real])
    assert not torch.allclose(windowed[real], b[real], atol=1e-4)  # the window matters at 40 tokens
    assert same


def test_packed_texts_are_the_texts_alone(model_dir):
    """Packed (one row, each text's span): positions restart at each text and each text attends to itself alone,
    within its own windows, so a text's states are its states alone, within float32 rounding of matrices of other
    shapes: 1e-5 of the states' largest value (Gemma's norms scale by 1 + w, so its states reach 5 and more)."""
    ids, _ = batch(40, "none", seed=4)
    model = minienc.Encoder.from_pretrained(model_dir)
    lengths = [40, 4, 1, WINDOW, 23]
    row = torch.cat([ids[i % 3, :n] for i, n in enumerate(lengths)])[None]
    ends = np.cumsum(lengths).tolist()
    spans = list(zip([0, *ends[:-1]], ends))
    with torch.inference_mode():
        packed = model(row, spans=spans)[0]
        for i, (a, b) in enumerate(spans):
            alone = model(ids[i % 3 : i % 3 + 1, : lengths[i]])[0]
            torch.testing.assert_close(packed[a:b], alone, rtol=0, atol=1e-5 * float(alone.abs().max()))


def test_masked_lm_checkpoint_loads(tmp_path):
    """A ModernBertForMaskedLM folder (the model under 'model.', its head and decoder beside it) loads as the bare
    model, with transformers' ModernBertModel's bits."""
    folder = save_seeded(tmp_path, modernbert_config(), transformers.ModernBertForMaskedLM)
    ids, mask = batch(20, "right")
    with torch.inference_mode():
        a = reference(folder, "sdpa")(input_ids=ids, attention_mask=mask).last_hidden_state
        b = minienc.Encoder.from_pretrained(folder)(ids, attention_mask=mask)
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def older_spelling(config: dict) -> tuple[dict, tuple[str, ...]]:
    """config.json as the Hub's ModernBERT and EmbeddingGemma files are written (transformers 4): no layer_types and
    no rope_parameters, but the pattern and the two rotary bases under their older keys; with a pattern other than
    the default (every second layer global; one local in three), and the layer types it means."""
    older = {key: value for key, value in config.items() if key not in ("layer_types", "rope_parameters")}
    thetas = config["rope_parameters"]
    n = config["num_hidden_layers"]
    if config["model_type"] == "modernbert":
        kinds = tuple("sliding_attention" if i % 2 else "full_attention" for i in range(n))
        return {**older, "global_attn_every_n_layers": 2, "global_rope_theta": thetas["full_attention"]["rope_theta"],
                "local_rope_theta": thetas["sliding_attention"]["rope_theta"]}, kinds
    kinds = tuple("sliding_attention" if (i + 1) % 3 else "full_attention" for i in range(n))
    return {**older, "sliding_window_pattern": 3, "rope_theta": thetas["full_attention"]["rope_theta"],
            "rope_local_base_freq": thetas["sliding_attention"]["rope_theta"], "rope_scaling": None}, kinds


def test_older_config_spelling(model_dir, tmp_path):
    config = json.loads((model_dir / "config.json").read_text())
    copy_folder(model_dir, tmp_path)
    older, kinds = older_spelling(config)
    (tmp_path / "config.json").write_text(json.dumps(older))
    new, old = (minienc.Encoder.from_pretrained(folder).config for folder in (model_dir, tmp_path))
    assert old.layer_types == kinds != new.layer_types
    assert (old.rope_theta, old.local_rope_theta) == (new.rope_theta, new.local_rope_theta)
    ids, mask = batch(30, "left")
    with torch.inference_mode():
        a = reference(tmp_path, "sdpa")(input_ids=ids, attention_mask=mask).last_hidden_state
        b = minienc.Encoder.from_pretrained(tmp_path)(ids, attention_mask=mask)
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def test_config_refusals(model_dir, tmp_path):
    config = json.loads((model_dir / "config.json").read_text())
    copy_folder(model_dir, tmp_path)
    refusals = [({"layer_types": ["full_attention"]}, "layer_types must name"),
                ({"rope_parameters": {**config["rope_parameters"], "full_attention": {"rope_type": "yarn",
                                                                                      "factor": 4.0}}},
                 "unsupported rotary scaling"),
                ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "unsupported rotary scaling"),
                ({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}, "each layer type its own")]
    if config["model_type"] == "gemma3_text":
        refusals += [({"use_bidirectional_attention": False}, "use_bidirectional_attention is not true"),
                     ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
                     ({"num_key_value_heads": 3}, "does not divide")]
    else:
        refusals += [({"local_attention": 1}, "local_attention must be an integer of at least 2"),
                     ({"num_attention_heads": 5}, "does not divide")]
    for changes, message in refusals:
        (tmp_path / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(ValueError, match=message):
            minienc.Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown attention 'flash9'"):
        minienc.Encoder.from_pretrained(tmp_path, attention="flash9")


# --- sentence vectors: as sentence-transformers gives them --------------------------------------------------------

SPECIALS = {"modernbert": ("[PAD]", "[CLS]", "[SEP]"), "gemma3": ("<pad>", "<eos>", "<bos>")}  # ids 0, 1, 2
PROMPTS = {"modernbert": {"query": "search_query: ", "document": "search_document: "},  # modernbert-embed's
           "gemma3": {"query": "task: search result | query: ", "document": "title: none | text: "}}  # EmbeddingGemma's


def bpe_tokenizer(folder: Path, family: str) -> None:
    """A byte-level BPE tokenizer trained here, framing each text as the family does (ModernBERT: [CLS] text [SEP];
    Gemma: <bos> text <eos>), and the tokenizer_config.json transformers reads beside it."""
    pad, first, second = SPECIALS[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=390, special_tokens=[pad, first, second],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([*TEXTS, *PROMPTS[family].values()] * 3, trainer)
    start, end = (first, second) if family == "modernbert" else (second, first)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", special_tokens=[(start, tokenizer.token_to_id(start)),
                                                     (end, tokenizer.token_to_id(end))])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "padding_side": "right",
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 512}))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def embedding_dir(request, tmp_path_factory) -> Path:
    """A sentence-transformers folder as modernbert-embed's (mean pooling, Normalize) or EmbeddingGemma's (mean
    pooling, two Dense layers with no activation and no bias, Normalize), with their prompts; saved by
    sentence-transformers itself."""
    family = request.param
    root = tmp_path_factory.mktemp(f"{family}-embedding")
    config, model_class = FAMILIES[family]
    model_dir = save_seeded(root / "model", config(), model_class)
    bpe_tokenizer(model_dir, family)
    transformer = Transformer(str(model_dir), max_seq_length=64)
    width = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(width, pooling_mode="mean")]
    if family == "gemma3":
        torch.manual_seed(1)
        modules += [Dense(width, 96, bias=False, activation_function=torch.nn.Identity()),
                    Dense(96, width, bias=False, activation_function=torch.nn.Identity())]
    st = SentenceTransformer(modules=[*modules, Normalize()], device="cpu", prompts=PROMPTS[family])
    st.save(str(root / "st"))
    return root / "st"


def test_sentence_vectors_identical_to_sentence_transformers(embedding_dir):
    """Padded execution: sentence-transformers' batches and bits; documents and queries (the folder's prompts);
    batch size 3 so that several batches of several lengths run, one text longer than the window."""
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
    """Where the row blocks pass their probes on this machine, a text's vector is the same bits alone and in a
    batch (each text's local and global attention runs alone)."""
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, dtype=dtype)
    if not ours.batch_invariant:
        pytest.skip(f"matmul {ours.matmul_name!r} failed the row-block probe on this machine")
    vectors = ours.encode(TEXTS)
    assert all(np.array_equal(ours.encode([text])[0], vectors[i]) for i, text in enumerate(TEXTS))


def test_parity_and_trace_commands(embedding_dir, capsys):
    """`minienc parity` holds every stage to transformers' and the sentence vector to sentence-transformers';
    with `--attention no_window` it reports how far making the local layers global moves them (compared with
    eager); `minienc trace` walks one text through the family's steps."""
    from minienc.cli import main
    from minienc.parity import run_parity

    rows, reference = run_parity(embedding_dir, "sdpa")
    assert reference == "sdpa" and [r.stage for r in rows][0] == "embeddings"
    assert [r.stage for r in rows][-3:] == ["norm", "last_hidden_state", "sentence_embedding"]
    assert all(r.identical for r in rows)
    rows, reference = run_parity(embedding_dir, "no_window")
    stages = [r.stage for r in rows]
    first_local = minienc.SentenceEncoder.from_pretrained(embedding_dir).encoder.config.layer_types.index(
        "sliding_attention")
    moved_at = stages.index(f"layer.{first_local}.attention")
    assert reference == "eager" and all(r.identical for r in rows[:moved_at])  # the global layers before it
    assert rows[moved_at].max_abs > 0 and rows[-1].max_abs > 0  # the first local layer, and the sentence vector
    assert main(["trace", "--model", str(embedding_dir), "头痛 is a headache"]) == 0
    out = capsys.readouterr().out
    assert "3. encoder layers" in out and "global or local" in out and "4. pooling (mean)" in out
    assert main(["encode", "--model", str(embedding_dir), "--execution", "padded", *TEXTS[:3]]) == 0
    printed = [json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()]
    expected = SentenceTransformer(str(embedding_dir), device="cpu").encode(TEXTS[:3])
    assert np.array_equal(np.array(printed, dtype=np.float32), expected)


def test_attention_weights_of_a_local_layer(embedding_dir):
    """`minienc trace --plot` on a local layer: the band is the mask drawn, and the weights are transformers' eager
    attentions for that layer and head."""
    from minienc.plot import attention_weights

    model = minienc.SentenceEncoder.from_pretrained(embedding_dir, execution="padded")
    text = TEXTS[-1]
    tokens, weights, allowed = attention_weights(model, text, layer=1, head=2)
    T = len(tokens)
    assert T > 2 * WINDOW and torch.equal(allowed, band(T, WINDOW, allowed.device)[0, 0])
    theirs = transformers.AutoModel.from_pretrained(embedding_dir, attn_implementation="eager").eval()
    inputs = {key: value for key, value in model.tokenize([text]).items() if key != "token_type_ids"}
    with torch.inference_mode():
        expected = theirs(**inputs, output_attentions=True).attentions[1][0, 2]  # (T, T)
    # a recomputation with matrices of another shape: float32 rounding, relative to the weight
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_padded_identical_to_sentence_transformers_bfloat16(embedding_dir):
    """Padded execution in bfloat16: sentence-transformers' bits when it runs the model (and EmbeddingGemma's Dense
    layers) in bfloat16."""
    ours = minienc.SentenceEncoder.from_pretrained(embedding_dir, execution="padded", dtype="bfloat16")
    st = SentenceTransformer(str(embedding_dir), device="cpu", model_kwargs={"dtype": torch.bfloat16})
    assert np.array_equal(ours.encode(TEXTS, batch_size=3), st.encode(TEXTS, batch_size=3))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_biases_where_the_config_asks(family, tmp_path):
    """The real checkpoints have no biases; a config asking for them (ModernBERT: norm_bias, attention_bias,
    mlp_bias; Gemma: attention_bias) gets them read and added, with transformers' bits."""
    config, model_class = FAMILIES[family]
    biases = dict(norm_bias=True, attention_bias=True, mlp_bias=True) if family == "modernbert" else \
        dict(attention_bias=True)
    folder = save_seeded(tmp_path, config(**biases), model_class)
    model = model_class.from_pretrained(folder)
    with torch.no_grad():  # transformers starts biases at zero: make them count
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.uniform_(-0.5, 0.5)
    model.save_pretrained(folder)
    ids, mask = batch(20, "right")
    ours = minienc.Encoder.from_pretrained(folder)
    assert sum(name.endswith(".bias") for name, _ in ours.named_parameters()) > 0
    with torch.inference_mode():
        a = reference(folder, "sdpa")(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, attention_mask=mask)
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def test_trace_shows_dense_steps_and_layer_kinds(capsys):
    """EmbeddingGemma's trace prints its two Dense layers between pooling and the normalizer (the vector it prints
    last is encode()'s) and each layer's kind: local with its window, or global."""
    from minienc.cli import main

    folder = Path(__file__).resolve().parents[1] / "weights" / "tiny-embeddinggemma"
    assert main(["trace", "--model", str(folder), "--json", "hello world"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["in"], d["out"], d["activation"]) for d in data["dense"]] == [(32, 64, "none"), (64, 32, "none")]
    assert data["layer_kinds"] == ["local ±8", "local ±8", "global"]
    expected = minienc.SentenceEncoder.from_pretrained(folder, execution="padded").encode("hello world")[:4]
    assert data["normalized"]["values"] == [round(float(x), 6) for x in expected]
    assert main(["trace", "--model", str(folder), "hello world"]) == 0
    page = capsys.readouterr().out
    assert "5. Dense 1  (32 -> 64, activation none)" in page and "6. Dense 2" in page and "7. L2 normalize" in page
    assert "local ±8" in page and "global" in page
    assert main(["trace", "--model", str(folder), "--json", "--attention", "no_window", "hello world"]) == 0
    assert json.loads(capsys.readouterr().out)["layer_kinds"] == ["global"] * 3  # no_window: every layer reads all
