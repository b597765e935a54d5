"""Loading: what must load (task-model checkpoints, legacy names, shards) and each refusal, with its message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import minienc
from minienc import CheckpointError

from .conftest import TINY, padded_batch, save_reference


def hidden(folder, **kwargs) -> torch.Tensor:
    batch = padded_batch([5, 3], TINY["vocab_size"], 1)
    with torch.no_grad():
        return minienc.Encoder.from_pretrained(folder, attention="eager", **kwargs)(**batch)


def rewrite_weights(folder: Path, edit) -> None:
    """Apply edit(dict of tensors) to the folder's model.safetensors in place."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def copy_of(reference_dir, tmp_path, family="xlm-roberta", **overrides) -> Path:
    return Path(shutil.copytree(reference_dir(family, **overrides), tmp_path / "model"))


# --- what must load ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, task_class, base",
    [
        ("bert", transformers.BertForMaskedLM, "bert"),
        ("bert", transformers.BertForSequenceClassification, "bert"),
        ("xlm-roberta", transformers.XLMRobertaForMaskedLM, "roberta"),
        ("xlm-roberta", transformers.XLMRobertaForQuestionAnswering, "roberta"),
    ],
)
def test_task_model_checkpoints_load(tmp_path, family, task_class, base):
    """Prefixed encoder weights load; the task heads beside them are ignored on purpose."""
    save_reference(tmp_path, family, model_class=task_class)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert any(k.startswith(f"{base}.") for k in keys)
    ref = getattr(task_class.from_pretrained(tmp_path, attn_implementation="eager").eval(), base)
    pad = 1 if base == "roberta" else 0
    batch = padded_batch([5, 3], TINY["vocab_size"], pad)
    with torch.no_grad():
        ours = minienc.Encoder.from_pretrained(tmp_path, attention="eager")(**batch)
        expected = ref(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    assert torch.equal(ours[keep], expected[keep])


def test_legacy_gamma_beta_and_saved_position_ids(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    before = hidden(folder)

    def legacy(tensors):
        for key in [k for k in tensors if k.endswith("LayerNorm.weight") or k.endswith("LayerNorm.bias")]:
            suffix = "gamma" if key.endswith("weight") else "beta"
            tensors[key.rsplit(".", 1)[0] + "." + suffix] = tensors.pop(key)
        tensors["embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]

    rewrite_weights(folder, legacy)
    assert torch.equal(hidden(folder), before)


def test_sharded_checkpoint(reference_dir, tmp_path):
    folder = tmp_path / "sharded"
    ref = transformers.AutoModel.from_pretrained(reference_dir("bert"))
    ref.save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    assert torch.equal(hidden(folder), hidden(reference_dir("bert")))

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).unlink()
    with pytest.raises(CheckpointError, match=shard):
        hidden(folder)


def test_dtype_and_default_fp32(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    rewrite_weights(folder, lambda t: t.update({k: v.half() for k, v in t.items()}))
    assert hidden(folder).dtype == torch.float32
    assert hidden(folder, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert torch.equal(hidden(folder, dtype="bfloat16"), hidden(folder, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        hidden(folder, dtype="fp8")
    assert next(minienc.Encoder.from_pretrained(folder).parameters()).device.type == "cpu"


# --- what must be refused, and how -------------------------------------------------------------------------------


def test_missing_weights_are_all_named(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    gone = ["encoder.layer.1.output.dense.weight", "embeddings.LayerNorm.bias"]
    rewrite_weights(folder, lambda t: [t.pop(k) for k in gone])
    with pytest.raises(CheckpointError) as err:
        hidden(folder)
    assert "missing weights (2)" in str(err.value)
    for key in gone:
        assert key in str(err.value)


def test_wrong_shape_names_key_and_both_shapes(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 40
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        hidden(folder)
    message = str(err.value)
    assert "encoder.layer.0.intermediate.dense.weight: checkpoint (37, 32), model expects (40, 32)" in message
    assert "encoder.layer.1.output.dense.weight: checkpoint (32, 37), model expects (32, 40)" in message


def test_unexpected_tensor_is_named(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    rewrite_weights(folder, lambda t: t.update({"encoder.layer.7.attention.self.query.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors \(1\):\n    encoder\.layer\.7\.attention"):
        hidden(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage header", "empty"])
def test_corrupt_safetensors_names_the_file(reference_dir, tmp_path, damage):
    folder = copy_of(reference_dir, tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage header":
        path.write_bytes(data[:8] + b"{not json" + data[17:])
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        hidden(folder)


def test_pickle_only_folder_is_refused_unread(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    # not even a valid pickle: if minienc tried to unpickle it, the error would be a different one
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 this would be unpickled")
    with pytest.raises(CheckpointError, match="only pickle weights \\(pytorch_model.bin\\); minienc requires safetensors"):
        hidden(folder)


def test_no_weights_at_all(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        hidden(folder)


def test_unsupported_model_type(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(config))
    import re

    from minienc.model.family import families

    supported = sorted(families())  # every family's records: at least the seven this test was written with
    assert {"bert", "roberta", "xlm-roberta", "qwen3", "modernbert", "gemma3_text", "mpnet"} <= set(supported)
    with pytest.raises(ValueError, match=re.escape(f"unsupported model_type 'gpt2'; minienc supports {supported}")):
        hidden(folder)


def test_heads_must_divide_hidden(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"num_attention_heads \(5\) does not divide hidden_size \(32\)"):
        hidden(folder)


def test_unknown_attention_lists_choices(reference_dir):
    with pytest.raises(ValueError, match=r"unknown attention 'flash9'; choose one of \[.*'eager'.*'sdpa'.*\]"):
        minienc.Encoder.from_pretrained(reference_dir("bert"), attention="flash9")


def test_bad_inputs_are_named(reference_dir):
    encoder = minienc.Encoder.from_pretrained(reference_dir("bert"))
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\), input_ids has \(2, 5\)"):
        encoder(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="longer than the model's 64 positions"):
        encoder(torch.ones(1, 65, dtype=torch.long))


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a model folder"):
        minienc.Encoder.from_pretrained(tmp_path / "nowhere")


# --- refused at load, never loaded with wrong values (review by a helper) ----------------------------------------


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not DROP}))


DROP = object()  # edit_config(folder, key=DROP) removes the key


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update({k: v.to(torch.int32) for k, v in t.items()}),
     r"not floating-point numbers \(\d+\):\n    .*: stored as int32, not a floating-point type"),
    (lambda t: t["encoder.layer.0.output.dense.weight"].view(-1).__setitem__(3, float("nan")),
     r"encoder.layer.0.output.dense.weight: holds NaN or infinite values"),
    (lambda t: t.update({"roberta." + k: v + 1 for k, v in list(t.items())[:1]}),
     r"stored twice \(1\):\n    .* and .* \(model.safetensors\) both hold minienc's embeddings"),
])
def test_weights_that_would_load_wrong_are_refused(reference_dir, tmp_path, edit, message):
    folder = copy_of(reference_dir, tmp_path)
    rewrite_weights(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        hidden(folder)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("at", [0, -1, "past the first buffer"])
@pytest.mark.parametrize("requested", [torch.float32, torch.bfloat16], ids=["as-float32", "as-bfloat16"])
def test_weights_read_from_the_file_in_parts(tmp_path, monkeypatch, dtype, value, at, requested):
    """read_weights_file reads each tensor in buffer-sized parts (the buffer made 64 bytes here): a bad value
    anywhere is found (the first element, the last, one in a later part), a finite file passes whole, and a tensor
    cast from another dtype is .to()'s cast, bit for bit (what stays on disk: the test below)."""
    import minienc.loading.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "FINITE_CHECK_BYTES", 64)
    tensors = {"a": torch.randn(7, 11).to(dtype), "b": torch.randn(300).to(dtype), "ids": torch.arange(5)}
    save_file(tensors, str(tmp_path / "fine.safetensors"))
    read, finite = checkpoint.read_weights_file(tmp_path / "fine.safetensors", requested)
    assert finite == {"a": True, "b": True}  # integers are bad_weight's to refuse
    for key in ("a", "b"):
        assert read[key].dtype == requested and torch.equal(read[key], tensors[key].to(requested))
    assert torch.equal(read["ids"], tensors["ids"])
    tensors["b"][200 if at == "past the first buffer" else at] = value
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    assert checkpoint.read_weights_file(tmp_path / "bad.safetensors", requested)[1] == {"a": True, "b": False}


def test_a_tensor_not_wanted_is_neither_read_nor_cast(tmp_path):
    """A task head ignored on purpose (an lm_head as large as the vocabulary) stays a view of the file in its own
    dtype: no cast copy, no check."""
    import minienc.loading.checkpoint as checkpoint

    save_file({"a": torch.randn(4, 3).to(torch.bfloat16), "head": torch.full((5,), float("nan")).to(torch.bfloat16)},
              str(tmp_path / "w.safetensors"))
    read, finite = checkpoint.read_weights_file(tmp_path / "w.safetensors", torch.float32, wanted=lambda k: k != "head")
    assert read["a"].dtype == torch.float32 and read["head"].dtype == torch.bfloat16 and finite == {"a": True}


@pytest.mark.parametrize("bad", [False, True])
def test_float8_weights_are_checked_and_widened(reference_dir, tmp_path, bad):
    """float8 (no isfinite of its own) is checked widened, and loads as its float32 values, bit for bit."""
    folder = copy_of(reference_dir, tmp_path)
    rewrite_weights(folder, lambda t: t.update({k: v.to(torch.float8_e4m3fn) for k, v in t.items()}))
    widened = copy_of(reference_dir, tmp_path / "widened")
    rewrite_weights(widened, lambda t: t.update({k: v.to(torch.float8_e4m3fn).float() for k, v in t.items()}))
    if bad:
        rewrite_weights(folder, lambda t: t["encoder.layer.0.output.dense.weight"].view(torch.uint8).view(-1)
                        .__setitem__(3, 0x7F))  # e4m3fn's NaN
        with pytest.raises(CheckpointError, match="encoder.layer.0.output.dense.weight: holds NaN or infinite values"):
            hidden(folder)
    else:
        assert torch.equal(hidden(folder), hidden(widened))


def test_a_bad_value_in_one_part_of_a_fused_tensor_names_the_tensor(tmp_path):
    """NomicBERT's Wqkv holds q, k and v: infinity in v's rows is the checkpoint tensor's problem, named by its key."""
    import transformers
    from safetensors.torch import load_file, save_file

    config = transformers.NomicBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32)
    transformers.NomicBertModel(config).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    fused = next(key for key in tensors if key.endswith("Wqkv.weight"))
    tensors[fused][-1, 0] = float("inf")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"not floating-point numbers \(1\):\n    {fused}: holds NaN or infinite "
                                              rf"values$"):  # once, not once per part
        minienc.Encoder.from_pretrained(tmp_path)


RESIDENT = """
import sys
import torch
import minienc

def peak():  # the process's highest resident memory so far (VmHWM)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024

minienc.Encoder.from_pretrained(sys.argv[2])  # the code a load runs, imported and warm
before = peak()
model = minienc.Encoder.from_pretrained(sys.argv[1], dtype=sys.argv[3])
loaded = peak()
with torch.inference_mode():
    model(torch.tensor([[2, 7, 9, 3]]))
print(loaded - before, peak() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("stored, requested", [("float32", "float32"), ("bfloat16", "bfloat16"),
                                               ("bfloat16", "float32"), ("float32", "bfloat16")])
def test_loading_reads_the_file_once_and_keeps_no_second_copy(tmp_path, stored, requested):
    """A model whose embedding table (500,000 x 64) is most of its file. Stored in the dtype asked for, the weights
    are views of the mapped file and the process's peak memory grows by under half the table through loading and a
    forward pass over 4 tokens (under 20 MB of 64 or 128 seen, the forward's own memory included; checking the
    mapped views for NaN made the whole table resident, and kept it). Cast, it grows by the cast table, and not by
    the file's pages beside it (casting the mapped views read them all, for the length of the load)."""
    import subprocess
    import sys

    config = transformers.BertConfig(vocab_size=500_000, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, dtype=stored)
    transformers.BertModel(config, add_pooling_layer=False).to(getattr(torch, stored)).save_pretrained(tmp_path)
    cast = 500_000 * 64 * getattr(torch, requested).itemsize if stored != requested else 0  # the table's copy
    stored_bytes = 500_000 * 64 * getattr(torch, stored).itemsize
    tiny = Path(__file__).resolve().parents[1] / "weights" / "tiny-bert"
    done = subprocess.run([sys.executable, "-c", RESIDENT, str(tmp_path), str(tiny), requested],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded, used = (int(v) for v in done.stdout.split())
    limit = cast + stored_bytes / 2  # the file's table read once would be all of it: 64 or 128 MB here
    assert loaded < limit and used < limit, (loaded, used, cast, stored_bytes)


def test_shard_index_pointing_outside_the_folder(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    keys = load_file(folder / "model.safetensors").keys()
    (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {key: "../elsewhere.safetensors" for key in keys}}))
    with pytest.raises(CheckpointError, match=r"names shards outside .*: \.\./elsewhere\.safetensors"):
        hidden(folder)


def test_roberta_family_pad_token_id_defaults_to_1(reference_dir, tmp_path):
    """transformers' RobertaConfig / XLMRobertaConfig default: positions count from it, so 0 would shift them."""
    folder = copy_of(reference_dir, tmp_path)
    before = hidden(folder)
    edit_config(folder, pad_token_id=DROP)
    assert torch.equal(hidden(folder), before)
    edit_config(folder, pad_token_id=None)  # null: the same default
    assert torch.equal(hidden(folder), before)


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": "32"}, "hidden_size must be a positive integer, got '32'"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer, got 0"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
    ({"layer_norm_eps": "1e-12"}, "layer_norm_eps must be a number from 0 to 1, got '1e-12'"),
    ({"pad_token_id": 100000}, r"pad_token_id must be a token id, from 0 to vocab_size - 1 \(98\), got 100000"),
    ({"model_type": ["bert"]}, r"unsupported model_type \['bert'\]"),
])
def test_config_values_are_checked_and_the_file_named(reference_dir, tmp_path, changes, message):
    folder = copy_of(reference_dir, tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(ValueError, match=f"config.json: {message}"):
        hidden(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: config.json must hold a JSON object, got list"):
        hidden(folder)


def test_keys_behind_another_prefix_get_a_hint(reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path, family="bert")
    rewrite_weights(folder, lambda t: t.update({"model." + k: t.pop(k) for k in list(t)}))
    with pytest.raises(CheckpointError, match=r"every unexpected key starts with 'model\.', a prefix bert checkpoints "
                                              r"do not use \(minienc strips 'bert\.'\)"):
        hidden(folder)
    rewrite_weights(folder, lambda t: t.update({"logit_scale": torch.ones(1)}))  # a key with no prefix at all
    with pytest.raises(CheckpointError, match=r"unexpected tensors \(\d+\)") as err:
        hidden(folder)
    assert "    logit_scale" in str(err.value) and "every unexpected key" not in str(err.value)
