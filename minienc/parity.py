"""`minienc parity`: minienc and transformers side by side, stage by stage, on the same inputs.

Needs the reference libraries: `pip install transformers sentence-transformers` (the latter for the final sentence
vector, where the folder is a sentence-transformers one).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .formats.sentence import read_sentence_folder
from .heads.sentence import SentenceEncoder
from .loading.encoder import read_config
from .loading.hub import resolve_model_dir
from .model.attention import get_attention, matches_for
from .model.family import family_of
from .stages import capture, capture_reference, last_stage

BUILT_IN_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "头痛怎么办？",
    "Emoji 🙂🚀, ümlauts and naïve cafés.",
    "",
    "x",
    "A longer paragraph about encoders: tokens become vectors, attention mixes them, and a feed-forward network "
    "transforms each one, layer after layer, until pooling turns them into one sentence vector. " * 3,
]


@dataclass
class StageDiff:
    stage: str
    max_abs: float
    max_rel: float
    identical: bool


def compare(ours: torch.Tensor, reference: torch.Tensor, stage: str) -> StageDiff:
    ours, reference = ours.float(), reference.float()
    diff = (ours - reference).abs()
    rel = diff / reference.abs().clamp(min=torch.finfo(torch.float32).tiny)
    return StageDiff(stage, float(diff.max()) if diff.numel() else 0.0, float(rel.max()) if rel.numel() else 0.0,
                     torch.equal(ours, reference))


def run_parity(
    model: str | Path,
    attention: str,
    texts: list[str] | None = None,
    reference: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    execution: str = "padded",
    matmul: str = "torch",
    report: Callable[[str], None] = lambda message: None,
    notes: Callable[[str], None] = lambda line: None,
) -> tuple[list[StageDiff], str]:
    """Differences at every stage (real tokens only) and the transformers implementation compared against:
    `reference`, else the one `attention` claims to match, else eager (the plain math).

    The per-layer stages run padded, as transformers does; with execution="packed" the last hidden state and the
    sentence vectors come from minienc's packed path. matmul is the linear layers' kernel at every stage. report(line)
    hears what it is doing, for a progress line; notes(line) what the reference did that the table does not show
    (checkpoint keys it ignored or lacked)."""
    try:
        import transformers
    except ImportError:
        raise ImportError("minienc parity needs the reference: pip install transformers sentence-transformers") from None
    get_attention(attention)  # an unknown name is refused before anything loads
    texts = texts or BUILT_IN_TEXTS
    folder, transformer = model_folders(model)
    model_type = read_config(transformer / "config.json").model_type
    if model_type not in transformers.CONFIG_MAPPING:  # a model_type only the folder's own code defines
        raise ValueError(f"transformers has no class for model_type {model_type!r} ({transformer / 'config.json'}): "
                         f"the folder's own code would be the reference, and minienc runs no code from a folder")
    report(f"loading {model} in minienc ...")
    ours = SentenceEncoder.from_pretrained(model, attention=attention, dtype=dtype, device=device, execution=execution,
                                           matmul=matmul)
    reference = reference or claimed_reference(model, attention) or "eager"
    family = family_of(model_type)
    report(f"loading the reference, transformers' {family.reference} ...")
    with quiet(transformers):  # its loading bars and report (the pooler left out on purpose) are not ours to show
        hf, loading = transformers.AutoModel.from_pretrained(transformer, attn_implementation=reference,
                                                             dtype=dtype or torch.float32, output_loading_info=True,
                                                             **dict(family.reference_options))
    hf = hf.to(ours.device).eval()
    for line in loading_notes(type(hf).__name__, loading):
        notes(line)
    report(f"running both on {len(texts)} texts, stage by stage ...")
    batch = ours.tokenizer(texts, device=ours.device)
    real = batch["attention_mask"].bool()
    mine, theirs = capture(ours.encoder, batch), capture_reference(hf, batch)
    rows = [compare(mine[name][real], theirs[name][real], name) for name in mine]
    last = last_stage(mine)
    final = torch.cat(ours.encode(texts, output_value="token_embeddings")) if execution == "packed" else mine[last][real]
    rows.append(compare(final, theirs[last][real], "last_hidden_state"))
    if (folder / "modules.json").is_file():
        report("the sentence vectors, against sentence-transformers ...")
        rows += sentence_rows(ours, folder, reference, texts, dtype)
    return rows, reference


def loading_notes(reference: str, loading: dict) -> list[str]:
    """transformers' loading report, in a line per kind: keys of the checkpoint it left unused (BERT's pooler, a task
    head: neither is on the way to the sentence vector), and, a warning, weights it lacked and drew at random."""
    lines = []
    if loading.get("unexpected_keys"):
        keys = sorted(loading["unexpected_keys"])
        lines.append(f"note: transformers' {reference} left {len(keys)} checkpoint key(s) unused: "
                     f"{', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''} (weights {reference} does not have: a "
                     f"pooler or a task head)")
    missing = sorted(loading.get("missing_keys") or ()) + sorted(str(k) for k in loading.get("mismatched_keys") or ())
    if missing:
        lines.append(f"warning: transformers' {reference} did not find {len(missing)} weight(s) in the checkpoint and "
                     f"drew them at random, so the reference is not the checkpoint there: {', '.join(missing[:6])}"
                     f"{', ...' if len(missing) > 6 else ''}")
    return lines


@contextlib.contextmanager
def quiet(transformers):
    """transformers' logging at errors only and its progress bars off, for the block; as they were after it."""
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def model_folders(model: str | Path) -> tuple[Path, Path]:
    """The model's folder, and the one in it that holds config.json and the weights."""
    folder = resolve_model_dir(model)
    return folder, read_sentence_folder(folder).transformer or folder


def claimed_reference(model: str | Path, attention: str) -> str | None:
    """The transformers implementation `attention` claims to reproduce bit for bit on the model's family, or None."""
    family = family_of(read_config(model_folders(model)[1] / "config.json").model_type)
    return family.reference_claims.get(attention) or matches_for(attention, family.name)


def sentence_rows(ours: SentenceEncoder, folder: Path, reference: str, texts: list[str], dtype) -> list[StageDiff]:
    """The final sentence vector against sentence-transformers' (one batch each)."""
    from sentence_transformers import SentenceTransformer

    import transformers

    with quiet(transformers):
        st = SentenceTransformer(str(folder), device=str(ours.device),
                                 model_kwargs={"attn_implementation": reference, "dtype": dtype or torch.float32})
    n = len(texts)
    mine = ours.encode(texts, batch_size=n, convert_to_tensor=True)
    theirs = st.encode(texts, batch_size=n, convert_to_tensor=True)
    return [compare(mine, theirs, "sentence_embedding")]


def format_table(rows: list[StageDiff], atol: float | None) -> tuple[str, bool]:
    """The table, with the first diverging stage marked, and whether every stage is within atol
    (atol None: report only)."""
    limit = 0.0 if atol is None else atol
    first = next((r.stage for r in rows if (r.max_abs > limit if atol is not None else not r.identical)), None)
    lines = [f"{'stage':<22} {'max abs diff':>13} {'max rel diff':>13}  identical"]
    for r in rows:
        mark = "  <- first divergence" if r.stage == first else ""
        rel = "inf" if math.isinf(r.max_rel) else f"{r.max_rel:.3e}"
        lines.append(f"{r.stage:<22} {r.max_abs:>13.3e} {rel:>13}  {'yes' if r.identical else 'no':<9}{mark}")
    ok = atol is None or all(r.max_abs <= atol for r in rows)
    return "\n".join(lines), ok
