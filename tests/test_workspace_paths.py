"""Paths no filesystem can hold fail their step at once (no retries), and path errors never
show where the server keeps its workspace."""

from __future__ import annotations

import json

import pytest
from conftest_server import create_workflow, start_run, wait_run

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
