"""Attention variants (each tested against eager), user registration, `minienc trace` and `minienc parity`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import minienc
from minienc.model.attention import ATTENTION, eager, linear, sliding_window
from minienc.cli import main
from minienc.loading.encoder import read_config
from minienc.runtime.matmul import onednn_available
from minienc.parity import run_parity

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def attention_inputs(seed=0, batch=3, heads=2, seq=12, dim=8):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, seq, dim, generator=gen) for _ in range(3))
    mask = torch.ones(batch, seq, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, :3] = False  # left padding too
    return q, k, v, mask[:, None, None, :], dim**-0.5


@pytest.mark.parametrize("name", sorted(name for name, v in ATTENTION.items() if v.matches and v.fn is not eager))
def test_reference_matching_variants_agree_with_eager(name):
    """Variants that claim to reproduce a transformers implementation, on identical inputs: equal to eager up to
    summation order (different kernels add in different orders: float32 rounding on O(1) values)."""
    q, k, v, mask, scale = attention_inputs()
    for m in (mask, None):
        torch.testing.assert_close(ATTENTION[name](q, k, v, m, scale), eager(q, k, v, m, scale), rtol=0, atol=1e-6)


def test_sliding_window_is_eager_when_the_window_covers_everything():
    q, k, v, _, scale = attention_inputs()
    assert torch.equal(sliding_window(11)(q, k, v, None, scale), eager(q, k, v, None, scale))
    assert not torch.allclose(sliding_window(2)(q, k, v, None, scale), eager(q, k, v, None, scale))


def test_sliding_window_ignores_keys_outside_the_window():
    q, k, v, mask, scale = attention_inputs()
    before = sliding_window(3)(q, k, v, mask, scale)
    k2, v2 = k.clone(), v.clone()
    k2[..., 8:, :] += 5.0  # far from query 0..4
    v2[..., 8:, :] -= 5.0
    after = sliding_window(3)(q, k2, v2, mask, scale)
    assert torch.equal(before[..., :5, :], after[..., :5, :])
    assert not torch.equal(before[..., 5:, :], after[..., 5:, :])


def test_linear_attention_against_its_formula():
    """out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j) over real keys j, phi = elu + 1."""
    q, k, v, mask, scale = attention_inputs()
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    expected = torch.empty_like(q)
    for b in range(q.shape[0]):
        keys = mask[b, 0, 0]
        weights = phi_q[b] @ phi_k[b][:, keys].transpose(-1, -2)  # (heads, T, real keys)
        expected[b] = (weights @ v[b][:, keys]) / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(linear(q, k, v, mask, scale), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sliding_window", "linear"])
def test_research_variants_run_on_real_weights(minilm_dir, name):
    model = minienc.SentenceEncoder.from_pretrained(minilm_dir, attention=name)
    reference = minienc.SentenceEncoder.from_pretrained(minilm_dir)
    texts = ["short", "a much longer text that goes on " * 6]
    vectors = model.encode(texts)
    assert torch.isfinite(torch.from_numpy(vectors)).all()
    assert not (vectors == reference.encode(texts)).all()


@pytest.fixture
def user_variants():
    """Register two variants from 'user code'; unregister them afterwards."""

    @minienc.register_attention("user_eager", matches="eager")
    def user_eager(q, k, v, mask, scale):
        return eager(q, k, v, mask, scale)

    @minienc.register_attention("user_temperature")
    def user_temperature(q, k, v, mask, scale):
        return eager(q, k, v, mask, scale * 0.5)

    yield
    for name in ("user_eager", "user_temperature"):
        ATTENTION.pop(name)


def test_user_variant_selected_by_name(user_variants, minilm_dir):
    """The registered function is the one every layer calls, and switching changes the result."""
    import transformers

    ours = minienc.Encoder.from_pretrained(minilm_dir, attention="user_eager")
    assert {layer.attention.attend.padded for layer in ours.layers} == {ATTENTION["user_eager"].fn}
    reference = transformers.AutoModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.inference_mode():
        expected = reference(ids).last_hidden_state
        assert torch.equal(ours(ids), expected)
        ours.set_attention("user_temperature")
        assert ours.attention_name == "user_temperature"
        assert {layer.attention.attend.padded for layer in ours.layers} == {ATTENTION["user_temperature"].fn}
        assert not torch.equal(ours(ids), expected)


def test_user_variant_on_packed_input(user_variants):
    """A variant runs once per text on packed input; a registered packed form replaces that loop, and switching
    the attention switches both."""
    from minienc.model.attention import register_packed

    weights = Path(__file__).resolve().parent.parent / "weights" / "tiny-bert"
    ids, spans = torch.tensor([[101, 7, 8, 102, 101, 9, 102]]), [(0, 4), (4, 7)]
    ours = minienc.Encoder.from_pretrained(weights, attention="user_eager")
    calls = []

    @register_packed("user_eager")
    def counted(q, k, v, spans, scale):
        calls.append(len(spans))
        return torch.cat([eager(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None, scale) for a, b in spans], dim=2)

    with torch.inference_mode():
        alone = ours(ids, spans=spans)  # set before the packed form existed: one eager call per text
        ours.set_attention("user_eager")
        assert torch.equal(ours(ids, spans=spans), alone) and calls == [2] * len(ours.layers)
        ours.set_attention("user_temperature")  # a variant of its own: one call per text, not user_eager's form
        calls.clear()
        ours(ids, spans=spans)
        assert calls == []


@pytest.mark.parametrize("folder", ["tiny-bert", "tiny-xlm-roberta", "minilm"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_parity_bit_exact_at_every_stage(folder, attention, minilm_dir):
    path = minilm_dir if folder == "minilm" else WEIGHTS / folder
    rows, reference = run_parity(path, attention)
    assert reference == attention
    layers = read_config(path / "config.json").num_layers
    assert [r.stage for r in rows][:2] == ["embedding_sum", "embeddings"]
    assert len(rows) == 2 + 2 * layers + 2  # + last_hidden_state + sentence_embedding
    assert all(r.identical and r.max_abs == 0 for r in rows)


def test_parity_command_exit_status_and_first_divergence(user_variants, minilm_dir, capsys):
    model = ["--model", str(WEIGHTS / "tiny-bert")]
    assert main(["parity", *model, "--attention", "user_eager", "hello"]) == 0
    assert "matmul=torch, padded vs transformers attn_implementation=eager (float32, cpu; bit-exact)" in (
        capsys.readouterr().out
    )

    assert main(["parity", *model, "--attention", "user_temperature", "hello"]) == 0  # no claim: report only
    out = capsys.readouterr().out
    assert "report only" in out
    assert first_divergence(out) == "layer.0.attention"  # the embeddings share every op; attention is changed

    assert main(["parity", *model, "--attention", "user_temperature", "--atol", "1e-3", "hello"]) == 1
    assert main(["parity", *model, "--attention", "nope"]) == 1
    assert "unknown attention 'nope'" in capsys.readouterr().err


def test_parity_says_in_one_line_which_keys_transformers_left_unused(minilm_dir, capsys):
    """all-MiniLM-L6-v2 stores BERT's pooler, which the reference is loaded without: one line of minienc's own says
    so (transformers' loading table is not shown); a weight transformers lacked and drew at random is a warning (a
    folder minienc loads cannot lack one: minienc refuses it first, so the rule is held on its own)."""
    assert main(["parity", "--model", str(minilm_dir), "hello"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == ("note: transformers' BertModel left 2 checkpoint key(s) unused: "
                                             "pooler.dense.bias, pooler.dense.weight (weights BertModel does not "
                                             "have: a pooler or a task head)")
    assert "LOAD REPORT" not in captured.out + captured.err and "UNEXPECTED" not in captured.out + captured.err
    from minienc.parity import loading_notes

    assert loading_notes("BertModel", {"missing_keys": {"encoder.layer.0.output.dense.bias"}}) == [
        "warning: transformers' BertModel did not find 1 weight(s) in the checkpoint and drew them at random, so the "
        "reference is not the checkpoint there: encoder.layer.0.output.dense.bias"]


def first_divergence(out: str) -> str | None:
    marked = [line.split()[0] for line in out.splitlines() if "<- first divergence" in line]
    assert len(marked) <= 1
    return marked[0] if marked else None


@pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN")
def test_parity_command_with_another_kernel(minilm_dir, capsys):
    """Another matmul kernel, or packed execution, is not transformers' computation: report, don't fail. Where the
    two kernels first part depends on the CPU and thread count, so the test holds the table to its own rows: the
    marked stage is the first one not identical, and nothing before it differs."""
    model = ["--model", str(minilm_dir)]
    assert main(["parity", *model, "--matmul", "onednn", "hello world"]) == 0
    out = capsys.readouterr().out
    assert "matmul=onednn, padded" in out and "report only" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    differing = [row[0] for row in rows if row[3] == "no"]
    assert rows[0][0] == "embedding_sum" and rows[0][3] == "yes"  # no multiply before the first layer
    assert first_divergence(out) == (differing[0] if differing else None)
    # the table reports the kernel it names: the stages differ exactly where the two kernels' hidden states do
    batch = minienc.SentenceEncoder.from_pretrained(minilm_dir, execution="padded").tokenize(["hello world"])
    with torch.inference_mode():
        hidden = [minienc.Encoder.from_pretrained(minilm_dir, matmul=name)(**batch) for name in ("onednn", "torch")]
    assert bool(differing) == (not torch.equal(*hidden))
    assert main(["parity", *model, "--execution", "packed", "--matmul", "torch", "hello world"]) == 0
    assert "report only" in capsys.readouterr().out


@pytest.mark.parametrize("folder", ["tiny-bert", "tiny-xlm-roberta", "minilm"])
def test_trace(folder, minilm_dir, capsys):
    path = minilm_dir if folder == "minilm" else WEIGHTS / folder
    assert main(["trace", "--model", str(path), "--json", "头痛 🙂 hello"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = minienc.SentenceEncoder.from_pretrained(path, execution="padded")  # trace runs the padded path
    assert data["input_ids"] == model.tokenizer.tokenize(["头痛 🙂 hello"])[0].ids.tolist()
    assert len(data["stages"]) == 2 + 2 * len(model.encoder.layers)
    assert data["normalized"]["norm"] == pytest.approx(1.0, abs=1e-6)
    expected = model.encode("头痛 🙂 hello")[:4]
    assert data["normalized"]["values"] == [round(float(x), 6) for x in expected]

    assert main(["trace", "--model", str(path), "头痛 🙂 hello"]) == 0
    page = capsys.readouterr().out
    assert "text: '头痛 🙂 hello'" in page and "4. pooling" in page and "5. L2 normalize" in page


BUNDLED = sorted(path.name for path in WEIGHTS.iterdir() if (path / "config.json").is_file())


@pytest.mark.parametrize("folder", BUNDLED)
def test_every_bundled_family_traces_and_is_identical_at_every_stage(folder, capsys):
    """`minienc trace` prints every family's steps (its stage points come from its record), and `minienc parity`
    finds every stage identical to transformers' with the default attention (or its own claim, MPNet's eager)."""
    assert len(BUNDLED) >= 12
    assert main(["trace", "--model", str(WEIGHTS / folder), "a learner reads 头痛 🙂"]) == 0
    out = capsys.readouterr().out
    assert "1. tokenize" in out and "3. " in out and "pooling" in out
    rows, _ = run_parity(WEIGHTS / folder, "sdpa")
    assert len(rows) >= 5 and all(r.identical for r in rows), [r for r in rows if not r.identical]


def test_parity_prints_only_its_own_lines(capfd):
    """The reference's loading bars and load report (BERT's pooler, left out on purpose) do not reach the user: what
    `minienc parity` prints is its header and its table."""
    assert main(["parity", "--model", str(WEIGHTS / "tiny-bert"), "hello"]) == 0
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and "Loading weights" not in captured.err
    assert captured.out.splitlines()[0].startswith("minienc attention=sdpa")


def test_plot_of_a_long_text_stays_legible(tmp_path, capsys):
    """A long text: the picture keeps its size (16 inches a panel at most) and labels every Nth token, at most 48 an
    axis; CJK tokens without a CJK font are announced, not silently drawn as boxes."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from PIL import Image

    from minienc.plot import CJK_FONTS, MAX_LABELS, plot_attention

    shown = []
    original = plt.Figure.savefig
    plt.Figure.savefig = lambda figure, *args, **kwargs: (shown.append(figure), original(figure, *args, **kwargs))[1]
    try:
        model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert")
        path = plot_attention(tmp_path / "long.png", model, "attention mixes tokens, layer after layer " * 8 + "头痛")
    finally:
        plt.Figure.savefig = original
    width, height = Image.open(path).size
    assert width <= 2 * 16 * 100 + 400 and height <= 16 * 100 + 200
    (figure,) = shown
    panels = [axes for axes in figure.axes if axes.get_title()]  # not the colour bars
    assert len(panels) == 2 and all(len(axes.get_xticklabels()) <= MAX_LABELS for axes in panels)
    from matplotlib import font_manager

    has_cjk = any(mark in font.name for font in font_manager.fontManager.ttflist for mark in CJK_FONTS)
    assert ("no font with CJK characters" in capsys.readouterr().err) == (not has_cjk)
