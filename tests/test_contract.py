"""The attention contract (model/attention.py): a variant written from it alone, registered once, runs on every
family, gets the whole mask (padding, causal triangle, local band), keeps decoders causal, and runs packed; `matches=`
claims are per family; `--attention module:function` reaches a variant in the user's own file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minienc
from minienc.model.attention import ATTENTION
from minienc.parity import claimed_reference

REPO = Path(__file__).resolve().parents[1]
DECODERS = ["tiny-qwen3-embedding", "tiny-llama", "tiny-qwen2", "tiny-mistral"]
BUNDLED = ["tiny-bert", "tiny-xlm-roberta", "tiny-distilbert", "tiny-nomic-bert", "tiny-gte", "tiny-jina-v3", "tiny-mpnet", *DECODERS, "tiny-modernbert-embed", "tiny-embeddinggemma"]
BIASED = ["tiny-mpnet"]  # positions as a score bias: linear attention, which has no scores, is refused there
# long enough to cross the bundled models' local windows (8 tokens each way), short enough to pad the others past them
TEXTS = ["a", "a short text", "tokens become vectors and attention mixes them, layer after layer, " * 3, "头痛 🙂"]


def textbook(q, k, v, mask, scale, bias=None):
    """softmax attention in float32, as a researcher writes it from the contract alone."""
    k, v = minienc.repeat_kv(k, q).float(), minienc.repeat_kv(v, q).float()
    scores = q.float() @ k.transpose(-1, -2) * scale
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v).to(q.dtype)


def half_temperature(q, k, v, mask, scale, bias=None):
    return textbook(q, k, v, mask, scale * 0.5, bias)


@pytest.fixture(scope="module", autouse=True)
def variants():
    minienc.register_attention("test_textbook")(textbook)
    minienc.register_attention("test_half_temperature")(half_temperature)
    yield
    for name in ("test_textbook", "test_half_temperature"):
        ATTENTION.pop(name)


def hidden(folder: str, attention: str, texts: list[str] = TEXTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The last hidden state of `texts` in one padded batch (the family's padding side), and where the real tokens are."""
    model = minienc.SentenceEncoder.from_pretrained(REPO / "weights" / folder, attention=attention, execution="padded")
    batch = model.tokenizer(texts)
    with torch.inference_mode():
        out = model.encoder(**batch)
    return out, batch["attention_mask"].bool()


@pytest.mark.parametrize("folder", BUNDLED)
def test_a_variant_from_the_contract_runs_on_every_family(folder):
    """The textbook copy gives the default's result within float32 rounding (2e-5: another summation order, and
    -inf where transformers adds the lowest float), so the mask it was handed holds everything the family decides;
    another temperature moves it."""
    default, real = hidden(folder, "sdpa")
    copy, _ = hidden(folder, "test_textbook")
    moved, _ = hidden(folder, "test_half_temperature")
    torch.testing.assert_close(copy[real], default[real], rtol=0, atol=2e-5)
    assert (moved[real] - default[real]).abs().max() > 1e-3
    assert torch.isfinite(moved).all() and torch.isfinite(copy).all()


@pytest.mark.parametrize("folder", DECODERS)
@pytest.mark.parametrize("attention", ["test_half_temperature", "sliding_window", "linear", "no_window"])
def test_decoders_stay_causal_under_any_variant(folder, attention):
    """A later token changed moves no earlier one, whatever the variant (the family puts the triangle in its mask)."""
    model = minienc.Encoder.from_pretrained(REPO / "weights" / folder, attention=attention)
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % model.config.vocab_size
    with torch.inference_mode():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.equal(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("folder", BUNDLED)
@pytest.mark.parametrize("attention", ["test_half_temperature", "sliding_window", "linear", "no_window"])
def test_packed_runs_any_variant_as_padded(folder, attention):
    """Packed execution hands each text alone the mask it gets unpadded: its vectors are the padded ones within
    1e-5 (the linear layers see other row counts). Not linear attention on a left-padded rotary decoder: its
    positions count from the row's first token, padding included, and elu(q), elu(k) after rotation are not
    invariant to that shift, as softmax(q k^T) is: padding moves the result there, by the variant's own math."""
    if attention == "linear" and folder in DECODERS:
        pytest.skip("linear attention after rotary positions depends on the left padding's shift (docstring)")
    if attention == "linear" and folder in BIASED:
        with pytest.raises(ValueError, match="takes no `bias`"):
            minienc.SentenceEncoder.from_pretrained(REPO / "weights" / folder, attention=attention)
        return
    def encoder(execution):
        return minienc.SentenceEncoder.from_pretrained(REPO / "weights" / folder, attention=attention,
                                                       execution=execution, matmul="torch")

    packed, padded = encoder("packed").encode(TEXTS), encoder("padded").encode(TEXTS)
    assert np.isfinite(padded).all()
    np.testing.assert_allclose(packed, padded, rtol=0, atol=1e-5)


def test_matches_claims_are_per_family():
    """A claim made for one family holds nowhere else, and re-registering a name drops its claims: a variant is held
    to bit-exactness only where its author said it reproduces transformers."""
    bert, qwen3 = REPO / "weights" / "tiny-bert", REPO / "weights" / "tiny-qwen3-embedding"
    try:
        minienc.register_attention("test_claims", matches={"bert": "eager"})(textbook)
        assert claimed_reference(bert, "test_claims") == "eager"
        assert claimed_reference(qwen3, "test_claims") is None
        minienc.register_attention("test_claims", matches="sdpa")(textbook)
        assert claimed_reference(qwen3, "test_claims") == "sdpa"
        minienc.register_attention("test_claims")(textbook)
        assert claimed_reference(bert, "test_claims") is None
    finally:
        ATTENTION.pop("test_claims", None)
    assert claimed_reference(qwen3, "eager") == "eager" and claimed_reference(bert, "sdpa") == "sdpa"


def test_reference_names_cannot_be_replaced():
    with pytest.raises(ValueError, match="'eager' cannot be registered"):
        minienc.register_attention("eager")(textbook)


VARIANTS_MODULE = '''
import minienc


def half_temperature(q, k, v, mask, scale, bias=None):
    k, v = minienc.repeat_kv(k, q), minienc.repeat_kv(v, q)
    s = q @ k.transpose(-1, -2) * scale * 0.5
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


@minienc.register_attention("registered_copy", matches="eager")
def copy(q, k, v, mask, scale):
    return minienc.ATTENTION["eager"](q, k, v, mask, scale)
'''


@pytest.mark.parametrize("folder", ["tiny-bert", "tiny-qwen3-embedding"])
def test_parity_reaches_a_variant_in_the_users_module(folder, tmp_path):
    """`minienc parity --attention module:function`, in a fresh process run from the module's folder: the variant
    runs, is reported against eager, and moves the first attention stage first."""
    (tmp_path / "my_variants.py").write_text(VARIANTS_MODULE)
    # the console script, as the docs show it: unlike `python -m`, it has no current folder on sys.path of its own
    script = Path(sys.executable).with_name("minienc")
    launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "minienc"]
    command = [*launcher, "parity", "--model", str(REPO / "weights" / folder), "hello world"]
    run = subprocess.run([*command, "--attention", "my_variants:half_temperature"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "attention=my_variants:half_temperature" in run.stdout and "report only" in run.stdout
    first = [line.split()[0] for line in run.stdout.splitlines() if "<- first divergence" in line]
    assert first == ["layer.0.attention"]
    # registered by its module: its claim kept, and held to bit-exactness (in float32, BERT's eager form is the
    # decoders' op for op, the triangle in the mask it is handed)
    run = subprocess.run([*command, "--attention", "my_variants:copy"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert "attention=my_variants:copy" in run.stdout and "bit-exact" in run.stdout
    assert run.returncode == 0, run.stdout + run.stderr


def test_module_that_is_not_there_is_a_clear_error(tmp_path, capsys):
    from minienc.cli import main

    assert main(["parity", "--model", str(REPO / "weights" / "tiny-bert"), "--attention", "nowhere:fn", "x"]) == 1
    assert "cannot import 'nowhere'" in capsys.readouterr().err
    (tmp_path / "empty_variants.py").write_text("")
    (tmp_path / "broken_variants.py").write_text("import not_installed_anywhere\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["encode", "x", "--model", str(REPO / "weights" / "tiny-bert"),
                     "--attention", "empty_variants:fn"]) == 1
        assert "'empty_variants' has no function 'fn'" in capsys.readouterr().err
        # the module is there, one of its own imports is not: say that, not "run from its folder"
        assert main(["encode", "x", "--model", str(REPO / "weights" / "tiny-bert"),
                     "--attention", "broken_variants:fn"]) == 1
        assert "importing 'broken_variants' failed: No module named 'not_installed_anywhere'" in (
            capsys.readouterr().err)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("empty_variants", None)


def test_a_function_registered_twice_is_named_by_one_of_its_names():
    with pytest.raises(ValueError, match=r"registered as \['test_textbook', 'test_again'\]"):
        minienc.register_attention("test_again")(textbook)
        try:
            minienc.get_attention("tests.test_contract:textbook")
        finally:
            ATTENTION.pop("test_again")


def test_claims_must_name_transformers_implementations():
    with pytest.raises(ValueError, match=r"matches= names transformers' implementations"):
        minienc.register_attention("test_bad_claim", matches="sdp")(textbook)
