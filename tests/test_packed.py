"""Packed execution: close to the reference, and a text's vector independent of the batch it is encoded in.

Batch invariance is promised where the row blocks' probe passes (minienc/runtime/matmul.py); where it fails, the promise is
that the library says so. Both branches are tests of minienc, whatever the CPU, thread count or instruction set."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

import minienc
import minienc.runtime.batching
from minienc.runtime.matmul import RowBlocks, probe_cases, random_rows, rows_independent, same_as_blocks, plain_linear
from minienc.runtime.batching import filler, pack, run_packed
from minienc.heads.pipeline import ROW_BLOCKS

from .test_sentence import TEXTS, st_folder

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def corpus(n: int, seed: int = 0) -> list[str]:
    """n texts of 1 to ~300 words drawn from a fixed vocabulary, with CJK and emoji among them."""
    rng = random.Random(seed)
    words = "the encoder reads every token attention mixes values 头痛 🙂 naïve pooling vector layer".split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 3, 8, 20, 60, 300]))) for _ in range(n)]


@pytest.fixture(scope="module")
def minilm_packed(minilm_dir):
    return minienc.SentenceEncoder.from_pretrained(minilm_dir)  # packed is the default


def test_packed_is_the_default(minilm_packed):
    assert minilm_packed.execution == "packed"


@pytest.mark.slow
def test_within_1e6_of_sentence_transformers(minilm_packed, minilm_dir):
    """Packed attention sees each text alone, unpadded: the same math in other matrix shapes, so the last bits
    may differ. The promise: within 1e-6 of sentence-transformers, about 8 float32 ulps of these entries."""
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    texts = TEXTS + corpus(40)
    assert np.abs(minilm_packed.encode(texts) - st.encode(texts)).max() <= 1e-6
    for ours, theirs in zip(minilm_packed.encode(texts, output_value="token_embeddings"),
                            st.encode(texts, output_value="token_embeddings")):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)  # unnormalized hidden states, |x| up to ~10


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlm-roberta"])
def test_bundled_models_within_1e6(name):
    ours = minienc.SentenceEncoder.from_pretrained(WEIGHTS / name)
    st = SentenceTransformer(str(WEIGHTS / name), device="cpu")
    assert np.abs(ours.encode(TEXTS) - st.encode(TEXTS)).max() <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("matmul, dtype", [("default", "float32"), ("torch", "float32"), ("default", "bfloat16")])
def test_batch_invariance(minilm_packed, minilm_dir, matmul, dtype):
    """Alone, in a batch of 64, in a shuffled batch of 17, cut into many small batches: the same bits, with the
    packed default kernel (oneDNN where available) and with transformers' own, and in the bfloat16 fast path."""
    if (matmul, dtype) != ("default", "float32"):
        minilm_packed = minienc.SentenceEncoder.from_pretrained(
            minilm_dir, matmul=None if matmul == "default" else matmul, dtype=dtype)
    if not minilm_packed.batch_invariant:
        pytest.skip(f"matmul {minilm_packed.matmul_name!r} failed the row-block probe on this machine; "
                    f"minienc reports it (test_probe_failure_is_reported)")
    texts = corpus(64, seed=1)
    in_64 = minilm_packed.encode(texts)
    alone = np.stack([minilm_packed.encode(t) for t in texts[:20]])
    assert np.array_equal(alone, in_64[:20])
    rng = random.Random(2)
    picked = rng.sample(range(64), 17)
    assert np.array_equal(minilm_packed.encode([texts[i] for i in picked]), in_64[picked])
    assert np.array_equal(minilm_packed.encode(texts, token_budget=50), in_64)  # every text its own small batch
    assert np.array_equal(minilm_packed.encode(texts, token_budget=6000), in_64)  # batches of more than one call
    tokens_alone = minilm_packed.encode(texts[3], output_value="token_embeddings")
    assert torch.equal(tokens_alone, minilm_packed.encode(texts, output_value="token_embeddings")[3])


def shape_dependent(x, weight, bias, activation=None):
    """A kernel whose result depends on how many rows it is given, as real kernels' rounding may."""
    return plain_linear(x, weight, bias, activation) + 1e-3 * x.shape[0]


def place_dependent(x, weight, bias, activation=None):
    """A kernel whose result depends on where a row sits in the matrix: row blocks cannot fix that."""
    return plain_linear(x, weight, bias, activation) + 1e-3 * torch.arange(x.shape[0])[:, None]


def test_row_blocks_make_a_shape_dependent_kernel_batch_invariant():
    gen = torch.Generator().manual_seed(0)
    weight, bias, x = torch.randn(8, 16, generator=gen), torch.randn(8, generator=gen), torch.randn(40, 16, generator=gen)
    assert not torch.equal(shape_dependent(x, weight, bias)[:3], shape_dependent(x[:3], weight, bias))
    blocked = RowBlocks(shape_dependent, rows=16)
    assert blocked.check(weight, bias, None)
    whole = blocked(x, weight, bias)
    for part in (x[:3], x[:16], x[:17], x[:33]):  # shorter than a block, exactly one, just over one, over two
        assert torch.equal(blocked(part, weight, bias), whole[: len(part)])
    assert torch.equal(blocked(x[None], weight, bias)[0], whole)  # (1, N, in) as packed execution passes it
    assert torch.equal(whole, F.linear(x, weight, bias) + 1e-3 * 16)


def row_by_row(x, weight, bias, activation=None):
    """A kernel that computes each row in a call of its own: independent of the other rows by construction."""
    return torch.cat([plain_linear(row[None], weight, bias, activation) for row in x])


def test_row_blocks_merge_calls_only_where_the_probe_allows():
    """Whole blocks go in one call where a probe showed that call rounds each row as a call of one block does, and
    elsewhere in calls of powers of two of blocks that the probe accepted: a kernel that is row-independent at any
    size gets one call per part, one that rounds otherwise above 2 blocks gets calls of 2 (and 1), one that depends
    on every size gets one block per call. Each gives every row the bits of one-block calls."""
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(8, 16, generator=gen), torch.randn(8, generator=gen)
    x = torch.randn(100, 16, generator=gen)
    above_two = lambda x, w, b, a=None: row_by_row(x, w, b, a) + 1e-3 * (x.shape[0] > 32)  # noqa: E731
    # kernel -> calls for 100 rows (4 + 3 blocks: 64 rows, then 36 topped up to 48: calls of 4 and 3 blocks, or
    # 2 + 2 and 2 + 1, or 7 x 1) and for 20 rows (2 blocks); row_by_row computes each row alone: the same bits at any
    # number of rows, by construction
    for kernel, calls in ((row_by_row, (2, 1)), (above_two, (4, 1)), (shape_dependent, (7, 2))):
        sizes = []
        counted = lambda x, w, b, a=None, kernel=kernel: sizes.append(x.shape[0]) or kernel(x, w, b, a)  # noqa: E731
        blocked = RowBlocks(counted, rows=16, blocks_per_call=4)
        one_at_a_time = torch.cat([kernel(block, weight, bias) for block in F.pad(x, (0, 0, 0, 12)).split(16)])[:100]
        for n, expected in zip((100, 20), calls):
            blocked(x[:n], weight, bias)  # the first time, probes the merged sizes it needs
            sizes.clear()
            assert torch.equal(blocked(x[:n], weight, bias), one_at_a_time[:n])
            assert len(sizes) == expected and all(size in (16, 32, 48, 64) for size in sizes), (kernel, n, sizes)


def test_rows_under_a_block_go_in_a_call_of_their_own_where_the_probe_allows():
    """Rows that fill less than one block (a lone query) go in one call of their own when they are a multiple of
    TAIL_ROWS and the probe showed such a call rounds as a block does: a kernel row-independent by construction gets
    it, one that rounds otherwise under 32 rows gets it from 32 rows, one that depends on every size gets a whole
    block. Every row gets the bits of a one-block call."""
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(8, 16, generator=gen), torch.randn(8, generator=gen)
    x = torch.randn(80, 16, generator=gen)
    # rows -> call sizes: under a block, a multiple of 16 or not; a block and a bit (two blocks, merged)
    under_32 = lambda x, w, b, a=None: row_by_row(x, w, b, a) + 1e-3 * (x.shape[0] < 32)  # noqa: E731
    for kernel, expected in ((row_by_row, {16: [16], 48: [48], 20: [64], 80: [128]}),
                             (under_32, {16: [64], 32: [32], 48: [48], 80: [128]}),
                             (shape_dependent, {16: [64], 48: [64], 20: [64], 80: [64, 64]})):
        sizes = []
        counted = lambda x, w, b, a=None, kernel=kernel: sizes.append(x.shape[0]) or kernel(x, w, b, a)  # noqa: E731
        blocked = RowBlocks(counted, rows=64)
        one_block = torch.cat([kernel(block, weight, bias) for block in F.pad(x, (0, 0, 0, 48)).split(64)])
        for n, calls in expected.items():
            blocked(x[:n], weight, bias)  # the first time, probes the sizes it needs
            sizes.clear()
            assert torch.equal(blocked(x[:n], weight, bias), one_block[:n])
            assert sizes == calls, (kernel, n, sizes)


def test_filler_tops_a_row_under_one_block_up_to_tail_rows():
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", row_block=64)
    assert [sum(len(t.ids) for t in filler(n, model.encoder.config, model.row_block)) for n in (1, 16, 17, 63, 64, 65)] == [15, 0, 15, 1, 0, 63]
    odd = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", row_block=40)  # not a multiple of 16
    assert sum(len(t.ids) for t in filler(1, odd.encoder.config, odd.row_block)) == 39


def split_sum(x: torch.Tensor, weight: torch.Tensor, rows: slice) -> torch.Tensor:
    """x @ weight.T in float32, one row per call (so a row's bits never depend on the others), with the given rows
    summed in another order (the first 8 inputs apart), rounded to x's dtype: the kind of difference a kernel makes
    when it picks other code for some rows."""
    xf, wf = x.float(), weight.float()
    y = torch.stack([wf @ row for row in xf])
    for i in range(*rows.indices(len(xf))):
        y[i] = wf[:, :8] @ xf[i, :8] + wf[:, 8:] @ xf[i, 8:]
    return y.to(x.dtype)


def tail_reordered(x, weight, bias, activation=None):
    """Above 64 rows, the rows past the last multiple of 48 are summed in another order."""
    return split_sum(x, weight, slice((x.shape[0] // 48) * 48 if x.shape[0] > 64 else x.shape[0], None)) + bias


def odd_rows_reordered(x, weight, bias, activation=None):
    """The rows at odd places are summed in another order."""
    return split_sum(x, weight, slice(1, None, 2)) + bias


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_probes_see_another_order_of_summation_through_output_rounding(dtype):
    """A half-precision output rounds away most of what another order of summation changes, so random probe rows
    can miss a kernel that sums a few rows otherwise (in bfloat16 here they do); the probes' cancelling rows
    (matmul.probe_cases) make such rows differ. Sizes with 32, 16 and 32 rows past a multiple of 48, 5 weights
    each: the probes catch every one; a row-independent kernel passes."""
    missed_by_random_rows = 0
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        weight = (torch.randn(384, 1536, generator=gen) * 0.05).to(dtype)
        bias = torch.randn(384, generator=gen).to(dtype)
        for size in (128, 160, 224):
            assert not same_as_blocks(tail_reordered, weight, bias, None, rows=32, size=size), (seed, size)
            x = random_rows(size, weight, torch.Generator().manual_seed(size))
            blocks = torch.cat([tail_reordered(block, weight, bias) for block in x.split(32)])
            missed_by_random_rows += torch.equal(tail_reordered(x, weight, bias), blocks)
        assert not rows_independent(odd_rows_reordered, weight, bias, None, rows=32), seed
    if dtype == torch.bfloat16:
        assert missed_by_random_rows > 0  # else this test would not show what the cancelling rows add
    gen = torch.Generator().manual_seed(5)
    weight, bias = (torch.randn(384, 1536, generator=gen) * 0.05).to(dtype), torch.randn(384, generator=gen).to(dtype)
    assert same_as_blocks(row_by_row, weight, bias, None, rows=32, size=128)
    assert rows_independent(row_by_row, weight, bias, None, rows=32)


def test_probe_copy_of_the_weight_takes_the_weights_path():
    """The cancelling probe's weight matches the model's in what a kernel may choose its code by, autograd included
    (oneDNN hands calls that autograd records to F.linear); weights it cannot apply to get random rows alone."""
    weight = torch.nn.Parameter(torch.randn(8, 16))
    with torch.enable_grad():
        (_, none), (copy, big) = probe_cases(weight)
    assert none is None and big > 0
    assert copy.requires_grad and copy.dtype == weight.dtype and copy.shape == weight.shape
    assert torch.equal(copy[:, 1:-1], weight.detach()[:, 1:-1]) and (copy[:, [0, -1]] == 1).all()
    for odd in (torch.randn(8, 2), torch.full((8, 16), float("inf")), torch.zeros(8, 16), torch.ones(8, 16).long()):
        assert len(probe_cases(odd)) == 1, odd


def neighbour_dependent(x, weight, bias, activation=None):
    """A kernel whose row results depend on the values of the other rows."""
    return plain_linear(x, weight, bias, activation) + 1e-3 * x.sum()


def test_probe_passes_a_kernel_that_is_row_independent_by_construction():
    """So that a skip of test_batch_invariance can only mean a kernel really failed, never a probe that always
    fails; and the probe catches a kernel whose rows depend on their neighbours' values."""
    weight, bias = torch.randn(8, 16), torch.randn(8)
    assert rows_independent(row_by_row, weight, bias, "gelu", rows=16)
    assert not rows_independent(neighbour_dependent, weight, bias, None, rows=16)


def test_spans_must_cover_the_row_in_order(minilm_packed):
    ids = torch.tensor([[101, 7592, 102, 101, 2088, 102]])
    encoder = minilm_packed.encoder
    assert encoder(ids, spans=[(0, 3), (3, 6)]).shape == (1, 6, 384)
    for bad in ([(3, 6), (0, 3)], [(0, 2), (3, 6)], [(0, 3), (2, 6)], [(0, 3)], [(0, 0), (0, 6)], []):
        with pytest.raises(ValueError, match="spans must cut the row of 6 tokens"):
            encoder(ids, spans=bad)


def test_probe_failure_is_reported(minilm_dir, monkeypatch):
    """A kernel that rounds a row by its place: the probe catches it, warns once, and batch_invariant says False."""
    assert not rows_independent(place_dependent, torch.randn(8, 16), torch.randn(8), None, rows=16)
    monkeypatch.setitem(minienc.runtime.matmul.MATMUL, "place_dependent", place_dependent)
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", matmul="place_dependent")
    with pytest.warns(RuntimeWarning, match=f"rounds a row by its place in a {ROW_BLOCKS['cpu']}-row block"):
        model.encode(["hello", "world"])
    assert not model.batch_invariant
    assert minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", execution="padded").batch_invariant is False


def test_batch_invariant_with_a_kernel_that_is_row_independent_by_construction(monkeypatch):
    """On any machine: with a kernel that computes each row alone, every probe passes, batch_invariant says True,
    and a text's vector is the same bits alone, in a batch and with filler (the tests with real kernels skip where
    this machine's probes fail; this one cannot)."""
    monkeypatch.setitem(minienc.runtime.matmul.MATMUL, "row_by_row", row_by_row)
    for name in ("tiny-bert", "tiny-xlm-roberta"):
        model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / name, matmul="row_by_row", row_block=32)
        assert model.batch_invariant is True
        texts = corpus(12, seed=5)
        together = model.encode(texts)
        assert np.array_equal(np.stack([model.encode(t) for t in texts]), together)
        assert np.array_equal(model.encode(texts[3:9]), together[3:9])


def test_batch_invariance_with_dense_and_xlmr(tmp_path):
    folder = st_folder(tmp_path, WEIGHTS / "tiny-xlm-roberta", Pooling(32, "cls"), Dense(32, 8), Normalize())
    model = minienc.SentenceEncoder.from_pretrained(folder)
    texts = corpus(30, seed=3)
    batch = model.encode(texts)
    assert np.array_equal(np.stack([model.encode(t) for t in texts]), batch)
    st = SentenceTransformer(str(folder), device="cpu")
    assert np.abs(batch - st.encode(texts)).max() <= 1e-6


def test_token_budget_batches(minilm_packed):
    encodings = minilm_packed.tokenizer.tokenize(["a " * 100, "b " * 10, "c", "d " * 60])
    lengths = [len(e.ids) for e in encodings]
    batches = minienc.runtime.batching.packed_batches(lengths, token_budget=110)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert all(sum(lengths[i] for i in b) <= 110 or len(b) == 1 for b in batches)
    assert batches[0] == [0]  # longest first; a text over the budget still gets a batch of its own


def test_pack_layout():
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-xlm-roberta")
    encodings = model.tokenizer.tokenize(["hello world", "x"])
    batch, spans = pack(encodings)
    first, n = len(encodings[0].ids), sum(len(e.ids) for e in encodings)
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == (1, n)
    assert spans == [(0, first), (first, n)]
    assert batch["input_ids"][0].tolist() == [*encodings[0].ids, *encodings[1].ids]
    positions = model.encoder.embeddings.position_ids(batch["input_ids"], spans)[0].tolist()
    assert positions == list(range(2, 2 + first)) + list(range(2, 2 + n - first))  # XLM-R: pad_token_id + 1 on


@pytest.mark.parametrize("row_block", [32, 300])
def test_filler_tops_the_row_up_and_changes_no_bit(row_block):
    """run_packed tops the row up to whole row blocks with texts of padding tokens (none longer than the model's
    128 positions: a 300-row block takes several) and returns the real texts' rows, the same bits as the row run
    without filler (where the probes pass: the kernel's own top-up, zero rows, then stands in for it)."""
    model = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-xlm-roberta", row_block=row_block)
    texts = model.tokenizer.tokenize(corpus(7, seed=4))
    n = sum(len(t.ids) for t in texts)
    fill = filler(n, model.encoder.config, model.row_block)
    assert (n + sum(len(t.ids) for t in fill)) % row_block == 0 and all(0 < len(t.ids) <= 128 for t in fill)
    assert all((t.ids == model.encoder.config.pad_token_id).all() for t in fill)
    assert len(fill) == (1 if row_block == 32 else 3)  # 304 tokens: 16 more; or 296 more, as 128 + 128 + 40
    hidden, spans = run_packed(model.encoder, texts, None, model.row_block)
    batch, unfilled_spans = pack(texts)
    assert spans == unfilled_spans and hidden.shape == (n, 32)
    if model.batch_invariant:
        assert torch.equal(hidden, model.encoder(**batch, spans=spans)[0])
    assert filler(row_block * 3, model.encoder.config, model.row_block) == []  # already whole blocks
    unblocked = minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-xlm-roberta", row_block=None)
    assert filler(n, unblocked.encoder.config, unblocked.row_block) == []


def test_unknown_execution():
    with pytest.raises(ValueError, match=r"unknown execution 'fast'; choose one of \['packed', 'padded'\]"):
        minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert", execution="fast")


def test_packed_hidden_states_within_tolerance_of_transformers(minilm_dir):
    """The bare encoder, packed, against transformers' padded batch: same values up to rounding."""
    import transformers

    model = minienc.SentenceEncoder.from_pretrained(minilm_dir, attention="eager")
    texts = TEXTS
    ref = transformers.AutoModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    batch = model.tokenizer(texts)
    with torch.no_grad():
        expected = ref(**batch).last_hidden_state[batch["attention_mask"].bool()]
    got = torch.cat(model.encode(texts, output_value="token_embeddings"))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("skip", [0, 2, 6])
def test_packed_pooling_is_per_text_pooling(dtype, skip):
    """pool_packed reduces each text over its own rows: the per-text poolers' result (a float32 mean is summed in
    another order: within the float32 rounding bound of its sum; everything else the same bits), and a text's
    vector is the same bits alone and among others."""
    from minienc.model.pooling import POOLERS, pool, pool_packed

    gen = torch.Generator().manual_seed(0)
    lengths = [1, 5, 17, 3, 64, 6]  # 1, 3 and 5 tokens: shorter than or as long as the prompt at skip 6
    ends = np.cumsum(lengths).tolist()
    spans = list(zip([0, *ends[:-1]], ends))
    hidden = torch.randn(ends[-1], 24, generator=gen).to(dtype)
    for mode in POOLERS:
        packed = pool_packed(hidden, spans, (mode,), skip)
        for (a, b), row in zip(spans, packed):
            mask = torch.arange(b - a)[None].ge(skip).long()
            alone = pool(hidden[a:b][None], mask, (mode,))[0]
            assert torch.equal(row, pool_packed(hidden[a:b], [(0, b - a)], (mode,), skip)[0]), mode
            if mode == "mean" and dtype == torch.float32:  # the float32 bound on a sum of b - a terms
                bound = (b - a) * torch.finfo(dtype).eps * hidden[a:b].abs().max()
                torch.testing.assert_close(row, alone, rtol=0, atol=float(bound))
            else:
                assert torch.equal(row, alone), (mode, a, b)


def test_packed_pooling_needs_spans_that_cut_the_rows():
    """Each text is reduced as one run of rows from the top: a gap, an overlap or an empty text is an error."""
    from minienc.model.pooling import pool_packed

    hidden = torch.randn(10, 4)
    for spans in ([], [(0, 4), (5, 10)], [(0, 6), (4, 10)], [(0, 4), (4, 4), (4, 10)], [(1, 10)], [(0, 9)]):
        with pytest.raises(ValueError, match="spans must cut the 10 rows"):
            pool_packed(hidden, spans, ("mean",))
