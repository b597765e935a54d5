"""The Ray Data adapter, for real, on a local Ray cluster: the vectors of SentenceEncoder.encode bit for bit, every
column and the order kept. Skipped where Ray is not installed (CI installs it: pip install -e '.[ray]')."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import minienc
from minienc.cli import main

from .test_packed import corpus

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray cluster: tens of seconds
MODEL = str(Path(__file__).resolve().parent.parent / "weights" / "tiny-bert")
TEXTS = corpus(300, seed=11)
TEXTS[7] = ""  # a blank line of a text file is a text too


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def expected():
    """Each Ray worker gets one CPU and runs torch on one thread; the reference does too (a kernel's bits depend
    on its thread count: docs/batch-invariance.md, "How batch invariance is built")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return minienc.SentenceEncoder.from_pretrained(MODEL).encode(TEXTS)
    finally:
        torch.set_num_threads(threads)


def test_map_batches_keeps_columns_and_order(cluster, expected):
    ds = ray.data.from_items([{"text": t, "id": f"doc{i}", "n": i} for i, t in enumerate(TEXTS)])
    rows = ds.map_batches(minienc.ray.Embed, fn_constructor_kwargs={"model": MODEL}, batch_size=64,
                          concurrency=2).take_all()
    assert [r["id"] for r in rows] == [f"doc{i}" for i in range(300)] and [r["n"] for r in rows] == list(range(300))
    assert np.array_equal(np.stack([r["embedding"] for r in rows]), expected)


def test_other_column_and_pandas_batches(cluster, expected):
    ds = ray.data.from_items([{"body": t} for t in TEXTS[:50]])
    rows = ds.map_batches(minienc.ray.Embed, fn_constructor_kwargs={"model": MODEL, "text_column": "body"},
                          batch_size=16, concurrency=1, batch_format="pandas").take_all()
    assert np.array_equal(np.stack([r["embedding"] for r in rows]), expected[:50])
    with pytest.raises(Exception, match="the batch has no column 'text'"):
        ds.map_batches(minienc.ray.Embed, fn_constructor_kwargs={"model": MODEL}, concurrency=1).take_all()


def test_command_line(cluster, expected, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "vectors"
    assert main(["encode", "--model", MODEL, "--ray", "--input", str(source), "--output", str(out),
                 "--batch-size", "64"]) == 0
    ids, vectors = minienc.ray.read_parquet_vectors(str(out))
    assert ids == list(range(1, 301)) and np.array_equal(vectors, expected)
    assert main(["encode", "--model", MODEL, "--ray", "--input", str(source), "--output", str(out),
                 "--normalize", "--overwrite"]) == 0
    ids, vectors = minienc.ray.read_parquet_vectors(str(out))
    assert len(ids) == 300 and np.array_equal(vectors, minienc.l2_normalize(torch.from_numpy(expected)).numpy())
