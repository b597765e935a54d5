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
from minienc.model.gte import GteConfig

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


def alibaba_folder(gte_dir: Path, folder: Path, **fields) -> Path:
    """gte_dir's weights (the Hub's fused layout) under a config.json in the spelling of Alibaba's own folders
    (model_type "new"), rope_theta 500000 as gte-base-en-v1.5's; `fields` added or (None) removed."""
    raw = json.loads((gte_dir / "config.json").read_text())
    config = {"architectures": ["NewModel"], "model_type": "new", "layer_norm_type": "layer_norm",
              "position_embedding_type": "rope", "rope_theta": 500000, "pack_qkv": True, "unpad_inputs": False,
              "use_memory_efficient_attention": False, "logn_attention_scale": False, "logn_attention_clip1": False,
              **{name: raw[name] for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "hidden_act", "max_position_embeddings",
                                              "type_vocab_size", "layer_norm_eps", "pad_token_id")}}
    config.update(fields)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    (folder / "model.safetensors").symlink_to(gte_dir / "model.safetensors")
    return folder


def transformers_gte(gte_dir: Path, theta: float, factor: float, attention: str = "sdpa", dtype=torch.float32):
    """transformers' GteModel at rotary base `theta`, its speeds NTK-scaled by `factor` the way Alibaba's code
    defines it, built from transformers' own default rotary init at base theta * factor: each speed / factor^(2/hs)."""
    model = transformers.GteModel.from_pretrained(gte_dir, attn_implementation=attention, dtype=dtype).eval()
    config = model.config
    config.rope_parameters = {"rope_type": "default", "rope_theta": theta * factor}
    speeds, _ = model.rotary_emb.compute_default_rope_parameters(config)
    head_dim = config.hidden_size // config.num_attention_heads
    model.rotary_emb.inv_freq = speeds / factor ** (2 / head_dim) if factor > 1 else speeds
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right"])
def test_alibaba_folder_with_ntk_scaling(gte_dir, tmp_path, side, attention, dtype):
    """model_type "new" with rope_scaling ntk (factor 2, as gte-base-en-v1.5): transformers' GteModel given NTK's
    speeds is the reference (it has no NTK of its own); a factor left unread or misapplied moves every layer."""
    folder = alibaba_folder(gte_dir, tmp_path / "new", rope_scaling={"type": "ntk", "factor": 2.0})
    ids, mask = batch(side)
    theirs = transformers_gte(gte_dir, 500000, 2.0, attention, dtype)
    ours = minienc.Encoder.from_pretrained(folder, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a, b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state, ours(ids, mask)
        unscaled = transformers_gte(gte_dir, 500000, 1.0, attention, dtype)(input_ids=ids, attention_mask=mask)
    assert torch.equal(a[mask.bool()], b[mask.bool()])
    assert not torch.equal(unscaled.last_hidden_state[mask.bool()], b[mask.bool()])


@pytest.mark.parametrize("head_dim, theta, factor", [(8, 500000, 2.0), (64, 500000, 2.0), (64, 20000, 8.0)])
def test_ntk_speeds_are_the_formula(head_dim, theta, factor):
    """Pair i's speed is theta^(-2i/hs) / factor^((2i+2)/hs), in float64 here: float32's pow and one division
    stay within 4 ulp of it (rtol 5e-7); the slowest pair is factor times slower than unscaled, the fastest
    factor^(2/hs)."""
    config = GteConfig(hidden_size=head_dim * 2, num_heads=2, head_dim=head_dim, rope_theta=theta,
                       rope_ntk_factor=factor)
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    expected = theta ** (-2 * i / head_dim) / factor ** ((2 * i + 2) / head_dim)
    scaled = config.rotary_frequencies()
    assert scaled.dtype == torch.float32 and scaled.shape == (head_dim // 2,)
    torch.testing.assert_close(scaled.double(), expected, rtol=5e-7, atol=0)
    plain = GteConfig(hidden_size=head_dim * 2, num_heads=2, head_dim=head_dim, rope_theta=theta).rotary_frequencies()
    ratio = (plain / scaled).double()
    assert ratio[-1].item() == pytest.approx(factor, rel=1e-6)
    assert ratio[0].item() == pytest.approx(factor ** (2 / head_dim), rel=1e-6)


@pytest.mark.parametrize("fields", [{}, {"rope_scaling": {"type": "ntk", "factor": 1.0}},
                                    {"rope_scaling": {"type": "ntk", "factor": 0.5}},
                                    {"logn_attention_scale": True, "logn_attention_clip1": True}],
                         ids=["none", "factor-1", "factor-0.5", "log-length-clipped"])
def test_alibaba_folder_unscaled(gte_dir, tmp_path, fields):
    """No scaling, or a factor of at most 1 (which Alibaba's code does not apply), or log-length query scaling
    clipped at 1 (log(n) / log(max positions) is at most 1 for every text the model takes, so the clip makes it 1):
    the plain model."""
    folder = alibaba_folder(gte_dir, tmp_path / "new", **fields)
    ids, mask = batch("right")
    with torch.inference_mode():
        a = transformers_gte(gte_dir, 500000, 1.0)(input_ids=ids, attention_mask=mask).last_hidden_state
        b = minienc.Encoder.from_pretrained(folder)(ids, mask)
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def test_ntk_scaling_under_transformers_model_type_is_refused(gte_dir, tmp_path):
    """model_type "gte" is held to transformers' GteModel, which has no NTK scaling (it fails on such a config)."""
    config = json.loads((gte_dir / "config.json").read_text())
    config["rope_scaling"] = {"type": "ntk", "factor": 2.0}
    folder = tmp_path / "ntk"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").symlink_to(gte_dir / "model.safetensors")
    with pytest.raises(ValueError, match="for model_type 'gte'.*transformers' GteModel has none"):
        minienc.Encoder.from_pretrained(folder)


def test_alibaba_folder_with_q_k_v_apart(gte_dir, tmp_path):
    """pack_qkv false: Alibaba's code stores q, k and v as three tensors under its own names."""
    ids, mask = batch("right")
    packed = alibaba_folder(gte_dir, tmp_path / "packed")
    tensors = load_file(str(gte_dir / "model.safetensors"))
    apart = {}
    for name, tensor in tensors.items():
        if ".qkv_proj." in name:
            for part, piece in zip("qkv", tensor.chunk(3)):
                apart[name.replace(".qkv_proj.", f".{part}_proj.")] = piece.contiguous()
        else:
            apart[name] = tensor
    folder = alibaba_folder(gte_dir, tmp_path / "apart", pack_qkv=False)
    (folder / "model.safetensors").unlink()
    save_file(apart, str(folder / "model.safetensors"))
    with torch.inference_mode():
        assert torch.equal(minienc.Encoder.from_pretrained(folder)(ids, mask),
                           minienc.Encoder.from_pretrained(packed)(ids, mask))


@pytest.mark.parametrize("fields, words", [
    ({"rope_scaling": {"type": "ntk", "factor": 2.0, "mixed_b": 0.75}}, "mixed_b not supported"),
    ({"rope_scaling": {"type": "ntk"}}, "no factor given"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "unsupported rotary scaling"),
    ({"position_embedding_type": "absolute"}, "position_embedding_type 'absolute'"),
    ({"layer_norm_type": "rms_norm"}, "layer_norm_type 'rms_norm'"),
    ({"logn_attention_scale": True}, "logn_attention_scale without logn_attention_clip1"),
])
def test_alibaba_fields_not_computed_are_refused(gte_dir, tmp_path, fields, words):
    folder = alibaba_folder(gte_dir, tmp_path / "new", **fields)
    with pytest.raises(ValueError, match=words):
        minienc.Encoder.from_pretrained(folder)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sentence_vectors_as_sentence_transformers(dtype):
    """CLS pooling and Normalize, as gte-multilingual-base's folder."""
    assert_sentence_vectors_match(TINY, dtype)


def test_parity_on_an_alibaba_folder_says_there_is_no_reference(gte_dir, tmp_path):
    """transformers reads model_type "new" only by running the folder's code: parity says so before loading it."""
    from minienc.parity import run_parity

    folder = alibaba_folder(gte_dir, tmp_path / "new", rope_scaling={"type": "ntk", "factor": 2.0})
    with pytest.raises(ValueError, match="no class for model_type 'new'.*runs no code from a folder"):
        run_parity(folder, "sdpa")
