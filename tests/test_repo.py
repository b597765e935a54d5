"""The repository's own promises: CI runs exactly the test command the README gives, the model folder imports
only torch and itself, a family is named in its own file only, and the benchmark script runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    quick_start = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert len(commands) == 2, "the quick start gives exactly two commands: the main job and the tests"
    assert "minienc encode" in commands[0]
    assert commands[1] in ROOT.joinpath(".ci", "run").read_text(encoding="utf-8").splitlines()


def test_the_model_imports_only_torch_and_itself():
    """minienc/model/ is the textbook: every file in it imports torch, the standard library and the other files of
    model/ only. Tokenizers, packing, kernels, checkpoints and the Hub live outside it; packed and padded input arrive
    as tensors and spans."""
    import ast
    import sys

    allowed = {"torch"} | set(sys.stdlib_module_names)
    files = sorted(ROOT.joinpath("minienc", "model").glob("*.py"))
    assert len(files) >= 6, files
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside model/: {'.' * node.level}{node.module}"
                names = [node.module] if node.level == 0 else []
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_each_model_type_is_named_in_its_family_file_only():
    """A family is one file: no other file of the package holds one of its model_type strings as a value (the loader,
    checkpoint reader, stages, parity, plot and CLI read the family records, model/family.py)."""
    import ast
    import importlib
    import pkgutil

    import minienc.model

    homes = {}  # model_type -> the file whose FAMILY names it
    for info in pkgutil.iter_modules(minienc.model.__path__):
        module = importlib.import_module(f"minienc.model.{info.name}")
        for model_type in getattr(getattr(module, "FAMILY", None), "model_types", ()):
            homes[model_type] = Path(module.__file__).resolve()
    assert len(set(homes.values())) >= 4, homes
    for path in sorted(ROOT.joinpath("minienc").rglob("*.py")):
        named = {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        strays = [model_type for model_type, home in homes.items() if model_type in named and path.resolve() != home]
        assert not strays, f"{path.relative_to(ROOT)} names {strays}: read the family's record instead"


@pytest.mark.slow
def test_the_benchmark_runs_on_the_tiny_model():
    """scripts/bench.py, end to end on the bundled tiny model without the peers: a script no other test imports
    still runs against the library as it is (its last lines read the pipeline's kernel)."""
    import subprocess
    import sys

    command = [sys.executable, "scripts/bench.py", "--model", "weights/tiny-bert", "--no-peers", "--corpora", "short",
               "--repeats", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| short | 1024 |" in done.stdout and "# minienc packed bfloat16: batch_invariant" in done.stdout
