"""The linear layers' kernels (minienc/runtime/matmul.py): both sum in float32, "onednn" steps aside where it must, and the
defaults keep each execution's promise (padded: transformers' bits; packed: close, and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch.profiler import profile

import minienc
import minienc.runtime.matmul
from minienc.model.activations import ACTIVATIONS
from minienc.runtime.matmul import (MATMUL, ONEDNN_POST_OPS, RowBlocks, activate, fastest_on_cpu, get_matmul, onednn,
                            onednn_available, onednn_bfloat16, plain_linear)
from minienc.heads.pipeline import ROW_BLOCKS, default_matmul

from .test_sentence import TEXTS

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN")


@pytest.mark.parametrize("name", sorted(MATMUL))
@pytest.mark.parametrize("rows, inner, outer", [(2048, 384, 1536), (37, 1536, 384), (16, 32, 37)])
def test_kernels_sum_in_float32(name, rows, inner, outer):
    """Against float64, each result stays within the textbook bound for a float32 sum of `inner` products,
    gamma_K * sum |x_i w_i| (K = inner + 1 with the bias, gamma_K = K u / (1 - K u), u = 2^-24). A kernel that
    rounded its inputs to bfloat16 or TF32, as fast modes do, would break it by orders of magnitude."""
    if name == "onednn" and not onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=gen) for shape in [(rows, inner), (outer, inner), (outer,)])
    with torch.inference_mode():
        got = get_matmul(name)(x, w, b).double()
    exact = F.linear(x.double(), w.double(), b.double())
    u, k = 2.0**-24, inner + 1
    bound = k * u / (1 - k * u) * (F.linear(x.double().abs(), w.double().abs(), b.double().abs()))
    assert bool(((got - exact).abs() <= bound).all())


@needs_onednn
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_onednn_activation_fused_or_not(activation):
    """oneDNN's activation is the model's. Applied after the multiply, it is the same op on the same product: the
    same bits. Fused into the multiply (ONEDNN_POST_OPS: GELU), it is oneDNN's own code: within 2 float32 ulps.
    An identity weight makes the product exact, so inputs from -12 to 12 reach the activation unchanged."""
    x = torch.linspace(-12, 12, 64 * 4096).reshape(-1, 64)
    with torch.inference_mode():
        expected = ACTIVATIONS[activation](onednn(x, torch.eye(64), None))
        got = onednn(x, torch.eye(64), None, activation)
    if activation not in ONEDNN_POST_OPS:
        assert torch.equal(got, expected)
        return
    ulp = torch.nextafter(expected.abs(), torch.tensor(float("inf"))) - expected.abs()
    assert bool(((got - expected).abs() <= 2 * ulp).all())


@needs_onednn
def test_onednn_leaves_float16_to_f_linear():
    dtype = torch.float16
    x, w, b = torch.randn(20, 16, dtype=dtype), torch.randn(8, 16, dtype=dtype), torch.randn(8, dtype=dtype)
    assert torch.equal(onednn(x, w, b, "gelu"), F.gelu(F.linear(x, w, b)))


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_onednn_without_bfloat16_is_the_torch_kernel(monkeypatch, activation):
    """Below AVX-512 oneDNN has no bfloat16 inner product: the layer is transformers' own, bit for bit."""
    monkeypatch.setattr(minienc.runtime.matmul, "onednn_bfloat16", lambda: False)
    x, w, b = torch.randn(20, 16).bfloat16(), torch.randn(8, 16).bfloat16(), torch.randn(8).bfloat16()
    with torch.inference_mode():
        assert torch.equal(onednn(x, w, b, activation), plain_linear(x, w, b, activation))


@needs_onednn
@pytest.mark.skipif(not onednn_bfloat16(), reason="oneDNN has no bfloat16 inner product on this CPU (AVX-512 needed)")
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_onednn_bfloat16_rounds_once(activation):
    """bfloat16 in, bfloat16 out, summed in float32 with the activation applied before the one rounding: every
    result is within one bfloat16 step of the exact computation on the same bfloat16 inputs (plus 1e-5 absolute:
    GELU's vanishing negative tail is computed in float32, where a value of 1e-12 has no correct bits left)."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=gen).bfloat16() for shape in ((300, 384), (96, 384), (96,)))
    with torch.inference_mode():
        got = onednn(x, w, b, activation)
        exact = activate(F.linear(x.double(), w.double(), b.double()), activation)
    step = torch.nextafter(got.abs(), torch.tensor(float("inf"), dtype=got.dtype)).double() - got.abs().double()
    assert got.dtype == torch.bfloat16 and bool(((got.double() - exact).abs() <= step + 1e-5).all())


@needs_onednn
def test_onednn_leaves_autograd_to_f_linear():
    """oneDNN's op has no backward: where gradients are needed, the layer must be F.linear, bits and gradients."""
    x = torch.randn(20, 16)
    w1, b1 = torch.randn(8, 16, requires_grad=True), torch.randn(8, requires_grad=True)
    w2, b2 = w1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    y1, y2 = onednn(x, w1, b1, "gelu"), F.gelu(F.linear(x, w2, b2))
    assert torch.equal(y1, y2)
    (y1 * y1).sum().backward()
    (y2 * y2).sum().backward()
    assert torch.equal(w1.grad, w2.grad) and torch.equal(b1.grad, b2.grad)


def test_unknown_matmul():
    with pytest.raises(ValueError, match=r"unknown matmul 'blas'; choose one of \['onednn', 'torch'\]"):
        minienc.Encoder.from_pretrained(WEIGHTS / "tiny-bert", matmul="blas")


def test_without_onednn(monkeypatch):
    monkeypatch.setattr(minienc.runtime.matmul, "onednn_available", lambda: False)
    with pytest.raises(ValueError, match="matmul 'onednn' needs a PyTorch built with oneDNN"):
        get_matmul("onednn")
    assert minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert").matmul_name == "torch"


@pytest.mark.parametrize("capability, expected", [("AVX512", "onednn"), ("AVX2", "onednn"), ("DEFAULT", "torch")])
def test_fastest_on_cpu(monkeypatch, capability, expected):
    """oneDNN only where it was measured faster: x86 with AVX2 or AVX-512 (on SSE4.1 alone it was 2x slower)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(minienc.runtime.matmul, "onednn_available", lambda: True)
    assert fastest_on_cpu() == expected


def test_defaults():
    """The bare Encoder and padded execution keep transformers' kernel; packed takes oneDNN where it exists."""
    assert kernels_of(minienc.Encoder.from_pretrained(WEIGHTS / "tiny-bert")) == {MATMUL["torch"]}
    assert default_matmul("padded") == "torch" and default_matmul("packed", "cuda") == "torch"
    assert default_matmul("packed") == fastest_on_cpu()
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert")
    assert model.matmul_name == default_matmul("packed") and model.row_block == ROW_BLOCKS["cpu"]
    assert kernels_of(model) == {model.kernel} and isinstance(model.kernel, RowBlocks)
    assert model.kernel.kernel is MATMUL[default_matmul("packed")]
    assert model.kernel.rows == ROW_BLOCKS["cpu"] and model.token_budget == 2048
    padded = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", execution="padded")
    assert padded.row_block is None and kernels_of(padded) == {MATMUL["torch"]}


def kernels_of(model: torch.nn.Module) -> set:
    """The kernels of every linear layer in model."""
    return {layer.matmul for layer in model.modules() if isinstance(layer, minienc.model.linear.Linear)}


@pytest.mark.skipif(fastest_on_cpu() != "onednn", reason="packed execution keeps F.linear on this CPU")
def test_packed_encode_runs_onednn():
    """The speed comes from this op being called: check the profiler sees it, and never MKL's addmm."""
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", normalize=False, pooling="mean")
    with profile() as prof:
        model.encode(["hello world", "x"])
    ops = {event.name for event in prof.events()}
    assert "mkldnn::_linear_pointwise" in ops and "aten::addmm" not in ops


@needs_onednn
def test_encoder_with_onednn_close_to_transformers(minilm_dir):
    """The whole encoder, padded, with the oneDNN kernel: transformers' values up to float32 rounding. Real
    all-MiniLM-L6-v2 weights (on the tiny test models, with 32 inputs a row, both kernels happen to give the same
    bits). Measured here: 4.2e-6 at most, on hidden states up to 6.3 (~9 ulps); held to 1e-5."""
    model = minienc.SentenceEncoder.from_pretrained(minilm_dir, execution="padded")
    batch = model.tokenizer(TEXTS)
    ref = transformers.AutoModel.from_pretrained(minilm_dir, attn_implementation="sdpa").eval()
    ours = minienc.Encoder.from_pretrained(minilm_dir, matmul="onednn")
    with torch.inference_mode():
        expected = ref(**batch).last_hidden_state
        got = ours(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-5)
