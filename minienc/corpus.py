"""Embedding a corpus: read, tokenize and embed in bounded memory, write shards as they are done, resume after a
crash.

Input: a text file (one text a line; ids are line numbers from 1), JSON lines or parquet (a text field and,
optionally, an id field). The reader yields shards of `shard_size` (id, text) pairs, so memory holds one shard at a
time, never the corpus.

Output: a folder of shards. shard-00000.npz holds `ids` and `vectors` (float32, (n, dim)) of texts 0..shard_size-1,
shard-00001.npz the next ones, and so on; manifest.json records what made them. A shard is written to a temporary
name and renamed when complete, so a shard on disk is always whole: a run stopped in any way (Ctrl-C, SIGKILL, a
full disk) leaves only whole shards, and `--resume` skips the texts they hold and goes on. Batch invariance makes
the vectors of a resumed run the same bits as those of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from .runtime.batching import progress_bar

MANIFEST = "manifest.json"
FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}  # anything else is plain text, one text a line


def input_format(path: Path) -> str:
    return FORMATS.get(path.suffix, "text")


def read_records(path: Path, text_field: str = "text", id_field: str | None = None) -> Iterator[tuple[object, str]]:
    """(id, text) for every text of the file, in order, read as it goes. Ids are all integers or all strings."""
    first = None
    for number, id_, text in numbered_records(path, text_field, id_field):
        first = first or (number, type(id_))
        if type(id_) is not first[1]:
            raise ValueError(f"--input {path}: record {number}: the id {id_!r} is {type(id_).__name__}, that of record "
                             f"{first[0]} {first[1].__name__}; give ids of one kind")
        yield id_, text


def numbered_records(path: Path, text_field: str, id_field: str | None) -> Iterator[tuple[int, object, str]]:
    """(record number, id, text): the number counts lines (text, JSON lines) or rows (parquet) from 1."""
    kind = input_format(path)
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("parquet input needs pyarrow: pip install 'minienc[parquet]'") from None
        columns = [text_field] + ([id_field] if id_field else [])
        table = pq.ParquetFile(path)
        for column, option in zip(columns, ("--text-field", "--id-field")):
            if column not in table.schema_arrow.names:
                raise ValueError(f"--input {path}: no column {column!r} ({option}); it has {table.schema_arrow.names}")
        row = 0
        for batch in table.iter_batches(columns=columns):
            data = batch.to_pydict()
            ids = data[id_field] if id_field else range(row + 1, row + batch.num_rows + 1)
            for i, (id_, text) in enumerate(zip(ids, data[text_field])):
                yield row + i + 1, check_id(id_, path, row + i + 1), check_text(text, path, row + i + 1, text_field)
            row += batch.num_rows
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = decode_line(raw, number, f"--input {path}")
            if kind == "text":
                yield number, number, line
                continue
            if not line.strip():  # a blank line in JSON lines holds no record
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"--input {path}: line {number} is not JSON ({err.msg})") from None
            if not isinstance(record, dict) or text_field not in record:
                raise ValueError(f"--input {path}: line {number} has no field {text_field!r} (--text-field)")
            if id_field and id_field not in record:
                raise ValueError(f"--input {path}: line {number} has no field {id_field!r} (--id-field)")
            id_ = check_id(record[id_field], path, number) if id_field else number
            yield number, id_, check_text(record[text_field], path, number, text_field)


def decode_line(raw: bytes, number: int, name: str) -> str:
    """Line `number` (from 1) of a UTF-8 text file without its line end ("\n", and any "\r" before it); the first
    line's byte-order mark is dropped. Not UTF-8: a ValueError naming the file (`name`), the line and the byte."""
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: line {number} is not UTF-8 (byte 0x{raw[err.start]:02x}); minienc reads UTF-8 "
                         f"text, one text a line") from None


def check_text(text: object, path: Path, number: int, field: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"--input {path}: record {number}: {field!r} is {type(text).__name__}, not a string")
    return text


def check_id(id_: object, path: Path, number: int) -> int | str:
    if isinstance(id_, bool) or not isinstance(id_, (int, str)) or (isinstance(id_, int) and not -2**63 <= id_ < 2**63):
        raise ValueError(f"--input {path}: record {number}: the id {id_!r} is not a string or a 64-bit integer")
    return id_


def count_records(path: Path) -> int | None:
    """How many texts the file holds, cheaply (for the progress bar): lines, or parquet's metadata."""
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.npz"


def done_shards(folder: Path) -> int:
    """How many whole shards, 0, 1, 2, ... without a gap, the folder holds."""
    count = 0
    while shard_path(folder, count).is_file():
        count += 1
    return count


ADDED_SETTINGS = {"dtype": "float32"}  # settings later versions record, with the value earlier ones ran with


def prepare_output(folder: Path, settings: dict, resume: bool, overwrite: bool) -> int:
    """Check or create the output folder; the number of shards already done (0 unless resuming)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output {folder}: exists and is not a folder")
    has_output = folder.is_dir() and any(folder.iterdir())
    if has_output and resume:
        found = json.loads((folder / MANIFEST).read_text(encoding="utf-8")) if (folder / MANIFEST).is_file() else None
        if found is not None:
            found = {**ADDED_SETTINGS, **found}  # a manifest from before a setting existed had its default
        if found != settings:
            raise ValueError(f"--resume: {folder} was written with other settings ({found}); these are {settings}")
        for leftover in folder.glob("*.tmp.npz"):  # a shard cut short when the run stopped
            leftover.unlink()
        return done_shards(folder)
    if has_output and not overwrite:
        raise ValueError(f"--output {folder} already holds output: pass --resume to continue it or --overwrite to "
                         f"replace it")
    if has_output:
        for old in [*folder.glob("shard-*.npz"), folder / MANIFEST]:
            old.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return 0


def write_shard(folder: Path, index: int, ids: list, vectors: np.ndarray) -> None:
    """Write whole or not at all: a temporary file, renamed once complete."""
    if len({type(i) for i in ids}) > 1:
        raise ValueError(f"the ids of shard {index} mix integers and strings; give ids of one kind")
    temporary = folder / f"shard-{index:05d}.tmp.npz"
    with open(temporary, "wb") as f:
        np.savez(f, ids=np.array(ids), vectors=vectors)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, shard_path(folder, index))


def embed_corpus(model, records: Iterator[tuple[object, str]], folder: Path, shard_size: int, skip_shards: int,
                 total: int | None, show_progress: bool, encode_options: dict) -> int:
    """Embed records shard by shard into folder, starting after skip_shards shards; the number of texts written."""
    for _ in islice(records, skip_shards * shard_size):  # texts the finished shards already hold
        pass
    written, index = 0, skip_shards
    with progress_bar(show_progress, total, initial=skip_shards * shard_size) as bar:
        while shard := list(islice(records, shard_size)):
            ids, texts = [id_ for id_, _ in shard], [text for _, text in shard]
            vectors = model.encode(texts, convert_to_numpy=True, **encode_options)
            write_shard(folder, index, ids, vectors.astype(np.float32, copy=False))
            written, index = written + len(shard), index + 1
            bar.update(len(shard))
    return written


def read_vectors(path: str | Path) -> tuple[list, np.ndarray]:
    """(ids, vectors) of an output folder, in input order, whatever the shards; or of a single .npy file (ids
    0..n-1)."""
    path = Path(path)
    if path.suffix == ".npy":
        vectors = np.load(path, allow_pickle=False)
        return list(range(len(vectors))), vectors
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"{path} is not a minienc output folder (no {MANIFEST})")
    shards = [np.load(shard_path(path, i), allow_pickle=False) for i in range(done_shards(path))]
    if not shards:
        return [], np.zeros((0, 0), dtype=np.float32)
    ids = [i for shard in shards for i in shard["ids"].tolist()]
    return ids, np.concatenate([shard["vectors"] for shard in shards])
