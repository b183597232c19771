"""The README's examples run, and show what they print, so the README cannot drift from the code.

Every fenced ``console``, ``bash`` and ``python`` block runs, in the README's order, in a
temporary copy of the repository, as a reader following it would run them:

- ``console``: each ``$ `` command (with ``\\`` continuation lines) runs in bash; the lines
  after it are its output (stdout and stderr), compared as doctest does with ELLIPSIS: ``...``
  matches anything. A run id shown in the README stands for the id the run got: it matches
  any id the first time, and the same one after that, in outputs and commands alike.
- ``bash``: each command must succeed; ``python``: the block runs (top-level ``await`` and
  ``async with`` inside ``asyncio.run``), with ``token`` the server's token.

A real Jupyter server with the extension serves ``http://127.0.0.1:8888/`` (and
``$TOKEN``); the CLI runs embedded on its own file (``$CLARION_DB``); ``~/clarion/`` holds
Clarion v2's ``clarion.db`` and ``test_storage/`` as v2 wrote them, ``$OPENROUTER_API_KEY``
is set and ``$OPENAI_API_KEY`` is not. A block that cannot run here (it starts JupyterLab,
or needs a model's key) follows ``<!-- not run: why -->``, and must say why.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from clarion_jupyter.testing.clarion_v2 import v2_agent, v2_run, write_clarion_db, write_yaml_store
from clarion_jupyter.testing.server import JupyterServerProcess

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run:(?P<reason>.*?)-->\s*$", re.S)
RUN_ID = re.compile(r"\b[0-9a-f]{26}\b")
README_URL = "http://127.0.0.1:8888/"
RUNNABLE = ("console", "bash", "python")
PYTHON_RUNNER = """
import ast, asyncio, inspect, os, sys
namespace = {"token": os.environ["TOKEN"], "__name__": "__main__"}
code = compile(sys.stdin.read(), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, namespace)
if inspect.iscoroutine(result):
    asyncio.run(result)
"""
pytestmark = pytest.mark.timeout(600)


@dataclass
class Block:
    lang: str
    body: str
    line: int
    not_run: str | None

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.lang})"


def blocks() -> list[Block]:
    found = []
    for match in FENCE.finditer(README):
        before = NOT_RUN.search(README, 0, match.start())
        marked = before is not None and README[before.end() : match.start()].strip() == ""
        line = README.count("\n", 0, match.start()) + 1
        found.append(Block(match["lang"], match["body"], line, before["reason"].strip() if marked else None))
    return found


def commands(body: str) -> Iterator[tuple[str, list[str]]]:
    """``(command, expected output lines)`` for each ``$ `` line of a console block."""
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), f"a console block's first line is a command: {lines[i]!r}"
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        yield command, output


class Ids:
    """The README's run ids, each bound to the real id the first time an output shows it."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def pattern(self, expected: list[str]) -> re.Pattern[str]:
        text = "\n".join(line.rstrip() for line in expected)
        parts: list[str] = []
        self._names: dict[str, str] = {}
        for piece in re.split(r"(\.\.\.|\b[0-9a-f]{26}\b)", text):
            if piece == "...":
                parts.append(".*?")
            elif RUN_ID.fullmatch(piece) and piece in self.real:
                parts.append(re.escape(self.real[piece]))
            elif RUN_ID.fullmatch(piece) and piece in self._names:
                parts.append(f"(?P={self._names[piece]})")
            elif RUN_ID.fullmatch(piece):
                self._names[piece] = name = f"id{len(self._names)}"
                parts.append(f"(?P<{name}>[0-9a-f]{{26}})")
            else:
                parts.append(re.escape(piece))
        return re.compile("".join(parts), re.S)

    def bind(self, match: re.Match[str]) -> None:
        for readme_id, name in self._names.items():
            self.real[readme_id] = match[name]

    def substitute(self, command: str) -> str:
        return RUN_ID.sub(lambda m: self.real.get(m[0], m[0]), command)


V2_EDITOR = v2_agent("basic_editor", "Basic File Editor", config_id="cfg_openai", parameters={"temperature": 0.2})
V2_REVIEWER = v2_agent(
    "go_reviewer", "Go Reviewer", provider="OpenRouter", model="anthropic/claude-3.5-sonnet",
    config_id="cfg_openrouter", parameters={"temperature": 0.2},
)  # fmt: skip
V2_CONFIGS = [
    {"id": "cfg_openai", "name": "OpenAI", "provider": "OpenAI", "apiKey": "sk-not-imported"},
    {"id": "cfg_openrouter", "name": "OpenRouter", "provider": "OpenRouter", "apiKey": "sk-not-imported"},
]


def v2_home(home: Path) -> None:
    """``~/clarion/`` as a v2 user has it: the database (with 212 runs) and the older YAML store."""
    project = {"id": "p", "name": "app", "path": "/home/me/app", "lastOpenedAt": "", "activeAgentId": ""}
    runs = [
        ("p", v2_run(f"run-17145576{i:05d}", prompt=f"task {i}", agent=V2_EDITOR), "2024-05-01 10:00:05")
        for i in range(212)
    ]
    folder = home / "clarion"
    folder.mkdir(parents=True)
    write_clarion_db(folder / "clarion.db", agents=[V2_EDITOR, V2_REVIEWER], llm_configs=V2_CONFIGS,
                     projects=[project], runs=runs)  # fmt: skip
    write_yaml_store(folder, [V2_EDITOR, V2_REVIEWER], V2_CONFIGS)


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterServerProcess, dict[str, str]]]:
    """The server, and the environment the README's commands run in (the repo copy is the server's root)."""
    tmp = tmp_path_factory.mktemp("readme")
    server = JupyterServerProcess(tmp / "server")
    ignore = shutil.ignore_patterns(".git", ".venv", "node_modules", "*.duckdb*", "screenshots", "__pycache__", "lib")
    shutil.copytree(ROOT, server.root, ignore=ignore)
    v2_home(tmp / "home")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env |= {
        "HOME": str(tmp / "home"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "CLARION_DB": str(tmp / "cli.duckdb"), "JUPYTER_RUNTIME_DIR": str(tmp / "cli-runtime"),
        "NO_COLOR": "1", "OPENROUTER_API_KEY": "sk-or-set", "TOKEN": server.token, "JUPYTER_TOKEN": server.token,
    }  # fmt: skip
    with server:
        asyncio.run(server.wait_ready())
        yield server, env


def run(argv: list[str], server: JupyterServerProcess, env: dict[str, str], stdin: str = "") -> tuple[int, str]:
    """Exit status and output (stdout and stderr, as a terminal shows them) of one example."""
    done = subprocess.run(argv, input=stdin, cwd=server.root, env=env, timeout=120,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    return done.returncode, done.stdout


def shell(command: str, server: JupyterServerProcess, env: dict[str, str]) -> tuple[int, str]:
    return run(["bash", "-o", "pipefail", "-c", command.replace(README_URL, server.url)], server, env)


def test_every_block_that_is_not_run_says_why() -> None:
    unexplained = [str(b) for b in blocks() if b.not_run is not None and not b.not_run]
    assert not unexplained
    assert [b for b in blocks() if b.lang in RUNNABLE and b.not_run is None], "the README has examples to run"


def test_the_quickstart_listing_is_the_example_file() -> None:
    listing = next(b.body for b in blocks() if b.lang == "yaml" and "id: quickstart" in b.body)
    shipped = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    assert yaml.safe_load(listing) == {k: v for k, v in shipped.items() if k != "description"}


def test_every_example_runs_and_prints_what_the_readme_shows(
    reader: tuple[JupyterServerProcess, dict[str, str]],
) -> None:
    server, env = reader
    ids = Ids()
    for block in blocks():
        if block.lang not in RUNNABLE or block.not_run is not None:
            continue
        if block.lang == "python":
            code, output = run(
                [sys.executable, "-c", PYTHON_RUNNER], server, env, block.body.replace(README_URL, server.url)
            )
            assert code == 0, f"{block}:\n{output}"
        elif block.lang == "bash":
            for line in filter(None, (line.split("  #")[0].strip() for line in block.body.splitlines())):
                code, output = shell(line, server, env)
                assert code == 0, f"{block}: {line}\n{output}"
        else:
            for command, expected in commands(block.body):
                got = "\n".join(
                    line.rstrip() for line in shell(ids.substitute(command), server, env)[1].rstrip().splitlines()
                )
                match = ids.pattern(expected).fullmatch(got)
                shown = "\n".join(expected)
                assert match, f"{block}: $ {command}\n--- the README shows:\n{shown}\n--- it printed:\n{got}"
                ids.bind(match)
