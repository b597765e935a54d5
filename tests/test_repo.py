"""The repository's own promises: CI runs exactly the test command the README gives."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    quick_start = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert len(commands) == 2, "the quick start gives exactly two commands: the main job and the tests"
    assert "minienc encode" in commands[0]
    assert commands[1] in ROOT.joinpath(".ci", "run").read_text(encoding="utf-8").splitlines()


def test_model_file_knows_nothing_of_tokenizers_or_packing():
    """model.py is the forward pass alone: packed and padded input arrive as tensors and spans."""
    import ast

    tree = ast.parse(ROOT.joinpath("minienc", "model.py").read_text(encoding="utf-8"))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {"tokenizers", "packed", "sentence", "tokenizer"} & {name.split(".")[-1] for name in imported}
