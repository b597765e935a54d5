"""DistilBERT (model/distilbert.py: BERT's model, DistilBERT's names) against transformers' DistilBertModel and
sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

import minienc

from .conftest import assert_sentence_vectors_match, draw_every_parameter, three_rows

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "weights" / "tiny-distilbert"


def save_distilbert(folder: Path, model_class=transformers.DistilBertModel) -> Path:
    config = transformers.DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           initializer_range=0.2, max_position_embeddings=64, activation="gelu")
    torch.manual_seed(0)
    model = model_class(config)
    draw_every_parameter(model)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def distilbert_dir(tmp_path_factory) -> Path:
    return save_distilbert(tmp_path_factory.mktemp("distilbert"))


def batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    return three_rows(side, low=1, high=120, pad=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(distilbert_dir, side, attention, dtype):
    ids, mask = batch(side)
    theirs = transformers.AutoModel.from_pretrained(distilbert_dir, attn_implementation=attention, dtype=dtype).eval()
    ours = minienc.Encoder.from_pretrained(distilbert_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, mask)
    assert b.dtype == dtype and torch.equal(a[mask.bool()], b[mask.bool()])


def test_masked_lm_checkpoint_loads_as_the_model(tmp_path):
    """DistilBertForMaskedLM stores the model under 'distilbert.' beside its vocab_* head: the same hidden states."""
    folder = save_distilbert(tmp_path / "mlm", transformers.DistilBertForMaskedLM)
    theirs = transformers.DistilBertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    ours = minienc.Encoder.from_pretrained(folder, attention="eager")
    ids, mask = batch("right")
    with torch.inference_mode():
        a = theirs.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(a[mask.bool()], ours(ids, mask)[mask.bool()])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sentence_vectors_as_sentence_transformers(dtype):
    assert_sentence_vectors_match(TINY, dtype)
