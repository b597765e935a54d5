"""The bfloat16 fast path on the CPU: dtype="auto" follows the CPU's instruction sets, and bfloat16 vectors stay as
close to float32 as sentence-transformers' own bfloat16 vectors do. (Its batch invariance: tests/test_packed.py;
on a GPU: tests/test_gpu.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

import minienc
import minienc.model.attention
from minienc.model.attention import eager, sdpa
from minienc.runtime.attention import BFLOAT16_MATH_FROM, bfloat16_math
from minienc.cli import main
from minienc.runtime.devices import check_dtype

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


@pytest.mark.parametrize("length", [130, 512])
def test_bfloat16_math_as_accurate_as_transformers_eager(length):
    """The long-text path of bfloat16 attention on a CPU without AMX rounds scores and weights to bfloat16, as
    transformers' eager attention does in bfloat16 (minienc's `eager` reproduces it); in another order, so its
    error against float32 is held to 1.5x eager's (measured 0.7-1.2x over seeds and lengths)."""
    gen = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(1, 12, length, 32, generator=gen) for _ in range(3))
    q = 2 * q  # peakier weights than random inputs give: rounding the scores matters more
    exact = F.scaled_dot_product_attention(q, k, v)
    half = [t.bfloat16() for t in (q, k, v)]
    ours = (bfloat16_math(*half, None, 32**-0.5).float() - exact).abs().max()
    transformers_eager = (eager(*half, None, 32**-0.5).float() - exact).abs().max()
    assert ours <= 1.5 * transformers_eager, f"{ours:.2e} vs eager's {transformers_eager:.2e}"


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_long_texts_take_the_math_path(monkeypatch, native):
    """Packed sdpa in bfloat16: where the CPU multiplies bfloat16 without AMX, texts of BFLOAT16_MATH_FROM tokens
    and more take `bfloat16_math`, shorter ones PyTorch's kernel; elsewhere every text the kernel. Either way each
    text's result is what its own path gives it alone (so batch invariance holds by construction)."""
    monkeypatch.setattr(minienc.runtime.attention, "bfloat16_without_amx", lambda: native)
    gen = torch.Generator().manual_seed(0)
    long, short = BFLOAT16_MATH_FROM, 5
    q, k, v = (torch.randn(1, 4, short + long, 16, generator=gen).bfloat16() for _ in range(3))
    spans = [(0, short), (short, short + long)]
    packed = minienc.model.attention.ATTENTION["sdpa"].packed(q, k, v, spans, 0.25)
    for (a, b), path in zip(spans, (sdpa, bfloat16_math if native else sdpa)):
        alone = path(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None, 0.25)
        assert torch.equal(packed[:, :, a:b], alone), (b - a, path.__name__)
    with pytest.raises(ValueError, match="mask must be None"):
        bfloat16_math(q, k, v, torch.ones(1, 1, 1, short + long, dtype=torch.bool), 0.25)
