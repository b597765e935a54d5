"""NomicBERT (model/nomic_bert.py) against transformers' NomicBertModel and sentence-transformers: both checkpoint
layouts (the fused Wqkv that transformers 5 saves, as the Hub's folders store it, and its own module names)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

import minienc

from .conftest import assert_sentence_vectors_match, draw_every_parameter, three_rows

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "weights" / "tiny-nomic-bert"


def save_nomic(folder: Path, hidden_act: str = "silu") -> Path:
    config = transformers.NomicBertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, initializer_range=0.2, max_position_embeddings=64,
                                          hidden_act=hidden_act)
    torch.manual_seed(0)
    model = transformers.NomicBertModel(config)
    draw_every_parameter(model)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def nomic_dir(tmp_path_factory) -> Path:
    return save_nomic(tmp_path_factory.mktemp("nomic"))


def batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    return three_rows(side, low=1, high=120)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(nomic_dir, side, attention, dtype):
    ids, mask = batch(side)
    theirs = transformers.AutoModel.from_pretrained(nomic_dir, attn_implementation=attention, dtype=dtype).eval()
    ours = minienc.Encoder.from_pretrained(nomic_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, mask)
    assert b.dtype == dtype and torch.equal(a[mask.bool()], b[mask.bool()])


def test_both_checkpoint_layouts(nomic_dir, tmp_path):
    """transformers saves q, k and v fused (Wqkv) under Nomic's names, as the Hub's folders store them; a folder with
    transformers' module names (q_proj, gate_proj, ...) loads to the same bits."""
    from safetensors import safe_open

    stored = json.loads((nomic_dir / "config.json").read_text())

    with safe_open(str(nomic_dir / "model.safetensors"), "pt") as f:
        assert "encoder.layers.0.attn.Wqkv.weight" in f.keys()
    unfused = tmp_path / "unfused"
    unfused.mkdir()
    (unfused / "config.json").write_text(json.dumps(stored))
    state = transformers.NomicBertModel.from_pretrained(nomic_dir).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(unfused / "model.safetensors"))
    ids, mask = batch("right")
    with torch.inference_mode():
        a = minienc.Encoder.from_pretrained(nomic_dir)(ids, mask)
        b = minienc.Encoder.from_pretrained(unfused)(ids, mask)
    assert torch.equal(a, b)


def test_config_refusals(nomic_dir, tmp_path):
    config = json.loads((nomic_dir / "config.json").read_text())
    folder = tmp_path / "n"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(nomic_dir / "model.safetensors")
    for changes, message in (({"rotary_emb_fraction": 0.5}, "rotary_emb_fraction 0.5 is not supported"),
                             ({"prenorm": True}, "prenorm True is not supported"),
                             ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "unsupported rotary")):
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(ValueError, match=message):
            minienc.Encoder.from_pretrained(folder)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sentence_vectors_as_sentence_transformers(dtype):
    """Mean pooling and Normalize, nomic-embed's search_query / search_document prompts."""
    assert_sentence_vectors_match(TINY, dtype, prompts=(None, "query"))


def test_a_fused_tensor_that_does_not_cut_is_named(nomic_dir, tmp_path):
    """A Wqkv whose rows do not split in three, and a layer whose q, k, v are missing in both layouts: the error names
    the file's key and what it should hold, and each missing weight under every name that may hold it."""
    from safetensors.torch import load_file

    tensors = load_file(str(nomic_dir / "model.safetensors"))
    tensors["encoder.layers.0.attn.Wqkv.weight"] = tensors["encoder.layers.0.attn.Wqkv.weight"][:-1].contiguous()
    del tensors["encoder.layers.1.attn.Wqkv.weight"]
    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "config.json").write_text((nomic_dir / "config.json").read_text())
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(minienc.CheckpointError) as error:
        minienc.Encoder.from_pretrained(folder)
    message = str(error.value)
    assert "encoder.layers.0.attn.Wqkv.weight: checkpoint (95, 32), which does not cut into 3 equal parts" in message
    assert ("layers.1.self_attn.q_proj.weight or encoder.layers.1.attn.Wqkv.weight (minienc: "
            "layers.1.attention.query.weight)") in message
