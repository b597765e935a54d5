"""`minienc encode --input FILE --output FOLDER`: streamed into whole shards, resumable after Ctrl-C, SIGKILL or a full
disk with exactly the vectors of an uninterrupted run, ids carried, never overwriting without being told."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minienc
import minienc.corpus
from minienc.cli import main

from .test_packed import corpus

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
MODEL = ["--model", str(WEIGHTS / "tiny-bert")]
TEXTS = corpus(230, seed=7)


@pytest.fixture(scope="module")
def expected():
    return minienc.SentenceEncoder.from_pretrained(WEIGHTS / "tiny-bert").encode(TEXTS)


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def run(*args: str) -> int:
    return main(["encode", *MODEL, "--shard-size", "50", *args])


def test_text_file_into_shards(text_file, tmp_path, expected):
    assert run("--input", str(text_file), "--output", str(tmp_path / "out")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", *(f"shard-{i:05d}.npz" for i in range(5))]
    ids, vectors = minienc.read_vectors(tmp_path / "out")
    assert ids == list(range(1, 231))  # line numbers
    assert np.array_equal(vectors, expected)  # shard by shard = all at once: batch invariance


def test_jsonl_and_parquet_fields_and_ids(tmp_path, expected):
    pa = pytest.importorskip("pyarrow")  # the [parquet] extra
    pq = pytest.importorskip("pyarrow.parquet")

    records = [{"doc": f"d{i}", "body": t, "other": i} for i, t in enumerate(TEXTS)]
    lines = [json.dumps(r) for r in records]
    lines.insert(5, "   ")  # a blank line holds no record
    (tmp_path / "c.jsonl").write_text("\ufeff" + "\n".join(lines), encoding="utf-8")  # with a byte order mark
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "c.parquet", row_group_size=64)
    for name in ("c.jsonl", "c.parquet"):
        out = tmp_path / f"out-{name.replace('.', '-')}"
        assert run("--input", str(tmp_path / name), "--output", str(out), "--text-field", "body", "--id-field", "doc") == 0
        ids, vectors = minienc.read_vectors(out)
        assert ids == [f"d{i}" for i in range(230)] and np.array_equal(vectors, expected)


def test_bad_records_are_named(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n', encoding="utf-8")
    assert run("--input", str(tmp_path / "c.jsonl"), "--output", str(tmp_path / "out")) == 1
    assert "line 2 has no field 'text' (--text-field)" in capsys.readouterr().err
    (tmp_path / "d.jsonl").write_text('{"text": "fine", "id": [1]}\n', encoding="utf-8")
    assert run("--input", str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "out2"), "--id-field", "id") == 1
    assert "record 1: the id [1] is not a string or a 64-bit integer" in capsys.readouterr().err
    (tmp_path / "e.jsonl").write_text('{"text": "a", "id": 1}\n{"text": "b", "id": 2}\n{"text": "c", "id": "x"}\n',
                                      encoding="utf-8")
    for shard_size in ("1", "50"):  # named as it is read, whatever the shards
        out = tmp_path / f"out-e{shard_size}"
        assert main(["encode", *MODEL, "--input", str(tmp_path / "e.jsonl"), "--output", str(out), "--id-field", "id",
                     "--shard-size", shard_size]) == 1
        assert "record 3: the id 'x' is str, that of record 1 int; give ids of one kind" in capsys.readouterr().err


def test_missing_parquet_column_fails_before_any_output(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")  # the [parquet] extra
    pq = pytest.importorskip("pyarrow.parquet")

    pq.write_table(pa.Table.from_pylist([{"body": "a", "doc": "d0"}]), tmp_path / "c.parquet")
    for options, message in ((["--text-field", "text"], "no column 'text' (--text-field); it has ['body', 'doc']"),
                             (["--text-field", "body", "--id-field", "id"], "no column 'id' (--id-field)")):
        assert run("--input", str(tmp_path / "c.parquet"), "--output", str(tmp_path / "out"), *options) == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_never_overwrites_without_being_told(text_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--input", str(text_file), "--output", str(out)) == 0
    assert run("--input", str(text_file), "--output", str(out)) == 1
    assert "already holds output: pass --resume to continue it or --overwrite to replace it" in capsys.readouterr().err
    assert run("--input", str(text_file), "--output", str(out), "--resume", "--shard-size", "60") == 1  # other settings
    assert "--resume" in capsys.readouterr().err
    assert main(["encode", *MODEL, "--input", str(text_file), "--output", str(out), "--shard-size", "60",
                 "--overwrite"]) == 0
    assert len(list(out.glob("shard-*.npz"))) == 4
    with open(text_file, "a", encoding="utf-8") as f:  # the input changed: its texts no longer line up
        f.write("one more line\n")
    assert main(["encode", *MODEL, "--input", str(text_file), "--output", str(out), "--shard-size", "60",
                 "--resume"]) == 1
    assert "other settings" in capsys.readouterr().err
    (tmp_path / "v.npy").write_bytes(b"")
    assert run("a", "--output", str(tmp_path / "v.npy")) == 1
    assert "exists: pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["ctrl-c", "full disk"])
def test_resume_after_an_interruption(text_file, tmp_path, expected, monkeypatch, failure, capsys):
    write_shard = minienc.corpus.write_shard

    def failing(folder, index, ids, vectors):
        if index == 2:
            (folder / "shard-00002.tmp.npz").write_bytes(b"half a shard")
            raise KeyboardInterrupt if failure == "ctrl-c" else OSError(errno.ENOSPC, "No space left on device")
        write_shard(folder, index, ids, vectors)

    out = tmp_path / "out"
    monkeypatch.setattr(minienc.corpus, "write_shard", failing)
    assert run("--input", str(text_file), "--output", str(out)) == 1
    assert "--resume" in capsys.readouterr().err
    assert minienc.read_vectors(out)[1].shape == (100, 32)  # two whole shards, nothing of the third
    monkeypatch.setattr(minienc.corpus, "write_shard", write_shard)
    assert run("--input", str(text_file), "--output", str(out), "--resume") == 0
    ids, vectors = minienc.read_vectors(out)
    assert ids == list(range(1, 231)) and np.array_equal(vectors, expected)
    assert not list(out.glob("*.tmp.npz"))


KILLED_MID_SHARD = """
import os, signal, sys
import numpy as np
import minienc.corpus
from minienc.cli import main
savez = np.savez
def savez_then_die(f, **arrays):
    if f.name.endswith("shard-00003.tmp.npz"):
        f.write(b"PK half of a zip")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    savez(f, **arrays)
np.savez = savez_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_resume_after_sigkill_mid_write(text_file, tmp_path, expected):
    out = tmp_path / "out"
    argv = ["encode", *MODEL, "--shard-size", "50", "--input", str(text_file), "--output", str(out)]
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_SHARD, *argv], capture_output=True, timeout=300)
    assert killed.returncode == -9
    assert sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000.npz", "shard-00001.npz", "shard-00002.npz", "shard-00003.tmp.npz"]
    assert main([*argv, "--resume"]) == 0
    ids, vectors = minienc.read_vectors(out)
    assert ids == list(range(1, 231)) and np.array_equal(vectors, expected)


def test_resume_checks_the_number_format(text_file, tmp_path, expected):
    """The manifest records the format (auto resolved); a folder written before formats were recorded is float32."""
    out = tmp_path / "out"
    assert run("--input", str(text_file), "--output", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "float32"
    assert run("--input", str(text_file), "--output", str(out), "--resume", "--dtype", "bfloat16") == 1
    del manifest["dtype"]  # as minienc wrote it before
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert run("--input", str(text_file), "--output", str(out), "--resume") == 0
    assert np.array_equal(minienc.read_vectors(out)[1], expected)
