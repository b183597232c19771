"""Helpers for the notebook tests: a real IPython shell with the extension on a fresh DuckDB file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.testing.globalipapp import start_ipython

from clarion_jupyter.notebook.magic import ClarionMagics

ECHO3 = """
id: echo3
name: Three echoes
inputs:
  word: {type: string, default: hi}
steps:
  - id: one
    task: echo
    with: {value: "{{ inputs.word }}"}
  - id: two
    task: echo
    with: {value: "{{ steps.one.output.value }}!"}
  - id: three
    task: echo
    with: {value: "{{ steps.two.output.value }}!"}
outputs:
  said: "{{ steps.three.output.value }}"
"""


class Shell:
    """An IPython shell with a fresh ``ClarionMagics`` whose runs go to ``db_path``."""

    def __init__(self, db_path: Path) -> None:
        self.ip = start_ipython() or InteractiveShell.instance()
        self.magics = ClarionMagics(self.ip)
        self.magics.session(local=True).db_path = str(db_path)
        self.ip.register_magics(self.magics)
        self.ip.user_ns.pop("_", None)

    def cell(self, line: str, body: str) -> ExecutionResult:
        return self.ip.run_cell(f"%%clarion {line}\n{body}")

    def line(self, line: str) -> ExecutionResult:
        return self.ip.run_cell(f"%clarion {line}")

    @property
    def last(self) -> Any:
        return self.ip.user_ns["_"]

    def close(self) -> None:
        for session in self.magics.sessions.values():
            session.close()


@contextmanager
def shell_at(tmp_path: Path, monkeypatch: Any) -> Iterator[Shell]:
    monkeypatch.chdir(tmp_path)
    shell = Shell(tmp_path / "kernel.duckdb")
    try:
        yield shell
    finally:
        shell.close()


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    """A shell whose every session (``--local`` too) uses a DuckDB file in ``tmp_path``."""
    monkeypatch.setenv("CLARION_DB", str(tmp_path / "kernel.duckdb"))
    with shell_at(tmp_path, monkeypatch) as shell:
        yield shell
