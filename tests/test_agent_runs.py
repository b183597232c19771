"""Agent runs over REST, on a real server with litellm's mock_response: v2's "run this agent on
these files, review the diff, apply it", as a run of the built-in ``agent-run`` workflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api, wait_event, wait_run

from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.clarion_v2 import go_json, v2_agent
from clarion_jupyter.workflow.agent_run import FILE_OPERATIONS_SCHEMA


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


# --- what reaches the model: files chosen by hand, the context's size ------------------------


def plain_agent(stub: OpenAIStubServer, **fields: Any) -> dict[str, Any]:
    """An agent with no output schema, answering through the local stub (no key needed)."""
    return {"id": "plain", "name": "Plain", "model": "openai/local", "api_base": stub.url, **fields}


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(reply=json.dumps({"summary": "Created hello.txt", "file_changes": HELLO})) as server:
        yield server


@pytest.fixture
def credentials(workspace: Path) -> Path:
    (workspace / ".env").write_text("OPENAI_API_KEY=sk-live-0000\n")
    (workspace / ".ssh").mkdir()
    (workspace / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (workspace / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (workspace / ".env.local").write_text("TOKEN=1\n")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "notes.txt").symlink_to("../.env")
    return workspace


CREDENTIAL_PICKS = [".env", ".ssh/id_rsa", "server.pem", ".env.local", "sub/notes.txt"]


@pytest.mark.parametrize("endpoint", ["run", "prompt"])
async def test_credential_files_picked_by_hand_are_refused_naming_each(
    api: Api, credentials: Path, stub: OpenAIStubServer, endpoint: str
) -> None:
    assert (await api("POST", "agents", body=plain_agent(stub))).status == 201
    body = {"prompt": "Review", "files": ["README.md", *CREDENTIAL_PICKS]}

    reply = await api("POST", "agents", "plain", endpoint, body=body)

    assert reply.status == 422
    problems = {p["field"]: p["message"] for p in reply.body["error"]["details"]}
    assert sorted(problems) == [f"files.{i}" for i in range(1, 6)]
    assert "holds credentials (.env): it is never sent to a model" in problems["files.5"]
    assert stub.request_count == 0


@pytest.mark.parametrize("endpoint", ["run", "prompt"])
async def test_a_symlink_loop_or_an_unknown_home_in_files_is_a_422_naming_the_path(
    api: Api, workspace: Path, stub: OpenAIStubServer, endpoint: str
) -> None:
    (workspace / "loop.txt").symlink_to(workspace / "loop.txt")
    assert (await api("POST", "agents", body=plain_agent(stub))).status == 201

    reply = await api("POST", "agents", "plain", endpoint, body={"prompt": "x", "files": ["loop.txt", "~nosuchuser/x"]})

    assert reply.status == 422
    messages = [p["message"] for p in reply.body["error"]["details"]]
    assert messages[0].startswith("path 'loop.txt' cannot be resolved: Symlink loop")
    assert messages[1].startswith("path '~nosuchuser/x' cannot be resolved")
    assert str(workspace) not in json.dumps(reply.body)


async def test_a_change_to_an_unresolvable_path_fails_the_apply_step_naming_it(api: Api, workspace: Path) -> None:
    bad = [{"action": "create", "path": "~nosuchuser/x", "new_content": "hi\n"}]
    run = await wait_run(api, (await run_agent(api, BODY, editor(bad))).body["run_id"])

    assert run["status"] == "failed"
    apply = {s["key"]: s for s in run["steps"]}["apply"]
    assert apply["status"] == "failed" and "~nosuchuser/x" in apply["error"]["message"]
    assert "internal engine error" not in json.dumps(run)


async def test_the_prompt_lists_the_context_files_with_bytes_and_tokens_and_the_cap(
    api: Api, workspace: Path, stub: OpenAIStubServer
) -> None:
    (workspace / "app.py").write_text("print('hi')\n")
    (workspace / "app.js.map").write_text('{"mappings": "AAAA"}')
    (workspace / ".ipynb_checkpoints").mkdir()
    (workspace / ".ipynb_checkpoints" / "nb-checkpoint.ipynb").write_text("{}")
    (workspace / "poetry.lock").write_text("[[package]]\n")
    agent = plain_agent(stub, context={"exclude_globs": ["*.md"], "max_tokens": 50_000})
    assert (await api("POST", "agents", body=agent)).status == 201

    reply = await api("POST", "agents", "plain", "prompt", body={"prompt": "x", "files": ["README.md"]})

    assert reply.status == 200
    context = reply.body["context"]
    assert [(f["path"], f["bytes"]) for f in context["files"]] == [("app.py", 12), ("README.md", 15)]
    assert all(f["tokens"] > 0 for f in context["files"])
    assert context["tokens"] == sum(f["tokens"] for f in context["files"])
    assert context["max_tokens"] == 50_000 and context["problem"] is None
    assert stub.request_count == 0


async def test_the_prompt_says_when_the_context_is_over_its_cap(
    api: Api, workspace: Path, stub: OpenAIStubServer
) -> None:
    (workspace / "big.txt").write_text("word " * 5_000)
    assert (await api("POST", "agents", body=plain_agent(stub, context={"max_tokens": 100}))).status == 201

    context = (await api("POST", "agents", "plain", "prompt", body={"prompt": "x"})).body["context"]

    assert context["tokens"] > 100 and context["problem"].startswith("the codebase context is ")


async def test_an_agent_without_a_schema_is_asked_for_file_operations_and_its_changes_apply(
    api: Api, workspace: Path, stub: OpenAIStubServer
) -> None:
    assert (await api("POST", "agents", body=plain_agent(stub))).status == 201

    reply = await api("POST", "agents", "plain", "run", body={"prompt": "Create hello.txt", "apply": "auto"})
    run = await wait_run(api, reply.body["run_id"])

    assert run["status"] == "succeeded" and run["outputs"]["applied"] is True
    assert stub.last_request is not None
    assert set(stub.last_request["response_format"]["json_schema"]["schema"]["properties"]) == {
        "summary",
        "file_changes",
    }
    assert (workspace / "hello.txt").read_text() == "hi\n"


async def test_file_changes_that_cannot_be_used_fail_the_reply_saying_why(api: Api, workspace: Path) -> None:
    broken = {"summary": "oops", "file_changes": [{"action": "create", "new_content": "hi\n"}]}
    agent = editor([], output_schema=None, parameters={"mock_response": json.dumps(broken)})
    run = await wait_run(api, (await run_agent(api, BODY, agent)).body["run_id"])

    reply = {s["key"]: s for s in run["steps"]}["reply"]
    assert reply["status"] == "failed"
    assert (
        "reply does not match the output schema at file_changes/0: 'path' is a required property"
        in (reply["error"]["message"])
    )


async def test_discarding_the_changes_ends_the_run_succeeded_with_apply_skipped(api: Api, workspace: Path) -> None:
    run_id = (await run_agent(api, BODY)).body["run_id"]
    await wait_event(api, run_id, "approval_requested", "apply")

    decided = await api("POST", "runs", run_id, "approvals", "apply", body={"decision": "reject", "comment": "no"})
    run = await wait_run(api, run_id)

    assert decided.status < 300
    assert run["status"] == "succeeded" and run["outputs"]["applied"] is False
    assert {s["key"]: s["status"] for s in run["steps"]}["apply"] == "skipped"
    assert not (workspace / "hello.txt").exists()


async def test_an_imported_v2_agent_with_only_excludes_is_bounded_and_previewed_before_any_call(
    api: Api, workspace: Path
) -> None:
    """Clarion v2's `include_globs: []` with excludes selects the whole root: the generated part
    of a Jupyter root stays out, and what is left is over the cap, said before the run calls."""
    (workspace / ".ipynb_checkpoints").mkdir()
    (workspace / ".ipynb_checkpoints" / "analysis-checkpoint.ipynb").write_text('{"cells": []}')
    (workspace / "lab" / "static").mkdir(parents=True)
    (workspace / "lab" / "static" / "remoteEntry.js.map").write_text('{"mappings": "' + "AAAA;" * 40_000 + '"}')
    (workspace / "yarn.lock").write_text("# yarn lockfile v1\n" * 500)
    (workspace / "data.csv").write_text("id,value\n" + "".join(f"{i},{i * 7 % 13}\n" for i in range(60_000)))
    v2 = v2_agent("importer", "Importer", exclude_globs=["*.md"], model="gpt-4o-mini")
    assert (await api("POST", "agents", "import", body=go_json(v2))).status == 201

    preview = (await api("POST", "agents", "importer", "prompt", body={"prompt": "One-line fix"})).body["context"]

    assert [f["path"] for f in preview["files"]] == ["data.csv"]
    assert preview["max_tokens"] == 64_000 and preview["tokens"] > preview["max_tokens"]
    assert "data.csv" in preview["problem"]
    run = await wait_run(
        api, (await api("POST", "agents", "importer", "run", body={"prompt": "One-line fix"})).body["run_id"]
    )
    reply = {s["key"]: s for s in run["steps"]}["reply"]
    assert run["status"] == "failed" and reply["error"]["message"] == preview["problem"]  # not the model's 401
