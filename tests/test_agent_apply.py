"""What an agent's file changes may do to the workspace, on a real server: never write `.git`
or credentials (whatever the reply says, auto or reviewed), and re-running a prompt whose
file exists shows and applies a modify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api, create_workflow, start_run, wait_event, wait_run
from pydantic import ValidationError
from test_agent_runs import BODY, editor

from clarion_jupyter.workflow.models import Step

HOSTILE = [
    {"action": "create", "path": "harmless.txt", "new_content": "x\n"},
    {"action": "modify", "path": ".git/config", "new_content": "[core]\n\tfsmonitor = touch /tmp/x\n"},
]


@pytest.fixture
def workspace(jp_root_dir: Path) -> Path:
    (jp_root_dir / "README.md").write_text("# Demo project\n")
    (jp_root_dir / ".git").mkdir()
    (jp_root_dir / ".git" / "config").write_text("[core]\n")
    return jp_root_dir


async def agent_run(api: Api, changes: list[dict[str, Any]], apply: str) -> str:
    assert (await api("POST", "agents", body=editor(changes))).status == 201
    return (await api("POST", "agents", "basic_editor", "run", body={**BODY, "apply": apply})).body["run_id"]


def apply_step(run: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["key"] == "apply")


@pytest.mark.parametrize("apply", ["auto", "review"])
async def test_a_reply_that_writes_git_config_fails_its_step_and_writes_nothing(
    api: Api, workspace: Path, apply: str
) -> None:
    run = await wait_run(api, await agent_run(api, HOSTILE, apply))
    assert run["status"] == "failed" and run["approvals"] == []
    error = apply_step(run)["error"]
    assert "'.git/config' is a protected path" in error["message"] and "allow_protected: true" in error["message"]
    if apply == "review":  # refused in the preview: nobody is asked to approve it
        assert error["code"] == "preview_failed"
    assert (workspace / ".git" / "config").read_text() == "[core]\n"
    assert not (workspace / "harmless.txt").exists()


async def test_rerunning_a_prompt_whose_file_exists_reviews_and_applies_a_modify(api: Api, workspace: Path) -> None:
    (workspace / "hello.txt").write_text("hello\n")
    run_id = await agent_run(api, [{"action": "create", "path": "hello.txt", "new_content": "hi\n"}], "review")
    await wait_event(api, run_id, "approval_requested", "apply")
    (approval,) = (await api("GET", "runs", run_id)).body["approvals"]
    assert approval["preview"]["files"] == [
        {
            "path": "hello.txt",
            "action": "modify",
            "diff": "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+hi\n",
        }
    ]
    await api("POST", "runs", run_id, "approvals", "apply", body={"decision": "approve"})
    run = await wait_run(api, run_id)
    assert run["status"] == "succeeded"
    assert apply_step(run)["output"]["written"] == [{"path": "hello.txt", "action": "modify", "bytes": 3}]
    assert (workspace / "hello.txt").read_text() == "hi\n"


async def test_a_step_allowed_to_write_protected_paths_asks_with_a_loud_warning(api: Api, workspace: Path) -> None:
    doc = {
        "id": "hooks",
        "name": "Install a hook",
        "steps": [
            {
                "id": "hook",
                "task": "file_write",
                "allow_protected": True,
                "approval": {"message": "Install the pre-commit hook?"},
                "with": {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\nmake lint\n"},
            }
        ],
    }
    run_id = await start_run(api, await create_workflow(api, doc))
    await wait_event(api, run_id, "approval_requested")
    (approval,) = (await api("GET", "runs", run_id)).body["approvals"]
    assert approval["message"].startswith("⚠ PROTECTED PATHS: this step writes .git/hooks/pre-commit")
    assert approval["message"].endswith("\n\nInstall the pre-commit hook?")
    assert approval["preview"]["files"][0]["protected"] is True
    await api("POST", "runs", run_id, "approvals", "hook", body={"decision": "approve"})
    assert (await wait_run(api, run_id))["status"] == "succeeded"
    assert (workspace / ".git" / "hooks" / "pre-commit").read_text() == "#!/bin/sh\nmake lint\n"


@pytest.mark.parametrize("value", ["{{ steps.reply.output.json.allow }}", "true", 1])
def test_allow_protected_is_a_literal_true_of_the_document(value: Any) -> None:
    """A template there would let a step's output (an agent's reply) turn it on."""
    with pytest.raises(ValidationError, match="allow_protected"):
        Step.model_validate({"id": "w", "task": "file_write", "allow_protected": value})
    assert Step.model_validate({"id": "w", "task": "echo"}).allow_protected is False
