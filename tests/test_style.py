"""The code base passes its linter and formatter (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["clarion_jupyter", "tests", "bench"]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", *args, *SOURCES], cwd=REPO, capture_output=True, text=True)


def test_lint_is_clean() -> None:
    result = ruff("check", "--output-format", "concise")
    assert result.returncode == 0, result.stdout


def test_formatting_is_clean() -> None:
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout
