"""Parity with transformers: the spec. On CPU in fp32 the last hidden state must be bit-identical (torch.equal) on
every non-padding position, for each attention implementation against transformers' same attn_implementation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

import minienc
from minienc.model.activations import ACTIVATIONS

from .conftest import FAMILIES, TINY, padded_batch

IMPLEMENTATIONS = ["eager", "sdpa"]
LENGTHS = [7, 1, 13, 4]  # mixed lengths, a 1-token text among them


def run_both(folder, attention, batch, family=None, dtype=torch.float32, device="cpu"):
    """(ours, reference) last hidden states for the same checkpoint folder and inputs."""
    ours = minienc.Encoder.from_pretrained(folder, attention=attention, dtype=dtype, device=device)
    ref = transformers.AutoModel.from_pretrained(folder, attn_implementation=attention, dtype=dtype).to(device).eval()
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        return ours(**batch), ref(**batch).last_hidden_state


def assert_equal_on_real_tokens(ours, ref, mask):
    keep = mask.bool()
    diff = (ours[keep] - ref[keep]).abs().max().item()
    assert torch.equal(ours[keep], ref[keep]), f"max abs diff {diff:.3e}"


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_random_checkpoint_padded_batches(reference_dir, family, side, attention):
    folder = reference_dir(family)
    pad = FAMILIES[family][2]["pad_token_id"]
    batch = padded_batch(LENGTHS, TINY["vocab_size"], pad, side=side)
    ours, ref = run_both(folder, attention, batch)
    assert ours.shape == (len(LENGTHS), max(LENGTHS), TINY["hidden_size"])
    assert_equal_on_real_tokens(ours, ref, batch["attention_mask"])


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unpadded_single_token_and_no_mask(reference_dir, family, attention):
    """No attention_mask at all (all real tokens), including a batch of one 1-token text."""
    folder = reference_dir(family)
    pad = FAMILIES[family][2]["pad_token_id"]
    for lengths in ([1], [9, 9, 9]):
        batch = padded_batch(lengths, TINY["vocab_size"], pad)
        del batch["attention_mask"]
        ours, ref = run_both(folder, attention, batch)
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_sentence_pairs_with_token_types(reference_dir, side, attention):
    batch = padded_batch(LENGTHS, TINY["vocab_size"], 0, side=side, with_pairs=True)
    assert batch["token_type_ids"].any(), "the test needs real segment-1 tokens"
    ours, ref = run_both(reference_dir("bert"), attention, batch)
    assert_equal_on_real_tokens(ours, ref, batch["attention_mask"])


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_each_activation(reference_dir, activation, attention):
    batch = padded_batch(LENGTHS, TINY["vocab_size"], 0)
    ours, ref = run_both(reference_dir("bert", hidden_act=activation), attention, batch)
    assert_equal_on_real_tokens(ours, ref, batch["attention_mask"])


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
def test_real_minilm_weights(minilm_dir, attention):
    """all-MiniLM-L6-v2 as shipped, on tokenized text of several languages and lengths."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding()
    texts = ["Hello world.", "头痛怎么办？", "Emoji 🙂🚀 and ümlauts", "a " * 200, "x"]
    encoded = tokenizer.encode_batch(texts)
    batch = {
        "input_ids": torch.tensor([e.ids for e in encoded]),
        "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
    }
    ours, ref = run_both(minilm_dir, attention, batch)
    assert ours.shape[-1] == 384
    assert_equal_on_real_tokens(ours, ref, batch["attention_mask"])


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_all_padding_row_is_finite(reference_dir, family, attention):
    """A text with no real token at all (mask of zeros) must not turn into NaN, nor disturb its neighbours."""
    pad = FAMILIES[family][2]["pad_token_id"]
    batch = padded_batch([5, 3], TINY["vocab_size"], pad)
    batch["attention_mask"][1] = 0
    ours, ref = run_both(reference_dir(family), attention, batch)
    assert torch.isfinite(ours).all()
    assert torch.equal(ours[0], ref[0])


def test_xlmr_left_padding_matches_unpadded(reference_dir):
    """RoBERTa-family positions count real tokens, so left padding leaves a text's vectors unchanged."""
    encoder = minienc.Encoder.from_pretrained(reference_dir("xlm-roberta"), attention="eager")
    alone = padded_batch([6], TINY["vocab_size"], 1)
    padded = padded_batch([6, 11], TINY["vocab_size"], 1, side="left")
    padded["input_ids"][0, -6:] = alone["input_ids"][0]
    with torch.no_grad():
        a = encoder(**alone)[0]
        b = encoder(**padded)[0, -6:]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # same math, different matrix shapes: last-bit noise only


# --- reduced precision -------------------------------------------------------------------------------------------

CPU_AND_CUDA = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
    ),
]


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_half_precision_drift_within_references_own(minilm_dir, device, dtype, attention):
    """fp16 / bf16 cannot be compared with fp32 bit for bit. The tolerance is transformers' own drift: our
    half-precision output may be no further from the fp32 reference than 2x the distance transformers' own
    half-precision output is from it (and on CPU, where kernels are deterministic, we match it exactly)."""
    batch = padded_batch([12, 3, 30], 30522, 0, seed=1)
    _, ref32 = run_both(minilm_dir, attention, batch, device=device)
    ours, ref_half = run_both(minilm_dir, attention, batch, dtype=dtype, device=device)
    keep = batch["attention_mask"].bool().to(device)
    reference_drift = (ref_half.float() - ref32)[keep].abs().max()
    our_drift = (ours.float() - ref32)[keep].abs().max()
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    assert our_drift <= 2 * reference_drift, f"ours {our_drift:.3e} vs transformers {reference_drift:.3e}"
    if device == "cpu":
        assert torch.equal(ours[keep], ref_half[keep])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cuda_fp32_within_1e5(reference_dir, family, attention):
    """GPU kernels (TF32 off) may reorder sums: fp32 on CUDA stays within 1e-5 of transformers on CUDA."""
    pad = FAMILIES[family][2]["pad_token_id"]
    batch = padded_batch(LENGTHS, TINY["vocab_size"], pad)
    ours, ref = run_both(reference_dir(family), attention, batch, device="cuda")
    keep = batch["attention_mask"].bool().cuda()
    torch.testing.assert_close(ours[keep], ref[keep], rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlm-roberta"])
def test_bundled_tiny_weights(name, attention):
    """The checkpoints in weights/, fed by their own tokenizers, on text with pairs, CJK, emoji and padding."""
    from tokenizers import Tokenizer

    folder = Path(__file__).resolve().parent.parent / "weights" / name
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]" if name == "tiny-bert" else "<pad>"))
    encoded = tokenizer.encode_batch([("An encoder reads", "a whole sentence"), "头痛 🙂", "x"])
    batch = {
        "input_ids": torch.tensor([e.ids for e in encoded]),
        "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
        "token_type_ids": torch.tensor([e.type_ids for e in encoded]),
    }
    if name == "tiny-xlm-roberta":
        del batch["token_type_ids"]  # one segment only
    ours, ref = run_both(folder, attention, batch)
    assert_equal_on_real_tokens(ours, ref, batch["attention_mask"])
