"""The command line: `minienc encode | similarity | trace | parity | convert-heads` (also `python -m minienc ...`)."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, corpus
from .heads.pipeline import EXECUTIONS, TOKEN_BUDGETS, default_matmul
from .heads.sentence import DEFAULT_MODEL, SentenceEncoder
from .model.attention import ATTENTION
from .runtime.devices import DTYPES, check_device, check_dtype
from .runtime.matmul import MATMUL


def decode_lines(data: bytes, name: str) -> list[str]:
    """UTF-8 bytes -> one text a line, as a corpus folder reads a text file (minienc/corpus.py): a line ends at "\n"
    alone ("\r" before it is dropped; a form feed or U+2028 stays inside its text) and a leading byte-order mark is
    dropped. A ValueError names the file and the first line that is not UTF-8."""
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the file's last newline ends its last line; it does not start another
        lines.pop()
    return [corpus.decode_line(raw, number, name) for number, raw in enumerate(lines, start=1)]


def read_texts(texts: list[str], input_path: str | None, option: str = "--input", text_field: str = "text"
               ) -> list[str]:
    """Texts from the arguments, then those of a file (- for standard input): one text per line, or the text field
    of each record of a .jsonl or .parquet file. A file may hold none; no arguments and no file is an error."""
    texts = list(texts)
    if input_path is None and not texts:
        raise ValueError(f"no text given: pass texts as arguments or {option} FILE (- for standard input)")
    if input_path == "-":
        texts += decode_lines(sys.stdin.buffer.read(), f"{option} - (standard input)")
    elif input_path is not None:
        path = Path(input_path)
        if not path.is_file():
            raise FileNotFoundError(f"{option} {path}: no such file")
        if corpus.input_format(path) == "text":
            texts += decode_lines(path.read_bytes(), f"{option} {path}")
        else:
            texts += [text for _, text in corpus.read_records(path, text_field)]
    return texts


def check_writable(output: str, overwrite: bool) -> None:
    """Fail before any work is done if `output` cannot be written, or exists and overwrite is not allowed."""
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"--output {output}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"--output {output} exists: pass --overwrite to replace it")
    if not path.parent.resolve().is_dir():
        raise FileNotFoundError(f"--output {output}: the folder {path.parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as err:
        raise ValueError(f"--output {output}: cannot be written ({err.strerror})") from None
    if not existed:
        path.unlink()


def write_vectors(texts: list[str], vectors: np.ndarray, output: str | None) -> None:
    """.npy: one float32 array (n, dim). .jsonl or standard output: one {"index", "text", "embedding"} a line."""
    if output is not None and output.endswith(".npy"):
        np.save(output, vectors)
        print(f"wrote {vectors.shape[0]} vectors of {vectors.shape[1]} dims to {output}", file=sys.stderr)
        return
    lines = (
        json.dumps({"index": i, "text": t, "embedding": v.tolist()}, ensure_ascii=False) + "\n"
        for i, (t, v) in enumerate(zip(texts, vectors))
    )
    if output is None:
        sys.stdout.writelines(lines)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"wrote {len(texts)} vectors of {vectors.shape[1]} dims to {output}", file=sys.stderr)


def resolved_dtype(args: argparse.Namespace) -> str:
    """--dtype with "auto" resolved on this machine: a resumed corpus must not switch formats between machines."""
    return str(check_dtype(args.dtype, check_device(args.device))).removeprefix("torch.")


def say(args: argparse.Namespace, message: str) -> None:
    """A progress line on stderr, for a person at a terminal: not with --quiet, not when stderr is a file or a pipe."""
    if not getattr(args, "quiet", False) and sys.stderr.isatty():
        print(f"minienc: {message}", file=sys.stderr, flush=True)


def load_model(args: argparse.Namespace) -> SentenceEncoder:
    say(args, f"loading {args.model} ...")
    start = time.perf_counter()
    model = SentenceEncoder.from_pretrained(args.model, attention=args.attention, device=args.device,
                                            execution=args.execution, matmul=args.matmul, dtype=args.dtype)
    say(args, f"loaded in {time.perf_counter() - start:.1f} s")
    return model


def cmd_encode(args: argparse.Namespace) -> None:
    if args.token_budget is None:  # resolved before a corpus manifest records it
        args.token_budget = TOKEN_BUDGETS.get(check_device(args.device).type, TOKEN_BUDGETS["cpu"])
    if args.ray is not None:
        return encode_on_ray(args)
    if args.output is not None and not args.output.endswith((".npy", ".jsonl")):
        if Path(args.output).suffix and not Path(args.output).is_dir():
            raise ValueError(f"--output {args.output}: use a .npy or .jsonl file name, or a folder for a corpus")
        return encode_corpus(args)
    if args.output is not None:
        check_writable(args.output, args.overwrite)
    texts = read_texts(args.texts, args.input, text_field=args.text_field)
    model = load_model(args)
    quiet = args.quiet or not sys.stderr.isatty()
    progress = args.progress if args.progress is not None else not quiet and len(texts) > args.batch_size
    vectors = model.encode(
        texts,
        batch_size=args.batch_size,
        token_budget=args.token_budget,
        prompt_name=args.prompt_name,
        normalize_embeddings=args.normalize,
        show_progress_bar=progress,
    )
    write_vectors(texts, vectors, args.output)


def encode_corpus(args: argparse.Namespace) -> None:
    """--output FOLDER: stream --input into shards, resumable (minienc/corpus.py)."""
    if args.input in (None, "-") or args.texts:
        raise ValueError("--output FOLDER streams a corpus: give it as --input FILE (.txt, .jsonl or .parquet); "
                         "for texts as arguments, use --output NAME.npy or NAME.jsonl")
    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {args.shard_size}")
    stat = path.stat()  # a changed input cannot be resumed: its texts would no longer line up with the shards
    settings = {"input": str(path.resolve()), "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
                "model": str(args.model), "text_field": args.text_field, "id_field": args.id_field,
                "shard_size": args.shard_size, "prompt_name": args.prompt_name, "normalize": args.normalize,
                "execution": args.execution, "matmul": args.matmul, "attention": args.attention, "device": args.device,
                "dtype": resolved_dtype(args), "batch_size": args.batch_size, "token_budget": args.token_budget}
    folder = Path(args.output)
    next(corpus.read_records(path, args.text_field, args.id_field), None)  # a missing field fails before any output
    done = corpus.prepare_output(folder, settings, args.resume, args.overwrite)
    model = load_model(args)
    records = corpus.read_records(path, args.text_field, args.id_field)
    total = corpus.count_records(path)
    progress = args.progress if args.progress is not None else not args.quiet and sys.stderr.isatty()
    options = {"batch_size": args.batch_size, "token_budget": args.token_budget, "prompt_name": args.prompt_name,
               "normalize_embeddings": args.normalize}
    try:
        written = corpus.embed_corpus(model, records, folder, args.shard_size, done, total, progress, options)
    except KeyboardInterrupt:
        raise ValueError(f"interrupted: {corpus.done_shards(folder)} whole shards are in {folder}; run the same "
                         f"command with --resume to go on") from None
    except OSError as err:
        raise ValueError(f"writing {folder} failed ({err.strerror or err}); the whole shards are kept: free the "
                         f"space and run the same command with --resume") from None
    print(f"wrote {written} vectors to {folder} ({corpus.done_shards(folder)} shards"
          + (f", {done} of them from before" if done else "") + ")", file=sys.stderr)


def encode_on_ray(args: argparse.Namespace) -> None:
    """--ray [ADDRESS]: the same job on Ray Data (minienc/ray.py), written as parquet into --output FOLDER."""
    from .ray import embed_dataset

    if args.input in (None, "-") or args.output is None or args.output.endswith((".npy", ".jsonl")):
        raise ValueError("--ray reads --input FILE or FOLDER (.txt, .jsonl, .parquet) and writes parquet into "
                         "--output FOLDER")
    folder = Path(args.output)
    if folder.exists() and any(folder.iterdir()):
        if not args.overwrite:
            raise ValueError(f"--output {args.output} already holds output: pass --overwrite to replace it")
        for old in folder.glob("*.parquet"):  # Ray adds files to a folder: remove the last run's
            old.unlink()
    # "auto" resolved here: one number format on every worker, whatever each would choose for itself
    options = {"model": str(args.model), "text_column": args.text_field, "device": args.device,
               "normalize_embeddings": args.normalize, "prompt_name": args.prompt_name, "execution": args.execution,
               "attention": args.attention, "matmul": args.matmul, "dtype": resolved_dtype(args)}
    embed_dataset(args.input, args.output, None if args.ray == "local" else args.ray, args.batch_size,
                  args.concurrency, options)
    print(f"wrote parquet to {args.output}", file=sys.stderr)


def cmd_convert_heads(args: argparse.Namespace) -> None:
    from .formats.m3 import convert_heads

    try:
        written = convert_heads(args.folder)
    except pickle.UnpicklingError as err:  # weights_only=True refused an object the pickle names
        raise ValueError(f"{args.folder}: refused to unpickle: {str(err).splitlines()[0]}") from None
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


def cmd_similarity(args: argparse.Namespace) -> None:
    first = read_texts(args.texts, args.input, text_field=args.text_field)
    if not first:
        raise ValueError(f"--input {args.input} holds no text")
    if args.to is None and args.to_input is None:
        if len(first) != 2:
            raise ValueError("give the second list with --to TEXT ... or --to-input FILE (or exactly two texts)")
        first, second = first[:1], first[1:]
    else:
        second = read_texts(args.to or [], args.to_input, option="--to-input", text_field=args.text_field)
        if not second:
            raise ValueError(f"--to-input {args.to_input} holds no text")
    model = load_model(args)
    scores = model.similarity(model.encode(first, prompt_name=args.prompt_name),
                              model.encode(second, prompt_name=args.to_prompt_name))  # (len(first), len(second))
    if scores.numel() == 1:
        print(f"{float(scores):.6f}")
        return
    print("\t".join(["", *(header(t) for t in second)]))
    for text, row in zip(first, scores.tolist()):
        print("\t".join([header(text), *(f"{v:.6f}" for v in row)]))


def header(text: str, width: int = 24) -> str:
    """A text as a row or column header of the similarity matrix: one line, at most `width` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def cmd_trace(args: argparse.Namespace) -> None:
    from .stages import format_trace, trace

    if args.sparse:
        from .heads.sparse import SparseEncoder

        model = SparseEncoder.from_pretrained(args.model, attention=args.attention, execution="padded",
                                              matmul=args.matmul, device=args.device)
    else:
        model = load_model(args)
    if args.plot:  # checked before the work, so that a wrong --layer does not print a whole trace first
        from .plot import check_layer_and_head

        check_layer_and_head(model.encoder, args.layer, args.head)
    data = trace(model, args.text, args.prompt_name)
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else format_trace(data))
    if args.plot:
        from .plot import plot_attention

        path = plot_attention(args.plot, model, data.get("prompt", "") + args.text, args.layer, args.head)
        print(f"attention weights of layer {args.layer}, head {args.head}, beside the mask: {path}", file=sys.stderr)


def cmd_parity(args: argparse.Namespace) -> int:
    from .parity import claimed_reference, format_table, run_parity

    matmul = args.matmul or default_matmul(args.execution, args.device)
    notes: list[str] = []
    rows, reference = run_parity(args.model, args.attention, args.texts, args.reference, DTYPES[args.dtype], args.device,
                                 args.execution, matmul, report=lambda message: say(args, message), notes=notes.append)
    # bit-exactness is promised for transformers' own attention and kernels, run padded as transformers runs
    exact = claimed_reference(args.model, args.attention) == reference and matmul == "torch" and args.execution == "padded"
    atol = args.atol if args.atol is not None else (0.0 if exact else None)
    table, ok = format_table(rows, atol)
    rule = "report only" if atol is None else ("bit-exact" if atol == 0 else f"atol {atol:g}")
    print(f"minienc attention={args.attention}, matmul={matmul}, {args.execution} vs transformers attn_implementation="
          f"{reference} ({args.dtype}, {args.device or 'cpu'}; {rule})")
    print(table)
    for line in notes:
        print(line)
    return 0 if ok else 1


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"folder or Hub repo id (default: {DEFAULT_MODEL})")
    parser.add_argument("--attention", default="sdpa",
                        help=f"attention, on every family: {', '.join(sorted(ATTENTION))}, or MODULE:FUNCTION, a "
                             f"variant in your own module (docs/attention.md; default: sdpa)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr (default: shown where stderr is a terminal)")
    parser.add_argument("--matmul", default=None, choices=sorted(MATMUL),
                        help=f"linear layers' kernel: {', '.join(sorted(MATMUL))} (default: onednn for packed "
                             f"execution on x86 CPUs, else torch)")


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", default="float32", choices=[*sorted(DTYPES), "auto"],
                        help="number format: float32 (default); bfloat16, or auto (bfloat16 where the CPU or GPU has "
                             "it natively), is the fast path (accuracy: docs/performance.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minienc", description="A minimal Transformer encoder: text in, vectors out.")
    parser.add_argument("--version", action="version", version=f"minienc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser("encode", help="embed texts; print JSON lines or write .npy / .jsonl")
    encode.add_argument("texts", nargs="*", help="texts to embed")
    encode.add_argument("--input", help="file with one text a line (- reads standard input), or .jsonl / .parquet "
                                        "records (their --text-field)")
    encode.add_argument("--output", help="NAME.npy or NAME.jsonl: one file; FOLDER: a corpus from --input, streamed "
                                         "into shards that --resume can continue (default: JSON lines on stdout)")
    encode.add_argument("--text-field", default="text", help="the text's field in .jsonl / .parquet input")
    encode.add_argument("--id-field", default=None,
                        help="the id's field in .jsonl / .parquet input (default: line or row number)")
    encode.add_argument("--shard-size", type=int, default=10_000, help="texts a shard (--output FOLDER)")
    encode.add_argument("--resume", action="store_true", help="continue an interrupted --output FOLDER")
    encode.add_argument("--overwrite", action="store_true", help="replace what --output already holds")
    encode.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run on Ray Data: a local cluster, or the one at ADDRESS (needs minienc[ray])")
    encode.add_argument("--concurrency", type=int, default=1,
                        help="model copies Ray runs at once, each on one CPU (or GPU); leave CPUs for reading (--ray)")
    encode.add_argument("--execution", default="packed", choices=EXECUTIONS,
                        help="packed: no padding, batch-invariant (default); padded: sentence-transformers' bits")
    encode.add_argument("--batch-size", type=int, default=32, help="texts a batch (padded execution)")
    encode.add_argument("--token-budget", type=int, default=None,
                        help=f"tokens a batch (packed execution; default: {TOKEN_BUDGETS['cpu']} on a CPU, "
                             f"{TOKEN_BUDGETS['cuda']} on a GPU)")
    encode.add_argument("--prompt-name", default=None, help="one of the model's prompts, e.g. query")
    encode.add_argument("--normalize", action="store_true", help="L2-normalize (models with Normalize already do)")
    encode.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: on a terminal, when there is more than one batch)")
    add_model_options(encode)
    add_dtype_option(encode)
    encode.set_defaults(run=cmd_encode)

    similarity = commands.add_parser(
        "similarity", help="similarity of texts to texts (the model's function, cosine by default): a matrix",
        description="Rows: the texts given as arguments and by --input; columns: those given by --to and "
                    "--to-input. Two texts and no --to print one number.")
    similarity.add_argument("texts", nargs="*", help="the first list")
    similarity.add_argument("--input", help="the first list from a file: one text a line (- reads standard input), "
                                            "or .jsonl / .parquet records (their --text-field)")
    similarity.add_argument("--to", nargs="+", help="the second list")
    similarity.add_argument("--to-input", help="the second list from a file, as --input")
    similarity.add_argument("--text-field", default="text", help="the text's field in .jsonl / .parquet input")
    similarity.add_argument("--prompt-name", default=None,
                            help="one of the model's prompts for the first list, e.g. query")
    similarity.add_argument("--to-prompt-name", default=None, help="the prompt for the second list, e.g. document")
    add_model_options(similarity)
    add_dtype_option(similarity)
    similarity.set_defaults(run=cmd_similarity, execution="packed")

    trace = commands.add_parser("trace", help="walk one text through the pipeline, stage by stage")
    trace.add_argument("text")
    trace.add_argument("--json", action="store_true", help="print the same as JSON")
    trace.add_argument("--prompt-name", default=None,
                       help="one of the model's prompts, put first as encode does (default: the model's default one)")
    trace.add_argument("--plot", metavar="FILE", help="also draw one head's attention weights beside the mask into "
                                                      "FILE (PNG; needs matplotlib: pip install 'minienc[plot]')")
    trace.add_argument("--layer", type=int, default=0, help="the layer --plot draws (default 0)")
    trace.add_argument("--head", type=int, default=0, help="the head --plot draws (default 0)")
    trace.add_argument("--sparse", action="store_true",
                       help="a SPLADE model: the masked-LM head, the activation and the pooling after the layers")
    add_model_options(trace)
    trace.set_defaults(run=cmd_trace, execution="padded", dtype=None)  # stages are read from the padded forward pass

    parity = commands.add_parser("parity", help="compare every stage with transformers on the same inputs")
    parity.add_argument("texts", nargs="*", help="texts (default: a built-in varied set)")
    parity.add_argument("--reference", default=None,
                        help="transformers attn_implementation (default: the one --attention claims to match, else eager)")
    parity.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parity.add_argument("--atol", type=float, default=None,
                        help="pass when every stage is within this (default: 0 for reference-matching attention, "
                             "otherwise report only)")
    parity.add_argument("--execution", default="padded", choices=EXECUTIONS,
                        help="minienc's execution for the final stages (default: padded, transformers' own)")
    add_model_options(parity)
    parity.set_defaults(run=cmd_parity)
    convert = commands.add_parser("convert-heads", help="rewrite bge-m3's colbert_linear.pt and sparse_linear.pt as "
                                  ".safetensors, reading them with torch.load(weights_only=True)")
    convert.add_argument("folder", help="the bge-m3 folder holding colbert_linear.pt and sparse_linear.pt")
    convert.set_defaults(run=cmd_convert_heads, device=None)  # main() checks args.device
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.stdout.reconfigure(encoding="utf-8")
    try:
        check_device(args.device)  # before any work, so that every command fails the same way
        status = args.run(args) or 0
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader went away (`minienc encode ... | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit flush cannot fail again
        return 141
    except (FileNotFoundError, ValueError, TypeError, ImportError) as err:
        print(f"minienc {args.command}: error: {err}", file=sys.stderr)
        return 1
