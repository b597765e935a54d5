"""Every Python example in README.md and docs/ runs as written. The one substitution, since the Hub cannot be reached
from the tests: a Hub id or a weights/ path becomes a local folder of the same family (SUBSTITUTES). Examples that
need what a test run does not have are listed in NOT_RUN, each with its reason and the test that covers it instead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import minienc
from minienc.model.attention import ATTENTION

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
SUBSTITUTES = {  # name in the docs -> the bundled seeded folder of its family (None: the packaged MiniLM)
    "sentence-transformers/all-MiniLM-L6-v2": None,
    "Qwen/Qwen3-Embedding-0.6B": WEIGHTS / "tiny-qwen3-embedding",
    "google/embeddinggemma-300m": WEIGHTS / "tiny-embeddinggemma",
    "nomic-ai/modernbert-embed-base": WEIGHTS / "tiny-modernbert-embed",
    "weights/tiny-qwen3-embedding": WEIGHTS / "tiny-qwen3-embedding",
}
NOT_RUN = {  # (page, index) -> why, and where it is tested
    ("docs/beyond-one-vector.md", 0): "SPLADE and ColBERT folders from the Hub; tests/test_sparse.py and "
                                      "tests/test_multivector.py run the same calls on folders they build",
    ("docs/cli.md", 0): "a Ray cluster and a corpus/ folder of parquet files; tests/test_ray.py runs minienc.ray.Embed",
}
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / page).read_text(encoding="utf-8"), re.S)


EXAMPLES = [(page, i) for page in PAGES for i in range(len(python_blocks(page)))]


@pytest.mark.parametrize("page,index", EXAMPLES, ids=[f"{page}-{i}" for page, i in EXAMPLES])
def test_example_runs_as_written(page, index, minilm_dir):
    if (page, index) in NOT_RUN:
        pytest.skip(NOT_RUN[page, index])
    code = python_blocks(page)[index]
    names = set(re.findall(r'"((?:[\w-]+/)+[\w.-]+)"', code))
    assert names <= set(SUBSTITUTES), f"{page} example {index} names {names - set(SUBSTITUTES)}: add a substitute"
    for name in names:
        code = code.replace(f'"{name}"', repr(str(SUBSTITUTES[name] or minilm_dir)))
    registered = set(ATTENTION)
    try:
        exec(compile(code, f"{page}#{index}", "exec"), {})
    finally:
        for name in set(ATTENTION) - registered:  # an example that registers a variant leaves nothing behind
            ATTENTION.pop(name)


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 9 and all(key in EXAMPLES for key in NOT_RUN)
    assert minienc.__version__  # the package the examples import
