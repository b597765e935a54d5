"""The bfloat16 fast path on the CPU: dtype="auto" follows the CPU's instruction sets, bfloat16 vectors stay as
close to float32 as sentence-transformers' own bfloat16 vectors do, and long texts' attention in bfloat16 matrix
multiplies (`bfloat16_math`) is as accurate as transformers' eager bfloat16 and batch-invariant. (Batch invariance
otherwise: tests/test_packed.py; on a GPU: tests/test_gpu.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

import minienc
import minienc.model.attention
from minienc.model.attention import (BERT_FORMS, CAUSAL_FORMS, UPCAST_FORMS, attending_itself, band, bind,
                                     causal_sdpa, causal_triangle, sdpa, softmax_attention, upcast_sdpa,
                                     with_triangle)
from minienc.model.llama import sliding_causal_mask
from minienc.runtime.attention import BFLOAT16_MATH_FROM, bfloat16_math, key_range
from minienc.cli import main
from minienc.runtime.devices import check_dtype

from .test_contract import BUNDLED
from .test_packed import corpus
from .test_sentence import TEXTS

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@pytest.mark.parametrize("flags, expected", [
    ({"avx512_bf16": True, "amx_bf16": False}, torch.bfloat16),  # Zen 4 / Zen 5, Cooper Lake
    ({"avx512_bf16": False, "amx_bf16": True}, torch.bfloat16),  # Sapphire Rapids and later
    ({"avx512_bf16": False, "amx_bf16": False}, torch.float32),  # bfloat16 would be emulated: slower than float32
])
def test_auto_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    assert check_dtype("auto", torch.device("cpu")) == expected


def test_dtype_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown dtype 'bf16'.*'auto'"):
        check_dtype("bf16", torch.device("cpu"))
    with pytest.raises(ValueError, match="torch.int8 is not a floating-point type"):
        check_dtype(torch.int8, torch.device("cpu"))
    assert check_dtype(None, torch.device("cpu")) == torch.float32
    assert check_dtype(torch.float64, torch.device("cpu")) == torch.float64  # research: any floating type


@pytest.mark.slow
def test_bfloat16_within_sentence_transformers_own_drift(minilm_dir):
    """bfloat16 cannot match float32 bit for bit; the tolerance is sentence-transformers' own: our bfloat16 vectors
    may be no further from its float32 vectors than twice the distance of its own bfloat16 vectors."""
    texts = TEXTS + corpus(40)
    st32 = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    st16 = SentenceTransformer(str(minilm_dir), device="cpu", model_kwargs={"dtype": torch.bfloat16}).encode(texts)
    ours = minienc.SentenceEncoder.from_pretrained(minilm_dir, dtype="bfloat16").encode(texts)
    assert ours.dtype == np.float32  # NumPy has no bfloat16: the bfloat16 values, exactly, as float32
    reference_drift, our_drift = np.abs(st16 - st32).max(), np.abs(ours - st32).max()
    assert our_drift <= 2 * reference_drift, f"ours {our_drift:.3e} vs sentence-transformers {reference_drift:.3e}"


def test_cli_dtype(tmp_path):
    out = tmp_path / "v.npy"
    assert main(["encode", "--model", str(WEIGHTS / "tiny-bert"), "--dtype", "bfloat16", "--output", str(out),
                 "first text", "a second, longer text"]) == 0
    expected = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", dtype="bfloat16").encode(
        ["first text", "a second, longer text"])
    assert np.array_equal(np.load(out), expected)


MASKS = {  # the masks a text alone gets: none (BERT, global layers), a decoder's triangle, a local layer's band,
    # Mistral's window (the triangle's last 40 keys)
    "none": lambda T: None,
    "causal": lambda T: causal_triangle(T, "cpu"),
    "band": lambda T: band(T, 40, "cpu"),
    "causal window": lambda T: sliding_causal_mask(None, T, 40, "cpu"),
}


@pytest.mark.parametrize("length", [130, 512, 700])
@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("heads, kv_heads", [(12, 12), (8, 2)])
def test_bfloat16_math_as_accurate_as_transformers_eager(length, mask, heads, kv_heads):
    """The long-text path of bfloat16 attention on a CPU without AMX rounds scores and weights to bfloat16, as
    transformers' eager attention does in bfloat16 (minienc's `softmax_attention` reproduces the newer families'; the
    decoders' is the same with the triangle); in another order and in blocks of queries, so its error against
    float32 is held to 1.5x eager's (measured 0.7-1.2x over seeds and lengths). 700 tokens of 8 heads: several
    blocks (block_rows), grouped keys shared."""
    gen = torch.Generator().manual_seed(length)
    q = 2 * torch.randn(1, heads, length, 32, generator=gen)  # peakier weights than random inputs give
    k, v = (torch.randn(1, kv_heads, length, 32, generator=gen) for _ in range(2))
    allowed = MASKS[mask](length)
    exact = softmax_attention(q, k, v, allowed, 32**-0.5)
    half = [t.bfloat16() for t in (q, k, v)]
    ours = (bfloat16_math(*half, allowed, 32**-0.5).float() - exact).abs().max()
    transformers_eager = (softmax_attention(*half, allowed, 32**-0.5).float() - exact).abs().max()
    assert ours <= 1.5 * transformers_eager, f"{ours:.2e} vs eager's {transformers_eager:.2e}"


def test_key_range_is_what_a_block_may_see():
    """The keys a block of queries multiplies: up to its last query for a decoder, its band's reach for a local
    layer, every key without a mask."""
    assert key_range(MASKS["causal"](300)[0, 0, 64:128], 300) == (0, 128)
    assert key_range(MASKS["band"](300)[0, 0, 64:128], 300) == (24, 168)
    assert key_range(MASKS["causal window"](300)[0, 0, 64:128], 300) == (25, 128)
    assert key_range(None, 300) == (0, 300)


@pytest.mark.parametrize("mask", ["causal", "band", "causal window"])
def test_bfloat16_math_reads_no_key_its_mask_hides(mask):
    """Keys and values a query may not see change nothing in its result, bit for bit: the blocks skip them or give
    them weight exactly 0. Queries 0..399 of a decoder never see key 599; under a band of 40, no query below 559."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 8, 600, 32, generator=gen).bfloat16() for _ in range(3))
    changed_k, changed_v = k.clone(), v.clone()
    changed_k[:, :, -1], changed_v[:, :, -1] = 100.0, -100.0
    allowed = MASKS[mask](600)
    before = bfloat16_math(q, k, v, allowed, 32**-0.5)
    after = bfloat16_math(q, changed_k, changed_v, allowed, 32**-0.5)
    assert torch.equal(before[:, :, :400], after[:, :, :400])
    assert not torch.equal(before[:, :, -1], after[:, :, -1])  # the last query sees it


FAMILY_SDPA = {  # family -> (its layers' attention, bound as the family binds it; its sdpa form; a text's mask by
    # the family's rules, which the form gets; the same as bfloat16_math gets it)
    "bert": (lambda: bind("sdpa", "bert", BERT_FORMS), sdpa, MASKS["none"], MASKS["none"]),
    "decoder": (lambda: bind("sdpa", "qwen3", CAUSAL_FORMS, complete=with_triangle), causal_sdpa, MASKS["none"],
                MASKS["causal"]),  # transformers' rule: no mask, the kernel's is_causal
    "local layer": (lambda: bind("sdpa", "modernbert", UPCAST_FORMS, alone=lambda T, device: band(T, 40, device),
                                 complete=attending_itself), upcast_sdpa, MASKS["band"], MASKS["band"]),
}


@pytest.mark.parametrize("family", sorted(FAMILY_SDPA))
@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_long_texts_take_the_math_path(monkeypatch, native, family):
    """Packed sdpa in bfloat16, in every family's form: where the CPU multiplies bfloat16 without AMX, texts of
    BFLOAT16_MATH_FROM tokens and more take `bfloat16_math` with the text's own mask, shorter ones PyTorch's kernel;
    elsewhere every text the kernel. Either way each text's result is what its own path gives it alone (so batch
    invariance holds by construction)."""
    monkeypatch.setattr(minienc.runtime.attention, "bfloat16_without_amx", lambda: native)
    bound, form, family_mask, contract_mask = FAMILY_SDPA[family]
    gen = torch.Generator().manual_seed(0)
    long, short = BFLOAT16_MATH_FROM, 5
    kv_heads = 4 if family == "bert" else 2  # the newer families' keys grouped
    q = torch.randn(1, 4, short + long, 16, generator=gen).bfloat16()
    k, v = (torch.randn(1, kv_heads, short + long, 16, generator=gen).bfloat16() for _ in range(2))
    spans = [(0, short), (short, short + long)]
    packed = bound().packed(q, k, v, spans, 0.25)
    for a, b in spans:
        text = q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]
        math = native and b - a >= BFLOAT16_MATH_FROM
        alone = bfloat16_math(*text, contract_mask(b - a), 0.25) if math else form(*text, family_mask(b - a), 0.25)
        assert torch.equal(packed[:, :, a:b], alone), (b - a, math)


SDPA_FAMILIES = [folder for folder in BUNDLED if folder != "tiny-mpnet"]  # MPNet's relative attention is eager


def long_texts(model, count: int = 6) -> list[str]:
    """count texts of BFLOAT16_MATH_FROM tokens or more for this model (its cap is 128 or 512)."""
    found = [text for text in corpus(60, seed=3)
             if len(model.tokenizer.tokenize([text])[0].ids) >= BFLOAT16_MATH_FROM][:count]
    assert len(found) == count
    return found


def counting_math(monkeypatch) -> list[int]:
    """The CPU taken for one with AVX512-BF16 and no AMX, and the length of each text bfloat16_math computes."""
    monkeypatch.setattr(minienc.runtime.attention, "bfloat16_without_amx", lambda: True)
    calls, real = [], minienc.runtime.attention.bfloat16_math
    monkeypatch.setattr(minienc.runtime.attention, "bfloat16_math",
                        lambda q, *rest: calls.append(q.shape[2]) or real(q, *rest))
    return calls


@pytest.mark.parametrize("folder", SDPA_FAMILIES)
def test_long_texts_in_bfloat16_math_within_bfloat16s_own_drift(monkeypatch, folder):
    """The long texts of every family whose sdpa takes `bfloat16_math` (all but MPNet) go through it, as on a CPU
    with AVX512-BF16 and no AMX, and the packed bfloat16 vectors are no further from padded float32 (transformers'
    bits) than twice the distance of padded bfloat16 (transformers' own bfloat16 forms; 0.88-1.37x on an AMD Zen 4)."""
    calls = counting_math(monkeypatch)

    def load(execution, dtype):
        return minienc.SentenceEncoder.from_pretrained(WEIGHTS / folder, execution=execution, dtype=dtype)

    ours = load("packed", "bfloat16")
    texts = long_texts(ours)
    exact = load("padded", "float32").encode(texts)
    reference_drift = np.abs(load("padded", "bfloat16").encode(texts) - exact).max()
    calls.clear()
    our_drift = np.abs(ours.encode(texts) - exact).max()
    assert len(calls) >= len(texts) and min(calls) >= BFLOAT16_MATH_FROM  # every text, in every layer that attends
    assert our_drift <= 2 * reference_drift, f"ours {our_drift:.3e} vs padded bfloat16's {reference_drift:.3e}"


@pytest.mark.parametrize("folder", ["tiny-qwen3-embedding", "tiny-mistral", "tiny-modernbert-embed",
                                    "tiny-embeddinggemma"])
def test_long_texts_in_bfloat16_math_batch_invariant(monkeypatch, folder):
    """Where the row blocks pass their probes, a long text's bfloat16 vector through `bfloat16_math` is the same bits
    alone and in a batch beside short and long texts (the blocks depend on the text's own length alone)."""
    calls = counting_math(monkeypatch)
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / folder, dtype="bfloat16")
    if not model.batch_invariant:
        pytest.skip(f"matmul {model.matmul_name!r} failed the row-block probe on this machine")
    texts = [*long_texts(model, 3), "a", "a short text", *long_texts(model, 5)[3:]]
    vectors = model.encode(texts)
    assert calls
    assert all(np.array_equal(model.encode([text])[0], vectors[i]) for i, text in enumerate(texts))
