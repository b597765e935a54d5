"""`minienc encode` and `minienc similarity` end to end: arguments, files, standard input, .npy and .jsonl."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minienc
import minienc.runtime.matmul
from minienc.cli import main, read_texts
from minienc.corpus import read_records

TEXTS = ["头痛", "How do I initialise DDR4 memory?", "", "emoji 🙂"]

# what picks the kernels' code: a subprocess that compares bits with this one must see the same
KERNEL_SETTINGS = ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@pytest.fixture(scope="module")
def expected(minilm_dir):
    return minienc.SentenceEncoder.from_pretrained(minilm_dir).encode(TEXTS)


def test_encode_arguments_to_stdout_jsonl(minilm_dir, expected, capsys):
    assert main(["encode", "--model", str(minilm_dir), *TEXTS]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == TEXTS and [r["index"] for r in rows] == [0, 1, 2, 3]
    assert np.array_equal(np.array([r["embedding"] for r in rows], dtype=np.float32), expected)


def test_encode_stdin_to_npy(minilm_dir, expected, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(TEXTS) + "\n").encode("utf-8"))))
    out = tmp_path / "v.npy"
    assert main(["encode", "--model", str(minilm_dir), "--input", "-", "--output", str(out)]) == 0
    assert np.array_equal(np.load(out), expected)


def test_encode_file_to_jsonl(minilm_dir, expected, tmp_path):
    source, out = tmp_path / "in.txt", tmp_path / "v.jsonl"
    source.write_text("\n".join(TEXTS), encoding="utf-8")
    assert main(["encode", "--model", str(minilm_dir), "--input", str(source), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert np.array_equal(np.array([r["embedding"] for r in rows], dtype=np.float32), expected)


def test_input_lines_as_a_corpus_reads_them(tmp_path):
    """One text a line, split where a corpus folder splits the same file: at "\n" alone ("\r\n" too), so a form feed
    or U+2028 inside a text keeps it whole; a byte-order mark is dropped, an empty line is an empty text."""
    source = tmp_path / "in.txt"
    source.write_bytes("\ufefffirst\u2028still first\r\nform\x0cfeed\n\nlast\n".encode("utf-8"))
    expected = ["first\u2028still first", "form\x0cfeed", "", "last"]
    assert read_texts([], str(source)) == expected
    assert [text for _, text in read_records(source)] == expected


def test_jsonl_and_parquet_input_without_a_corpus_folder(minilm_dir, tmp_path, capsys):
    """--input FILE.jsonl / .parquet reads their text field for every output, not only a corpus folder; an empty
    file gives no vectors (as a corpus folder does), and similarity says the file holds no text."""
    pa = pytest.importorskip("pyarrow")  # the [parquet] extra
    pq = pytest.importorskip("pyarrow.parquet")

    texts = ["first text", "", "third 🙂"]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in texts) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([{"body": t} for t in texts]), tmp_path / "in.parquet")
    model = minienc.SentenceEncoder.from_pretrained(minilm_dir)
    for name in ("in.jsonl", "in.parquet"):
        out = tmp_path / f"{name}.npy"
        assert main(["encode", "--model", str(minilm_dir), "--input", str(tmp_path / name), "--text-field", "body",
                     "--output", str(out)]) == 0
        assert np.array_equal(np.load(out), model.encode(texts))
    (tmp_path / "empty.txt").write_bytes(b"")
    assert main(["encode", "--model", str(minilm_dir), "--input", str(tmp_path / "empty.txt"),
                 "--output", str(tmp_path / "empty.npy")]) == 0
    assert np.load(tmp_path / "empty.npy").shape == (0, 384)
    capsys.readouterr()
    assert main(["similarity", "a", "--model", str(minilm_dir), "--to-input", str(tmp_path / "empty.txt")]) == 1
    assert f"--to-input {tmp_path / 'empty.txt'} holds no text" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["encode", "a", "--output", "v.txt"], "--output v.txt: use a .npy or .jsonl file name, or a folder"),
        (["encode"], "no text given"),
        (["encode", "a", "--input", "missing.txt"], "--input missing.txt: no such file"),
        (["encode", "a", "--model", "./nowhere"], "./nowhere is not a model folder"),
        (["encode", "a", "--attention", "nope"], "unknown attention 'nope'"),
    ],
)
def test_errors_name_the_problem(minilm_dir, argv, message, capsys):
    if "--model" not in argv:
        argv = [*argv, "--model", str(minilm_dir)]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_similarity(minilm_dir, capsys):
    assert main(["similarity", "--model", str(minilm_dir), "a cat on a mat", "a cat on a mat"]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(1.0, abs=1e-6)
    assert main(["similarity", "--model", str(minilm_dir), "a cat on a mat", "quarterly tax filing"]) == 0
    assert float(capsys.readouterr().out) < 0.5


def test_similarity_matrix_of_two_lists(minilm_dir, tmp_path, capsys):
    model = minienc.SentenceEncoder.from_pretrained(minilm_dir)
    first, second = ["a cat", "tax forms"], ["a kitten", "filing taxes", "头痛"]
    expected = model.similarity(model.encode(first), model.encode(second))
    (tmp_path / "b.txt").write_text("\n".join(second), encoding="utf-8")
    for to in (["--to", *second], ["--to-input", str(tmp_path / "b.txt")]):
        assert main(["similarity", "--model", str(minilm_dir), *first, *to]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split("\t") == ["", *second]
        for line, text, row in zip(lines[1:], first, expected.tolist()):
            assert line.split("\t") == [text, *(f"{v:.6f}" for v in row)]
    assert main(["similarity", "--model", str(minilm_dir), "a", "b", "c"]) == 1
    assert "give the second list with --to" in capsys.readouterr().err


def test_version_and_help_list_the_choices(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"minienc {minienc.__version__}"
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in [*minienc.ATTENTION, *minienc.runtime.matmul.MATMUL])


def test_unwritable_output_fails_before_any_work(tmp_path, capsys):
    """The model does not exist either: the output is checked first, so its error is the one reported."""
    out = tmp_path / "missing" / "v.npy"
    assert main(["encode", "a", "--model", str(tmp_path / "nowhere"), "--output", str(out)]) == 1
    assert f"--output {out}: the folder {out.parent} does not exist" in capsys.readouterr().err
    assert main(["encode", "a", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path)]) == 1
    assert "--output FOLDER streams a corpus: give it as --input FILE" in capsys.readouterr().err
    (tmp_path / "d.npy").mkdir()
    assert main(["encode", "a", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "d.npy")]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_input_that_is_not_utf8_names_file_and_line(minilm_dir, tmp_path, capsys):
    source = tmp_path / "latin1.txt"
    source.write_bytes("fine\nstill fine\ncaf\u00e9\n".encode("latin-1"))
    assert main(["encode", "--model", str(minilm_dir), "--input", str(source)]) == 1
    err = capsys.readouterr().err
    assert f"--input {source}: line 3 is not UTF-8 (byte 0xe9)" in err and err.count("\n") == 1


@pytest.mark.slow
def test_pipe_into_head_ends_quietly(minilm_dir):
    script = f"{sys.executable} -m minienc encode --model {minilm_dir} " + " ".join(f"text{i}" for i in range(300))
    done = subprocess.run(f"{script} | head -c 100", shell=True, capture_output=True, text=True, timeout=300)
    assert len(done.stdout) == 100 and done.stderr == ""


@pytest.mark.slow
def test_console_entry_point_default_model_offline(tmp_path, expected):
    """The README's main job: the installed `minienc` command, default model, no network, empty HF cache."""
    scripts = Path(sys.executable).parent  # where pip put the `minienc` console script
    env = {"PATH": f"{scripts}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "HOME": str(tmp_path),
           **{key: os.environ[key] for key in KERNEL_SETTINGS if key in os.environ}}  # the same kernels as here
    done = subprocess.run(["minienc", "encode", *TEXTS], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert np.array_equal(np.array([r["embedding"] for r in rows], dtype=np.float32), expected)


UNAVAILABLE = [] if __import__("torch").cuda.is_available() else ["cuda", "cuda:1"]


@pytest.mark.parametrize("device", ["gpu", "cuda:99", *UNAVAILABLE])
@pytest.mark.parametrize("command", [["encode", "a"], ["similarity", "a", "b"], ["trace", "a"], ["parity", "a"]])
def test_bad_device_is_one_line_naming_it(minilm_dir, command, device, capsys):
    assert main([*command, "--model", str(minilm_dir), "--device", device]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(device) in err and "this machine has cpu" in err


@pytest.mark.parametrize("device", ["gpu", "cuda:99", *UNAVAILABLE])
def test_bad_device_from_python(minilm_dir, device):
    for load in (minienc.SentenceEncoder.from_pretrained, minienc.Encoder.from_pretrained):
        with pytest.raises(ValueError, match=rf"device '{device}'.*this machine has cpu"):
            load(minilm_dir, device=device)


def test_similarity_with_prompts_and_short_headers(capsys):
    """--prompt-name for the first list (and the second), --to-prompt-name for the second: the vectors encode()
    gives with those prompts; long texts are cut to one short line in the headers."""
    folder = Path(__file__).resolve().parents[1] / "weights" / "tiny-qwen3-embedding"
    model = minienc.SentenceEncoder.from_pretrained(folder)
    first, second = ["what is a headache"], ["a headache is a pain in the head,\tquite common", "DDR4 memory"]
    expected = model.similarity(model.encode(first, prompt_name="query"), model.encode(second, prompt_name="document"))
    assert main(["similarity", "--model", str(folder), *first, "--to", *second, "--prompt-name", "query",
                 "--to-prompt-name", "document"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["", "a headache is a pain in…", "DDR4 memory"]
    assert lines[1].split("\t") == [first[0], *(f"{v:.6f}" for v in expected[0].tolist())]
    unprompted = model.similarity(model.encode(first), model.encode(second))
    assert not torch.equal(expected, unprompted)  # the prompts reach the vectors


def test_progress_lines_on_a_terminal_only(capsys, monkeypatch):
    """Loading, and each phase of parity, say what they are doing on stderr where it is a terminal; --quiet, or a
    stderr that is a file or pipe, keeps it silent; stdout is the same either way."""
    folder = str(Path(__file__).resolve().parents[1] / "weights" / "tiny-bert")
    assert main(["trace", "--model", folder, "hello"]) == 0
    plain = capsys.readouterr()
    assert plain.err == ""  # not a terminal under pytest
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["trace", "--model", folder, "hello"]) == 0
    shown = capsys.readouterr()
    assert shown.out == plain.out
    assert f"minienc: loading {folder} ..." in shown.err and "minienc: loaded in" in shown.err
    assert main(["parity", "--model", folder, "hello"]) == 0
    err = capsys.readouterr().err
    assert "loading the reference, transformers' BertModel / RobertaModel / XLMRobertaModel" in err
    assert "running both on 1 texts, stage by stage" in err
    assert main(["trace", "--model", folder, "hello", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
