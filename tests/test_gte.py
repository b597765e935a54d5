"""GTE (model/gte.py: NomicBERT's encoder with GTE's biases and names) against transformers' GteModel and
sentence-transformers: with and without token types, the Hub's fused layout under its "new." prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import minienc

from .conftest import assert_sentence_vectors_match, draw_every_parameter, three_rows

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "weights" / "tiny-gte"


def save_gte(folder: Path, type_vocab_size: int = 1) -> Path:
    config = transformers.GteConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, initializer_range=0.2, max_position_embeddings=64,
                                    type_vocab_size=type_vocab_size)
    torch.manual_seed(0)
    model = transformers.GteModel(config)
    draw_every_parameter(model)  # norms and biases too: a swapped pair in the key table shows
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=[1, 0], ids=["token-types", "no-token-types"])
def gte_dir(request, tmp_path_factory) -> Path:
    return save_gte(tmp_path_factory.mktemp("gte"), request.param)


def batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    return three_rows(side, low=2, high=120)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(gte_dir, side, attention, dtype):
    """From the folder transformers 5 saves: q, k, v fused (qkv_proj), up and gate fused (up_gate_proj, up first)."""
    ids, mask = batch(side)
    theirs = transformers.AutoModel.from_pretrained(gte_dir, attn_implementation=attention, dtype=dtype).eval()
    ours = minienc.Encoder.from_pretrained(gte_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, mask)
    assert b.dtype == dtype and torch.equal(a[mask.bool()], b[mask.bool()])


def test_the_hubs_prefix_and_transformers_names(gte_dir, tmp_path):
    """The Hub's folders hold the model under "new.", transformers' task models under "gte."; a folder with
    transformers' module names loads alike."""
    ids, mask = batch("right")
    with torch.inference_mode():
        expected = minienc.Encoder.from_pretrained(gte_dir)(ids, mask)
    tensors = load_file(str(gte_dir / "model.safetensors"))
    unfused = {k: v.contiguous() for k, v in transformers.GteModel.from_pretrained(gte_dir).state_dict().items()}
    for name, state in (("hub", {f"new.{k}": v for k, v in tensors.items()}),
                        ("task-model", {f"gte.{k}": v for k, v in tensors.items()}), ("unfused", unfused)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((gte_dir / "config.json").read_text())
        save_file(state, str(folder / "model.safetensors"))
        with torch.inference_mode():
            assert torch.equal(minienc.Encoder.from_pretrained(folder)(ids, mask), expected), name


def test_ntk_scaling_is_refused(gte_dir, tmp_path):
    config = json.loads((gte_dir / "config.json").read_text())
    config["rope_scaling"] = {"type": "ntk", "factor": 2.0}
    folder = tmp_path / "ntk"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").symlink_to(gte_dir / "model.safetensors")
    with pytest.raises(ValueError, match="unsupported rotary scaling"):
        minienc.Encoder.from_pretrained(folder)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sentence_vectors_as_sentence_transformers(dtype):
    """CLS pooling and Normalize, as gte-multilingual-base's folder."""
    assert_sentence_vectors_match(TINY, dtype)
