"""Agent runs over REST, on a real server with litellm's mock_response: v2's "run this agent on
these files, review the diff, apply it", as a run of the built-in ``agent-run`` workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api, wait_event, wait_run

FILE_OPERATIONS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["summary", "file_changes"],
    "properties": {
        "summary": {"type": "string"},
        "file_changes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["action", "path", "new_content"],
                "properties": {
                    "action": {"type": "string", "enum": ["create", "modify", "delete"]},
                    "path": {"type": "string"},
                    "new_content": {"type": "string"},
                },
            },
        },
    },
}


def editor(changes: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    reply = {"summary": "Created hello.txt", "file_changes": changes}
    return {
        "id": "basic_editor",
        "name": "Basic editor",
        "model": "openai/gpt-4o-mini",
        "system_prompt": "You edit files for {{ project }}.",
        "parameters": {"mock_response": json.dumps(reply)},
        "output_schema": FILE_OPERATIONS_SCHEMA,
        "user_variables": [{"name": "project", "required": True}],
        **fields,
    }


HELLO = [{"action": "create", "path": "hello.txt", "new_content": "hi\n"}]


@pytest.fixture
def workspace(jp_root_dir: Path) -> Path:
    (jp_root_dir / "README.md").write_text("# Demo project\n")
    return jp_root_dir


async def run_agent(api: Api, body: dict[str, Any], agent: dict[str, Any] | None = None) -> Any:
    assert (await api("POST", "agents", body=agent or editor(HELLO))).status == 201
    return await api("POST", "agents", "basic_editor", "run", body=body)


BODY = {"prompt": "Create hello.txt saying hi", "files": ["README.md"], "variables": {"project": "demo"}}


async def test_an_agent_run_waits_with_the_diff_of_its_changes_then_applies_them(api: Api, workspace: Path) -> None:
    reply = await run_agent(api, BODY)
    assert reply.status == 202 and reply.headers["Location"].endswith(reply.body["run_id"])
    run_id = reply.body["run_id"]
    await wait_event(api, run_id, "approval_requested", "apply")
    run = (await api("GET", "runs", run_id)).body
    assert run["workflow_id"] == "agent-run" and run["status"] == "waiting"
    (approval,) = run["approvals"]
    assert approval["preview"]["files"] == [
        {"path": "hello.txt", "action": "create", "diff": "--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1 @@\n+hi\n"}
    ]
    assert not (workspace / "hello.txt").exists()
    await api("POST", "runs", run_id, "approvals", "apply", body={"decision": "approve"})
    run = await wait_run(api, run_id)
    assert run["status"] == "succeeded"
    assert run["outputs"]["applied"] is True and run["outputs"]["json"]["summary"] == "Created hello.txt"
    assert (workspace / "hello.txt").read_text() == "hi\n"


async def test_apply_auto_writes_the_changes_without_asking(api: Api, workspace: Path) -> None:
    run = await wait_run(api, (await run_agent(api, {**BODY, "apply": "auto"})).body["run_id"])
    assert run["status"] == "succeeded" and run["approvals"] == []
    assert (workspace / "hello.txt").read_text() == "hi\n"


async def test_apply_never_only_shows_the_reply(api: Api, workspace: Path) -> None:
    run = await wait_run(api, (await run_agent(api, {**BODY, "apply": "never"})).body["run_id"])
    assert run["status"] == "succeeded" and run["outputs"]["applied"] is False
    assert {s["key"]: s["status"] for s in run["steps"]}["apply"] == "skipped"
    assert not (workspace / "hello.txt").exists()


async def test_a_reply_without_file_changes_skips_the_apply_step(api: Api, workspace: Path) -> None:
    run = await wait_run(api, (await run_agent(api, BODY, editor([]))).body["run_id"])
    assert run["status"] == "succeeded"
    assert {s["key"]: s["status"] for s in run["steps"]} == {"reply": "succeeded", "apply": "skipped"}


async def test_an_agent_run_names_what_is_wrong_before_calling_the_model(api: Api, workspace: Path) -> None:
    reply = await run_agent(api, {"prompt": "x", "files": ["README.md", "../etc/passwd", "missing.py"]})
    assert reply.status == 422
    fields = sorted(p["field"] for p in reply.body["error"]["details"])
    assert fields == ["files.1", "files.2", "variables.project"]
    assert (await api("POST", "agents", "nobody", "run", body=BODY)).status == 404
    assert (await api("POST", "agents", "basic_editor", "run", body={"prompt": ""})).status == 422


async def test_the_prompt_endpoint_shows_the_exact_messages_and_their_tokens(api: Api, workspace: Path) -> None:
    agent = editor(HELLO, parameters={}, api_base="http://127.0.0.1:9/v1")  # a call would fail: none is made
    assert (await api("POST", "agents", body=agent)).status == 201
    reply = await api("POST", "agents", "basic_editor", "prompt", body=BODY)
    assert reply.status == 200
    system, user = reply.body["messages"]
    assert system["role"] == "system" and system["content"].startswith("You edit files for demo.")
    assert "## Codebase Context" in system["content"] and "```README.md\n# Demo project\n```" in system["content"]
    assert user == {"role": "user", "content": "Create hello.txt saying hi"}
    assert reply.body["response_format"]["json_schema"]["schema"] == FILE_OPERATIONS_SCHEMA
    assert reply.body["tokens"] > 10 and reply.body["model"] == "openai/gpt-4o-mini"


async def test_the_agent_run_workflow_is_an_ordinary_stored_workflow(api: Api, workspace: Path) -> None:
    listed = [w["id"] for w in (await api("GET", "workflows")).body["workflows"]]
    assert "agent-run" in listed
