"""Paths no filesystem can hold fail their step at once (no retries), path errors never
show where the server keeps its workspace, and which paths are protected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest_server import create_workflow, start_run, wait_run

from clarion_jupyter.core.workspace import Workspace

RETRIED = {"max_attempts": 3, "backoff_s": 0}


def one_step(task: str, config: dict[str, object]) -> dict[str, object]:
    return {"id": "paths", "name": "Paths", "steps": [{"id": "s", "task": task, "with": config, "retry": RETRIED}]}


@pytest.mark.parametrize(
    ("task", "config", "code"),
    [
        ("file_read", {"path": "a\u0000b"}, "task_failed"),
        ("file_read", {"path": "x" * 300}, "task_failed"),
        ("file_read", {"path": "/".join(["d" * 200] * 30)}, "task_failed"),
        ("file_write", {"path": "a\u0000b", "content": "x"}, "task_failed"),
        ("shell", {"command": "true", "cwd": "a\u0000b"}, "task_failed"),
        ("shell", {"command": "echo a\u0000b"}, "task_failed"),
    ],
)
async def test_an_impossible_path_is_a_permanent_failure(api, task, config, code):
    await create_workflow(api, one_step(task, config))
    run = await wait_run(api, await start_run(api, "paths"))
    step = run["steps"][0]
    assert run["status"] == "failed"
    assert step["attempt"] == 1, "a permanent error must not be retried"
    assert step["error"]["code"] == code
    assert (
        "NUL" in step["error"]["message"]
        or "longer than" in step["error"]["message"]
        or "null" in step["error"]["message"]
    )


async def test_a_path_error_names_the_path_relative_to_the_workspace(api, clarion):
    root = str(clarion.engine.workspace.root)
    await create_workflow(api, one_step("file_read", {"path": "../outside.txt"}))
    run = await wait_run(api, await start_run(api, "paths"))
    error = run["steps"][0]["error"]
    assert "'../outside.txt' is outside the workspace" in error["message"]
    assert root not in json.dumps(run)


async def test_a_missing_directory_error_is_relative_to_the_workspace(api, clarion):
    root = str(clarion.engine.workspace.root)
    await create_workflow(api, one_step("file_read", {"path": "no/such/file.txt"}))
    run = await wait_run(api, await start_run(api, "paths"))
    assert "no/such/file.txt" in run["steps"][0]["error"]["message"]
    assert root not in json.dumps(run)


@pytest.mark.parametrize(
    ("path", "protected"),
    [
        (".git", ".git"),
        (".git/config", ".git/config"),
        ("sub/.GIT/hooks/pre-commit", "sub/.GIT/hooks/pre-commit"),
        (".env.production", ".env.production"),
        ("keys/deploy.PEM", "keys/deploy.PEM"),
        (".clarion/intents/lock", ".clarion/intents/lock"),
        (".gitignore", None),
        (".github/workflows/ci.yml", None),
        ("docs/environment.md", None),
        ("src/keyboard.py", None),
    ],
)
def test_protected_names_git_and_credentials_but_not_their_lookalikes(
    tmp_path: Path, path: str, protected: str | None
) -> None:
    assert Workspace(tmp_path).protected(path) == protected


def test_protected_follows_a_link_to_its_target(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "notes.txt").symlink_to(".git/config")
    (tmp_path / "settings").symlink_to(".env")
    workspace = Workspace(tmp_path)
    assert workspace.protected("notes.txt") == ".git/config"
    assert workspace.protected("settings") == ".env"
    assert workspace.internal("notes.txt") is None


def test_internal_is_clarions_own_folder_alone(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    assert workspace.internal(".Clarion/intents/x/intent.json") == ".Clarion/intents/x/intent.json"
    assert workspace.internal(".git/config") is None
    assert workspace.internal("clarion/notes.md") is None
