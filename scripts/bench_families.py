"""The newer families at their real size: random weights in Qwen3-Embedding-0.6B's, -4B's or -8B's, ModernBERT-base's or
EmbeddingGemma-300m's shape, minienc float32 and bfloat16 against sentence-transformers in float32 and bfloat16, on
bench.py's corpora.

    python scripts/bench_families.py [--shape qwen3-0.6b|qwen3-4b|qwen3-8b|modernbert-base|embeddinggemma-300m]
                                     [--folder DIR] [--texts 16] [--repeats 3] [--max-seq-length 512]
                                     [--corpora short mixed long] [--systems ...]

The folder (default: built in a temporary one, 0.6 to 1.2 GB; qwen3-4b and -8b: 8 and 15 GB, written a tensor at a
time, in shards, and run in bfloat16 only by default) holds the shape (SHAPES below: layers, widths, heads,
vocabulary, local windows) with weights from a fixed seed, stored in the dtype the real checkpoint stores (Qwen3:
bfloat16; the others float32), the matching weights/ folder's byte-level tokenizer and sentence-transformers files
(Qwen3: last-token pooling; ModernBERT: mean; EmbeddingGemma: mean and its two Dense layers, 768 -> 3072 -> 768), and
Normalize. Random weights: the speed and memory are the real model's, the vectors mean nothing.

Each system runs in a process of its own, so that its peak memory (resident set) is its own: one warm-up encode,
then `repeats` timed ones, the median reported, with tokens per second, the ratio to sentence-transformers' fastest
CPU configuration, the share of this machine's matrix-multiply rate for the system's number format (measured on the
model's feed-forward shape) that the model's FLOPs reach, its peak over the weights' bytes, and the lowest cosine of
its vectors with sentence-transformers' float32 ones (bfloat16 ones where float32 is not run). Local layers are
counted as full squares: every kernel here computes them whole, masked (as transformers does on a CPU).
"""

from __future__ import annotations

import argparse
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
SYSTEMS = {  # name -> (library, dtype it is asked for)
    "minienc packed float32": ("minienc", "float32"),
    "minienc packed bfloat16": ("minienc", "bfloat16"),
    "sentence-transformers float32": ("st", "float32"),
    "sentence-transformers bfloat16": ("st", "bfloat16"),
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


def load(folder: Path, system: str):
    """encode(texts) -> (n, dim) float32 unit vectors, for one system."""
    library, dtype = SYSTEMS[system]
    if library == "minienc":
        import minienc

        model = minienc.SentenceEncoder.from_pretrained(folder, dtype=dtype)
        return lambda texts: model.encode(texts)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": getattr(torch, dtype)})
    return lambda texts: model.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float32)


def child(folder: Path, system: str, corpus: str, count: int, repeats: int, out: Path) -> None:
    """One system on one corpus, in this process: timings, peak resident memory, the vectors."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import corpora

    texts = corpora()[corpus][:count]
    encode = load(folder, system)
    encode(texts[:4])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = encode(texts)
        times.append(time.perf_counter() - start)
    np.save(out / f"{system}.{corpus}.npy", vectors)
    print(json.dumps({"median": statistics.median(times), "peak_gib": peak_resident()}))


def peak_resident() -> float:
    """This process's peak resident memory, GiB (VmHWM: unlike getrusage's ru_maxrss, not inherited across exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 2**20  # KiB -> GiB


def token_counts(folder: Path, texts: list[str], max_seq_length: int) -> list[int]:
    """Each text's tokens, truncated as every system truncates them (the tokenizer alone: no model in this process)."""
    from minienc.loading.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", max_length=max_seq_length, pad_token_id=256)
    return [len(t.ids) for t in tokenizer.tokenize(texts)]


def flops(shape: str, lengths: list[int]) -> float:
    """GFLOP of the model on texts of these token counts: projections, gated feed-forward, attention (full squares:
    the kernels compute them whole, local layers too)."""
    settings = SHAPES[shape][4]
    H, inner, heads = settings["hidden_size"], settings["intermediate_size"], settings["num_attention_heads"]
    hs = settings.get("head_dim", H // heads)
    q, kv = heads * hs, settings.get("num_key_value_heads", heads) * hs
    per_token = 2 * (H * q + 2 * H * kv + q * H + 3 * H * inner)
    widths = DENSE.get(shape, [])
    dense = sum(2 * a * b for a, b in zip(widths, widths[1:]))  # once per text
    return sum(settings["num_hidden_layers"] * (n * per_token + 4 * n * n * q) + dense for n in lengths) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--folder", type=Path, default=None, help="the model folder (built there if missing)")
    parser.add_argument("--texts", type=int, default=16, help="texts per corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--corpora", nargs="*", default=["short", "mixed", "long"])
    parser.add_argument("--systems", nargs="*", choices=sorted(SYSTEMS), default=None,
                        help="which to run (default: all; for qwen3-4b and -8b the bfloat16 ones: float32 does not "
                             "fit in 24 GiB)")
    parser.add_argument("--child", nargs=3, metavar=("SYSTEM", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.folder, args.child[0], args.child[1], args.texts, args.repeats, Path(args.child[2]))
        return
    systems = args.systems or [name for name, (_, dtype) in SYSTEMS.items()
                               if args.shape not in STREAMED or dtype == "bfloat16"]
    if not any(name.startswith("sentence-transformers") for name in systems):
        parser.error("--systems needs a sentence-transformers one: the ratios and cosines are against it")
    folder = args.folder or Path(tempfile.mkdtemp(prefix=f"{args.shape}-shape-"))
    if not (folder / "config.json").is_file():
        build(folder, args.shape, args.max_seq_length)
    H, inner = SHAPES[args.shape][4]["hidden_size"], SHAPES[args.shape][4]["intermediate_size"]
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import corpora, cpu_description, matmul_gflops

    from minienc.runtime.matmul import get_matmul, fastest_on_cpu

    kernel = get_matmul(fastest_on_cpu())
    peaks = {dtype: max(matmul_gflops(kernel, H, inner, getattr(torch, dtype)),
                        matmul_gflops(get_matmul("torch"), H, inner, getattr(torch, dtype)))
             for dtype in ("float32", "bfloat16")}
    print(f"# {cpu_description()}; {torch.get_num_threads()} threads; torch {torch.__version__}; {args.shape} shape, "
          f"random weights; {args.texts} texts per corpus, max_seq_length {args.max_seq_length}; median of "
          f"{args.repeats}; matmul GFLOP/s float32 {peaks['float32']:.0f}, bfloat16 {peaks['bfloat16']:.0f}\n")
    reference = next(name for name in ("sentence-transformers float32", "sentence-transformers bfloat16")
                     if name in systems)
    weights = weight_bytes(folder)
    print(f"weights: {weights / 2**30:.2f} GiB\n")
    print(f"| corpus | texts | tokens | system | median s | tokens/s | vs ST fastest | peak GiB | peak / weights | "
          f"matmul share | min cosine vs {reference} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    out = Path(tempfile.mkdtemp(prefix="bench-decoder-"))
    for corpus in args.corpora:
        texts = corpora()[corpus][: args.texts]
        lengths = token_counts(folder, texts, args.max_seq_length)
        results = {}
        for system in systems:
            command = [sys.executable, __file__, "--folder", str(folder), "--texts", str(args.texts), "--repeats",
                       str(args.repeats), "--child", system, corpus, str(out)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[system] = json.loads(done.stdout.strip().splitlines()[-1])
        fastest_st = min(r["median"] for s, r in results.items() if s.startswith("sentence-transformers"))
        expected = unit(np.load(out / f"{reference}.{corpus}.npy"))
        for system, r in results.items():
            cosine = float((unit(np.load(out / f"{system}.{corpus}.npy")) * expected).sum(axis=1).min())
            share = flops(args.shape, lengths) / r["median"] / peaks[SYSTEMS[system][1]]
            print(f"| {corpus} | {len(texts)} | {sum(lengths)} | {system} | {r['median']:.2f} | "
                  f"{sum(lengths) / r['median']:,.0f} | {fastest_st / r['median']:.2f}x | {r['peak_gib']:.2f} | "
                  f"{r['peak_gib'] * 2**30 / weights:.2f} | {share:.0%} | {cosine:.5f} |")
        sys.stdout.flush()
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
