"""``clarion agents set`` and ``clarion agents edit``: change a saved agent from the terminal,
on the embedded engine and through the server that holds the database, judged by the engine."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.testing.server import JupyterServerProcess

pytestmark = pytest.mark.timeout(120)
HELPER = {"id": "helper", "name": "Helper", "model": "openai/gpt-4o", "system_prompt": "Help."}


def clarion(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``clarion ARGS --db DB`` with no terminal on stdin (as in CI)."""
    return subprocess.run(
        [sys.executable, "-m", "clarion_jupyter.cli", *args, "--db", str(db)],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )  # fmt: skip


def editor(tmp_path: Path, old: str, new: str) -> dict[str, str]:
    """An ``$EDITOR`` that replaces ``old`` by ``new`` in the file it is given, as a person would."""
    script = tmp_path / "editor.py"
    script.write_text(
        f"import pathlib, sys\npath = pathlib.Path(sys.argv[1])\npath.write_text(path.read_text().replace({old!r}, {new!r}))\n"
    )
    return {"EDITOR": f"{sys.executable} {script}", "VISUAL": ""}


async def stored(db: Path, agent_id: str = "helper") -> dict:
    async with Engine(db, workspace_root=db.parent) as engine:
        return (await engine.get_agent(agent_id)).model_dump(mode="json")


async def saved_helper(tmp_path: Path) -> Path:
    """A database holding the agent ``helper`` (made in process: pytest-jupyter has no async fixtures)."""
    path = tmp_path / "x.duckdb"
    async with Engine(path, workspace_root=tmp_path) as engine:
        await engine.create_agent(HELPER)
    return path


async def test_set_changes_fields_with_dotted_keys_for_nested_ones_and_typed_values(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(db, "agents", "set", "helper", "model=openai/gpt-4o-mini", "parameters.temperature=0.2",
                     "api_key_env=OPENAI_API_KEY")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'saved helper "Helper" (openai/gpt-4o-mini)\n'
    agent = await stored(db)
    assert (agent["model"], agent["parameters"], agent["api_key_env"]) == (
        "openai/gpt-4o-mini", {"temperature": 0.2}, "OPENAI_API_KEY"
    )  # fmt: skip


async def test_set_keeps_a_json_value_as_the_text_it_is(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(db, "agents", "set", "helper", 'parameters.mock_response={"summary": "hi"}')
    assert result.returncode == 0, result.stderr
    assert (await stored(db))["parameters"] == {"mock_response": '{"summary": "hi"}'}


async def test_set_of_an_empty_value_clears_the_field(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    clarion(db, "agents", "set", "helper", "api_base=http://127.0.0.1:9/v1")
    result = clarion(db, "agents", "set", "helper", "api_base=")
    assert result.returncode == 0, result.stderr
    assert (await stored(db))["api_base"] is None


async def test_set_of_an_unknown_field_names_it_and_changes_nothing(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(db, "agents", "set", "helper", "modle=openai/gpt-4o-mini")
    assert result.returncode == 1
    assert "modle" in result.stderr and "Traceback" not in result.stderr
    assert (await stored(db))["model"] == "openai/gpt-4o"


async def test_set_of_an_unknown_agent_says_so(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(db, "agents", "set", "nobody", "model=x")
    assert result.returncode == 1
    assert result.stderr == "error: agent 'nobody' not found\n"


async def test_edit_saves_the_agent_the_editor_wrote(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(
        db, "agents", "edit", "helper", env=editor(tmp_path, "system_prompt: Help.", "system_prompt: Be brief.")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'saved helper "Helper" (openai/gpt-4o)\n'
    assert (await stored(db))["system_prompt"] == "Be brief."


async def test_edit_that_changes_nothing_saves_nothing(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(db, "agents", "edit", "helper", env=editor(tmp_path, "no such text", ""))
    assert (result.returncode, result.stdout) == (0, "no changes to helper\n")


async def test_edit_to_an_invalid_agent_shows_the_problems_and_exits_1_without_a_terminal(tmp_path: Path) -> None:
    db = await saved_helper(tmp_path)
    result = clarion(
        db, "agents", "edit", "helper", env=editor(tmp_path, "api_key_env: null", "api_key_env: not a name")
    )
    assert result.returncode == 1
    assert "api_key_env" in result.stderr and "error: agent helper not saved" in result.stderr
    assert (await stored(db))["api_key_env"] is None


async def test_set_and_edit_go_through_the_server_that_holds_the_database(tmp_path: Path) -> None:
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        await server.request("POST", "agents", HELPER)
        env = {"JUPYTER_RUNTIME_DIR": str(server.workdir / "runtime")}
        set_ = await asyncio.to_thread(
            clarion, server.db_path, "agents", "set", "helper", "model=openai/gpt-4o-mini", env=env
        )
        edit_env = env | editor(tmp_path, "system_prompt: Help.", "system_prompt: Through the server.")
        edit = await asyncio.to_thread(clarion, server.db_path, "agents", "edit", "helper", "--verbose", env=edit_env)
        agent = await server.request("GET", "agents/helper")
    assert set_.returncode == edit.returncode == 0, set_.stderr + edit.stderr
    assert "using the Jupyter server" in edit.stderr
    assert (agent["model"], agent["system_prompt"]) == ("openai/gpt-4o-mini", "Through the server.")
