"""The bfloat16 fast path on the CPU: dtype="auto" follows the CPU's instruction sets, and bfloat16 vectors stay as
close to float32 as sentence-transformers' own bfloat16 vectors do. (Its batch invariance: tests/test_packed.py;
on a GPU: tests/test_gpu.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import minienc
from minienc.cli import main
from minienc.devices import check_dtype

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
