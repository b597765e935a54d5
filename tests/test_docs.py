"""Every Python example in README.md and docs/api.md runs as written, against the packaged all-MiniLM-L6-v2 where it
names the Hub id (the one substitution: the Hub cannot be reached from the tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PAGES = ["README.md", "docs/api.md"]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / page).read_text(encoding="utf-8"), re.S)


EXAMPLES = [(page, i) for page in PAGES for i in range(len(python_blocks(page)))]


@pytest.mark.parametrize("page,index", EXAMPLES, ids=[f"{page}-{i}" for page, i in EXAMPLES])
def test_example_runs_as_written(page, index, minilm_dir):
    code = python_blocks(page)[index]
    names = set(re.findall(r'"([\w-]+/[\w.-]+)"', code))
    assert names <= {HUB_ID}, f"{page} example {index} names {names - {HUB_ID}}: no offline copy to run it against"
    exec(compile(code.replace(f'"{HUB_ID}"', repr(str(minilm_dir))), f"{page}#{index}", "exec"), {})


def test_every_page_listed_has_examples():
    assert len(EXAMPLES) >= 3
