"""Dilution: a passage buried in a long, many-topic document is found less well through one pooled vector.

    python3 scripts/long_text_dilution.py [--documents 60] [--seed 0] [--threads N]

The effect. A sentence embedding is one vector per text. When the text is one passage, the vector is about that
passage; when the text is eight passages on eight topics, the vector is about all of them at once, and a query that
matches one passage matches only part of what the vector says: the match is diluted. On top of that, encode()
truncates at max_seq_length (256 tokens for all-MiniLM-L6-v2), so a passage that starts after the first 256 tokens
is not in the vector at all. Cutting the document into windows, keeping one vector per token, or matching words
instead of vectors are the usual ways around both; this script measures each on the same task.

The data, built offline and deterministically (one seeded random.Random) from text that ships with Python, so it
is the same on every machine with the same Python version:
  topics     each module of the fixed list scripts/bench.py embeds (its docstrings, from bench's docstrings()),
             and each topic of the language reference that help() prints (pydoc_data.topics)
  sections   a topic's paragraphs (split at blank lines, whitespace collapsed, 10 to 250 words; code, grammar and
             >>> examples left out; no paragraph twice) in source order, cut into runs of SECTION_WORDS words or more
  documents  SLOTS sections from SLOTS different topics, joined; no section is used twice in the whole corpus, so
             documents share no text
  queries    1 per document, from its "answer" section: the query is the first sentence of the section's first
             paragraph, and that sentence is removed from the document, which keeps the rest of the section. A
             query is thus never a verbatim copy of document text: it must be matched to what followed it in the
             same docstring or reference page (a copy would hand word matching a free win). The correct answer is
             the one document holding the section; every other document is a distractor.
  positions  the whole corpus is laid out three times, with every answer section moved to slot 0 of 8
             ("beginning"), slot 4 ("middle") or slot 7 ("end") and the other sections kept in their order. Every
             query is scored in all three layouts, so the position columns compare the same queries against the
             same text, only reordered.

The scores; each ranks all documents for every query, by cosine similarity unless said otherwise:
  BM25                 Okapi BM25 over lowercased word tokens of the whole document (bm25() below). No trained
                       SPLADE model is available offline: BM25 stands in for lexical matching, "match the words,
                       not a vector", and is no measure of SPLADE itself.
  CLS, truncated       the [CLS] token's vector over the first 256 tokens. all-MiniLM-L6-v2 was trained with mean
                       pooling, so this is the off-recipe pooling, shown for comparison.
  mean, truncated      the model's own embedding, encode(): the mean of the first 256 tokens' vectors
  chunked, mean        encode_chunks(aggregate="mean"): the whole document in overlapping windows, one vector per
                       window, and their mean as the document's one vector (nothing truncated, still one vector)
  chunked, best        encode_chunks(aggregate=None): the same windows kept apart, a document scoring its best
                       window (minienc.heads.chunks.best_window); with 256- and with 128-token windows
  token MaxSim         late interaction over the model's own token vectors (MiniLM's by default; no trained
                       ColBERT head exists offline): each query token is matched to its most similar document token
                       and the similarities are summed (minienc.heads.similarity.maxsim); token vectors
                       L2-normalized, the first and last token ([CLS] and [SEP]) left out, documents read in
                       overlapping windows so that no token is truncated
  sections alone       each section embedded by itself with the model's own encode(), a document scoring its best
                       section: the same model with nothing diluted and nothing truncated, the reference

Reading the table: each cell is "recall@1 / MRR". recall@1 is the share of queries whose own document ranks first;
MRR is the mean of 1 / (rank of the own document): 1 is perfect, and the header gives a random ranking's values.
Columns split the scores by where the answer section sits; the second header line gives how many tokens precede
it and how many answers start within the first 256 tokens, the only part a truncated embedding reads. BM25 and the
sections-alone reference do not see the order of the sections, so their three position columns are equal by
construction (a check that the layouts differ only in order). Along a row, a fall from "beginning" to "middle" and
"end" shows truncation; in the "beginning" column, "mean, truncated" against "chunked, mean" shows dilution alone
(same answer at the same place, but the one vector now averages the whole document instead of its first 256
tokens); and every row's distance below "sections alone" is what its way of reading a long document costs.
Windows are cut at fixed token counts, not at section boundaries, so where a section falls against the
window edges (cut in two, or nearly alone in a short last window) moves the windowed rows between positions too.
With one query per document, one query is 1 / documents of a column: small differences are noise.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from pydoc_data.topics import topics as reference_topics

from bench import cpu_name, default_model, docstrings  # scripts/bench.py, beside this file

import minienc
from minienc.heads.chunks import best_window
from minienc.heads.similarity import maxsim as token_maxsim
from minienc.model.pooling import l2_normalize

SLOTS = 8  # sections per document, each from a different topic
SECTION_WORDS = 40  # a section: consecutive paragraphs of one topic, at least this many words
POSITIONS = {"beginning": 0, "middle": 4, "end": 7}  # slot of the answer section
WINDOW, SMALL_WINDOW, OVERLAP = 256, 128, 32  # tokens per window (special tokens included) for the windowed scores


# --- data --------------------------------------------------------------------------------------------------------


def topic_paragraphs() -> dict[str, list[str]]:
    """topic -> its paragraphs in source order, whitespace collapsed, 10 to 250 words; no paragraph in two topics."""
    raw = {name: [p for d in docs for p in d.split("\n\n")] for name, docs in docstrings().items()}
    raw |= {f"reference:{name}": text.split("\n\n") for name, text in reference_topics.items()}
    seen: set[str] = set()
    found = {}
    for name, paragraphs in raw.items():
        prose = [p for p in paragraphs if not p.startswith(("   ", ">>>"))]  # indented: code or grammar
        kept = [p for p in dict.fromkeys(" ".join(p.split()) for p in prose)
                if 10 <= len(p.split()) <= 250 and p not in seen]
        seen.update(kept)
        found[name] = kept
    return found


def split_first_sentence(paragraph: str) -> tuple[str, str] | None:
    """(first sentence, rest) of a paragraph fit to give a query: a first sentence of 5 to 40 words, 8 or more
    words after it; None if it does not fit."""
    parts = re.split(r"(?<=[.!?])\s+", paragraph, maxsplit=1)
    if len(parts) == 2 and 5 <= len(parts[0].split()) <= 40 and len(parts[1].split()) >= 8:
        return parts[0], parts[1]
    return None


def topic_sections(rng: random.Random) -> dict[str, list[list[str]]]:
    """topic -> its sections (lists of paragraphs), shuffled. A section is a run of consecutive paragraphs of
    SECTION_WORDS words or more; a topic's short remainder joins its last section; a topic shorter than one section
    gives none."""
    pools = {}
    for name, paragraphs in topic_paragraphs().items():
        sections, run = [], []
        for p in paragraphs:
            run.append(p)
            if sum(len(x.split()) for x in run) >= SECTION_WORDS:
                sections.append(run)
                run = []
        if run and sections:
            sections[-1] += run
        rng.shuffle(sections)
        pools[name] = sections
    return pools


def draw(rng: random.Random, pools: dict[str, list[list[str]]], used: set[str], answer: bool) -> list[str]:
    """A section taken out of pools, from a topic not in `used` (which gains it). The topic is chosen with weight =
    its sections left, so that the big topics do not all run out last; an answer section's first paragraph must
    split into a query and a rest."""
    fits = {t: [s for s in ss if not answer or split_first_sentence(s[0])] for t, ss in pools.items() if t not in used}
    names = [t for t, ss in fits.items() if ss]
    if not names:
        raise ValueError("the text ran out of sections: ask for fewer --documents")
    topic = rng.choices(names, weights=[len(fits[t]) for t in names])[0]
    section = fits[topic][0]
    pools[topic].remove(section)
    used.add(topic)
    return section


@dataclass
class Corpus:
    """Every document's SLOTS sections, its answer section first, and one query per document: query i's answer is
    document i. Where the answer goes is decided later, by documents()."""

    sections: list[list[str]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    def documents(self, position: str) -> list[str]:
        """The documents with their answer section moved to slot POSITIONS[position], the others in their order."""
        return ["\n\n".join(arranged(answer, others, position)) for answer, *others in self.sections]

    def preceding(self, position: str) -> list[str]:
        """Each document's text before its answer section, at this position."""
        return ["\n\n".join(arranged(answer, others, position)[: POSITIONS[position]])
                for answer, *others in self.sections]


def arranged(answer: str, others: list[str], position: str) -> list[str]:
    slot = POSITIONS[position]
    return [*others[:slot], answer, *others[slot:]]


def build(n_documents: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    pools = topic_sections(rng)
    corpus = Corpus()
    for _ in range(n_documents):
        used: set[str] = set()
        first, *following = draw(rng, pools, used, answer=True)
        query, rest = split_first_sentence(first)
        answer = "\n\n".join([rest, *following])  # the query sentence leaves the document
        others = ["\n\n".join(draw(rng, pools, used, answer=False)) for _ in range(SLOTS - 1)]
        corpus.sections.append([answer, *others])
        corpus.queries.append(query)
    return corpus


def token_counts(model: minienc.SentenceEncoder, texts: list[str]) -> list[int]:
    """Tokens of each text, untruncated, without [CLS] / [SEP]: the sum over its non-overlapping windows."""
    return [sum(len(w.ids) - 2 for w in windows) if text else 0
            for text, windows in zip(texts, model.tokenizer.windows(texts, WINDOW, 0))]


# --- scores: each gives a (queries, documents) matrix, higher = better ------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bm25(queries: list[str], documents: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 over word tokens of whole documents, with Lucene's idf log(1 + (N - df + 0.5) / (df + 0.5))."""
    counts = [Counter(words(d)) for d in documents]
    lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)  # (documents,)
    df = Counter(w for c in counts for w in c)
    idf = {w: math.log(1 + (len(documents) - n + 0.5) / (n + 0.5)) for w, n in df.items()}
    saturation = k1 * (1 - b + b * lengths / lengths.mean())  # (documents,): longer documents need more hits
    scores = np.zeros((len(queries), len(documents)))
    for qi, query in enumerate(queries):
        for w in set(words(query)) & idf.keys():
            tf = np.array([c[w] for c in counts], dtype=np.float64)  # (documents,)
            scores[qi] += idf[w] * tf * (k1 + 1) / (tf + saturation)
    return scores


def cosine(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """(nq, D), (nd, D) -> (nq, nd) cosine similarities."""
    q, d = (l2_normalize(torch.from_numpy(x).float()) for x in (queries, documents))
    return (q @ d.T).numpy()


def best_of(queries: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """(nq, D) query vectors against documents given as (n_i, D) vector groups: each document's best cosine."""
    return np.array([[best_window(q, g) for g in groups] for q in queries])


def document_tokens(model: minienc.SentenceEncoder, documents: list[str]) -> list[torch.Tensor]:
    """Each document's token vectors, (n_tokens, H) L2-normalized, read in overlapping windows of WINDOW tokens with
    [CLS] and [SEP] dropped, so every token of the document is there (those in an overlap, twice)."""
    windows = model.tokenizer.windows(documents, WINDOW, OVERLAP)  # per document: its windows
    flat = [w for ws in windows for w in ws]
    _, tokens = model.embed_all(flat, model.get_sentence_embedding_dimension(), 32, 2048, keep_tokens=True)
    per_window = [l2_normalize(t[1:-1].float()) for t in tokens]  # (window tokens - 2, H) each
    ends = np.cumsum([len(ws) for ws in windows])
    return [torch.cat(per_window[end - len(ws) : end]) for ws, end in zip(windows, ends)]


def score_all(folder, corpus: Corpus) -> dict[str, dict[str, np.ndarray]]:
    """method name -> position -> (queries, documents) scores, methods in the table's order. The documents are
    embedded again for every position; sections embedded alone do not depend on it, so they are embedded once.
    The labels name the model's own truncation (max_seq_length)."""
    mean = minienc.SentenceEncoder.from_pretrained(folder)  # the model's own pipeline: mean pooling, normalized
    cls = minienc.SentenceEncoder.from_pretrained(folder, pooling="cls")
    limit = mean.max_seq_length
    queries = corpus.queries
    q_mean, q_cls = mean.encode(queries), cls.encode(queries)  # (queries, D) each
    q_tokens = [l2_normalize(t[1:-1].float()) for t in mean.encode(queries, output_value="token_embeddings")]
    alone = mean.encode([s for sections in corpus.sections for s in sections])  # (documents * SLOTS, D)
    reference = best_of(q_mean, [alone[i * SLOTS : (i + 1) * SLOTS] for i in range(len(corpus.sections))])

    scores: dict[str, dict[str, np.ndarray]] = {}
    for position in POSITIONS:
        documents = corpus.documents(position)
        windows = {(size, aggregate): mean.encode_chunks(documents, chunk_size=size, overlap=OVERLAP,
                                                         aggregate=aggregate)
                   for size, aggregate in ((WINDOW, "mean"), (WINDOW, None), (SMALL_WINDOW, None))}
        doc_tokens = document_tokens(mean, documents)
        methods = {
            "BM25 over words (lexical stand-in, not SPLADE)": bm25(queries, documents),
            f"CLS pooling, truncated at {limit}": cosine(q_cls, cls.encode(documents)),
            f"mean pooling (the model's own), truncated at {limit}": cosine(q_mean, mean.encode(documents)),
            f"chunked {WINDOW}/{OVERLAP}, mean of windows": cosine(q_mean, windows[WINDOW, "mean"]),
            f"chunked {WINDOW}/{OVERLAP}, best window": best_of(q_mean, windows[WINDOW, None]),
            f"chunked {SMALL_WINDOW}/{OVERLAP}, best window": best_of(q_mean, windows[SMALL_WINDOW, None]),
            "token MaxSim over the model's token vectors": token_maxsim(q_tokens, doc_tokens).numpy(),
            "reference: sections embedded alone, best section": reference,
        }
        for method, matrix in methods.items():
            scores.setdefault(method, {})[position] = matrix
    return scores


# --- report --------------------------------------------------------------------------------------------------------


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each query's own document (query i's is document i): 1 + the documents scoring strictly higher, so
    a tie counts in its favour."""
    own = np.diag(scores)  # (queries,)
    return 1 + (scores > own[:, None]).sum(axis=1)


def cell(r: np.ndarray) -> str:
    return f"{(r == 1).mean():.2f} / {(1 / r).mean():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.model or default_model()
    start = time.perf_counter()

    corpus = build(args.documents, args.seed)
    scores = score_all(folder, corpus)
    counter = minienc.SentenceEncoder.from_pretrained(folder)  # its tokenizer, to count tokens
    lengths = token_counts(counter, corpus.documents("beginning"))  # the same at every position
    before = {p: token_counts(counter, corpus.preceding(p)) for p in POSITIONS}  # tokens before each answer
    n = len(corpus.queries)

    print(f"# {n} documents of {SLOTS} sections from {SLOTS} different topics (standard-library docstrings and "
          f"language-reference pages), 1 query each (a section's held-out first sentence), each scored with its "
          f"answer at 3 positions; tokens per document: min {min(lengths)}, median {statistics.median(lengths):.0f}, "
          f"max {max(lengths)}; a random ranking: recall@1 {1 / n:.2f}, MRR "
          f"{sum(1 / k for k in range(1, n + 1)) / n:.2f}; seed {args.seed}; {cpu_name()}; {args.threads} threads; "
          f"torch {torch.__version__}; Python {platform.python_version()}")
    limit = counter.max_seq_length  # what a truncated embedding reads, special tokens included
    print("# tokens before the answer: " + "; ".join(
        f"{p} median {statistics.median(ks):.0f} ({sum(k < limit - 2 for k in ks)} of {n} start within the first "
        f"{limit})" for p, ks in before.items()) + "\n")
    print("| method (recall@1 / MRR) | all positions | " + " | ".join(POSITIONS) + " |")
    print("|---|---|" + "---|" * len(POSITIONS))
    for method, by_position in scores.items():
        r = {p: ranks(matrix) for p, matrix in by_position.items()}
        print(f"| {method} | {cell(np.concatenate(list(r.values())))} | "
              + " | ".join(cell(r[p]) for p in POSITIONS) + " |")
    print(f"\n# run time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
