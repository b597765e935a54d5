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
