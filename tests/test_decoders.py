"""Llama, Qwen2 and Mistral (model/llama.py, qwen2.py, mistral.py) against transformers' LlamaModel, Qwen2Model and
MistralModel, bit for bit; Mistral's window mask by transformers' rules; their sentence vectors against
sentence-transformers on the bundled folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

import minienc
from minienc.model.llama import sliding_causal_mask

from .conftest import assert_sentence_vectors_match, draw_every_parameter

REPO = Path(__file__).resolve().parents[1]
WINDOW = 8
FAMILIES = {
    # mlp_bias and attention_bias on, drawn non-zero: Llama's biases where a config asks for them
    "llama": (transformers.LlamaConfig, transformers.LlamaModel, dict(attention_bias=True, mlp_bias=True)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2Model, {}),
    "mistral": (transformers.MistralConfig, transformers.MistralModel, dict(sliding_window=WINDOW)),
}
SHAPES = {"4q-4kv": (4, 4), "4q-2kv": (4, 2)}


def save_decoder(folder: Path, family: str, heads: int, kv_heads: int) -> Path:
    config_class, model_class, extra = FAMILIES[family]
    config = config_class(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, intermediate_size=96, initializer_range=0.2, **extra)
    torch.manual_seed(0)
    model = model_class(config)
    draw_every_parameter(model)  # norms and biases too: a swapped pair in the key table shows
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=[(f, s) for f in sorted(FAMILIES) for s in sorted(SHAPES)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def decoder_dir(request, tmp_path_factory) -> Path:
    family, shape = request.param
    return save_decoder(tmp_path_factory.mktemp(family), family, *SHAPES[shape])


def batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of 20 ids (more than Mistral's window of 8), rows 1 and 2 padded on `side`."""
    ids = torch.randint(0, 200, (3, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, n in ((1, 12), (2, 3)):
        if side == "right":
            mask[row, n:] = 0
        elif side == "left":
            mask[row, : 20 - n] = 0
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(decoder_dir, side, attention, dtype):
    ids, mask = batch(side)
    theirs = transformers.AutoModel.from_pretrained(decoder_dir, attn_implementation=attention, dtype=dtype).eval()
    ours = minienc.Encoder.from_pretrained(decoder_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, mask)
    assert b.dtype == dtype and torch.equal(a[mask.bool()], b[mask.bool()])


@pytest.mark.parametrize("T", [5, WINDOW - 1, WINDOW, 20])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_window_mask_by_transformers_rules(T, side):
    """Mistral's mask is transformers' sdpa mask: None (PyTorch's is_causal) exactly where transformers passes none,
    else the same bool tensor: i - window < j <= i, real keys only."""
    from transformers.masking_utils import create_sliding_window_causal_mask

    config = transformers.MistralConfig(sliding_window=WINDOW, hidden_size=8, num_attention_heads=1)
    config._attn_implementation = "sdpa"
    mask = torch.ones(2, T, dtype=torch.long)
    if side == "right":
        mask[1, T // 2:] = 0
    elif side == "left":
        mask[1, : T // 2] = 0
    theirs = create_sliding_window_causal_mask(config, torch.zeros(2, T, 8), mask, None,
                                               position_ids=torch.arange(T)[None])
    ours = sliding_causal_mask(mask, T, WINDOW, torch.device("cpu"))
    assert (theirs is None) == (ours is None)
    if ours is not None:
        assert torch.equal(theirs.expand(2, 1, T, T), ours.expand(2, 1, T, T))


def test_config_refusals(tmp_path):
    folder = save_decoder(tmp_path / "q", "qwen2", 4, 2)
    config = json.loads((folder / "config.json").read_text())
    for changes, message in (({"use_sliding_window": True}, "use_sliding_window true is not supported"),
                             ({"is_causal": False}, "is_causal false"),
                             ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}, "unsupported rotary"),
                             ({"num_key_value_heads": 3}, "does not divide")):
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(ValueError, match=message):
            minienc.Encoder.from_pretrained(folder)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("folder", ["tiny-llama", "tiny-qwen2", "tiny-mistral"])
def test_sentence_vectors_as_sentence_transformers(folder, dtype):
    """Last-token pooling, left padding, the query prompt: padded execution gives sentence-transformers' vectors bit
    for bit in one batch (the long text crosses tiny-mistral's window); packed within 1e-5 (float32)."""
    assert_sentence_vectors_match(REPO / "weights" / folder, dtype, prompts=(None, "query"))


@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_no_window_on_mistral_is_mistral_without_its_window(tmp_path, side):
    """`attention="no_window"` lifts Mistral's window, as it makes ModernBERT's local layers global: transformers'
    eager MistralModel with sliding_window null, to the bit; with the window kept, 20 tokens read otherwise."""
    folder = save_decoder(tmp_path / "mistral", "mistral", 4, 2)
    unwindowed = tmp_path / "unwindowed"
    transformers.MistralModel.from_pretrained(folder).save_pretrained(unwindowed)
    config = json.loads((unwindowed / "config.json").read_text())
    (unwindowed / "config.json").write_text(json.dumps({**config, "sliding_window": None}))
    ids, mask = batch(side)
    theirs = transformers.MistralModel.from_pretrained(unwindowed, attn_implementation="eager").eval()
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = minienc.Encoder.from_pretrained(folder, attention="no_window")(ids, mask)
        windowed = minienc.Encoder.from_pretrained(folder, attention="eager")(ids, mask)
    real = mask.bool()
    assert torch.equal(a[real], b[real])
    assert not torch.allclose(windowed[real], b[real], atol=1e-4)


def test_trace_shows_mistrals_window(capsys):
    """Every layer of the bundled Mistral is local: itself and the 7 tokens before it; no_window lifts it."""
    from minienc.cli import main

    folder = REPO / "weights" / "tiny-mistral"
    assert main(["trace", "--model", str(folder), "--json", "hello world"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layer_kinds"] == ["local, last 8"] * len(data["layer_kinds"]) and data["layer_kinds"]
    assert main(["trace", "--model", str(folder), "hello world"]) == 0
    assert "local, last 8" in capsys.readouterr().out
    assert main(["trace", "--model", str(folder), "--json", "--attention", "no_window", "hello world"]) == 0
    assert json.loads(capsys.readouterr().out)["layer_kinds"] is None
    assert main(["trace", "--model", str(REPO / "weights" / "tiny-llama"), "--json", "hello world"]) == 0
    assert json.loads(capsys.readouterr().out)["layer_kinds"] is None
