"""An agent cell says what it is about to send (files, tokens, the cap) before anything is
sent, and sends nothing when the context is over its cap."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from notebook_support import Shell

from clarion_jupyter.core.protocol import RunStatus

REPLY = json.dumps({"summary": "Nothing to change.", "file_changes": []})


def _reader(shell: Shell, max_tokens: int | None = None) -> None:
    cap = f", max_tokens: {max_tokens}" if max_tokens else ""
    shell.cell(
        "save-agent",
        "id: reader\nname: Reader\nmodel: openai/gpt-4o-mini\n"
        f"parameters: {{mock_response: {json.dumps(REPLY)}}}\n"
        f"context: {{include_globs: ['*.py']{cap}}}\n",
    )


def test_the_cell_lists_the_files_and_tokens_it_sends_before_the_run(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    (Path.cwd() / "app.py").write_text("print('hello')\n" * 20)
    (Path.cwd() / "notes.md").write_text("not a python file\n")
    _reader(shell)
    shell.cell("agent reader --apply never", "Review the app")
    printed = capsys.readouterr().out
    assert re.search(
        r"^context: 1 file, \d+ tokens of [\d,]+ allowed; the whole prompt is [\d,]+ tokens", printed, re.M
    )
    assert re.search(r"^  app\.py  \(\d+ tokens\)$", printed, re.M)
    assert "notes.md" not in printed
    assert shell.last.wait(timeout=30).status == RunStatus.succeeded


def test_a_context_over_its_cap_sends_nothing_and_starts_no_run(shell: Shell) -> None:
    (Path.cwd() / "big.py").write_text("value = 1\n" * 3_000)
    _reader(shell, max_tokens=100)
    result = shell.cell("agent reader", "Review everything")
    message = str(result.error_in_exec)
    assert "nothing was sent" in message and "over its cap of 100" in message and "big.py" in message
    assert len(shell.line("runs").result) == 0
