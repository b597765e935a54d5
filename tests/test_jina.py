"""jina-embeddings-v3 (model/jina_embeddings_v3.py) against transformers' JinaEmbeddingsV3Model and
sentence-transformers: the fused layout transformers saves (mixer.Wqkv, weights and biases), its module names, and the
task adapters it refuses."""

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
TINY = REPO / "weights" / "tiny-jina-v3"


def save_jina(folder: Path) -> Path:
    config = transformers.JinaEmbeddingsV3Config(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64, initializer_range=0.2,
                                                 max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.JinaEmbeddingsV3Model(config, add_pooling_layer=False)
    draw_every_parameter(model)  # norms and biases too: a swapped pair in the key table shows
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def jina_dir(tmp_path_factory) -> Path:
    return save_jina(tmp_path_factory.mktemp("jina"))


def batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    return three_rows(side, low=2, high=120)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(jina_dir, side, attention, dtype):
    ids, mask = batch(side)
    theirs = transformers.AutoModel.from_pretrained(jina_dir, attn_implementation=attention, dtype=dtype,
                                                    add_pooling_layer=False).eval()
    ours = minienc.Encoder.from_pretrained(jina_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, mask)
    assert b.dtype == dtype and torch.equal(a[mask.bool()], b[mask.bool()])


def test_module_names_load_alike(jina_dir, tmp_path):
    ids, mask = batch("right")
    state = transformers.JinaEmbeddingsV3Model.from_pretrained(jina_dir, add_pooling_layer=False).state_dict()
    folder = tmp_path / "unfused"
    folder.mkdir()
    (folder / "config.json").write_text((jina_dir / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with torch.inference_mode():
        assert torch.equal(minienc.Encoder.from_pretrained(folder)(ids, mask),
                           minienc.Encoder.from_pretrained(jina_dir)(ids, mask))


def test_task_adapters_are_refused_by_name(jina_dir, tmp_path):
    config = json.loads((jina_dir / "config.json").read_text())
    config["lora_adaptations"] = ["retrieval.query", "retrieval.passage"]
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").symlink_to(jina_dir / "model.safetensors")
    with pytest.raises(ValueError, match=r"lora_adaptations \['retrieval.query', 'retrieval.passage'\] \(task "
                                         r"adapters\) are not computed"):
        minienc.Encoder.from_pretrained(folder)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sentence_vectors_as_sentence_transformers(dtype):
    """Mean pooling and Normalize, as jina-embeddings-v3's folder."""
    assert_sentence_vectors_match(TINY, dtype)
