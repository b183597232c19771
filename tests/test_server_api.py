"""The v3 REST API, against a real Jupyter server, engine and DuckDB file."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from conftest_server import (
    ECHO_WORKFLOW,
    SLEEP_30_WORKFLOW,
    Api,
    create_workflow,
    read_until_closed,
    start_run,
    wait_event,
    wait_run,
)

from clarion_jupyter.server import handlers

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
MOCK_AGENT = {
    "id": "triager",
    "name": "Triager",
    "model": "openai/gpt-4o-mini",
    "system_prompt": "You triage bug reports.",
    "parameters": {"mock_response": "bug", "temperature": 0},
}
TRIAGE_WORKFLOW = {
    "id": "triage",
    "name": "Triage",
    "inputs": {"report": {"type": "string"}},
    "steps": [
        {"id": "classify", "task": "llm_call", "with": {"agent": "triager", "prompt": "Classify: {{ inputs.report }}"}},
        {"id": "label", "task": "echo", "with": {"value": "{{ steps.classify.output.text }}"}},
    ],
    "outputs": {"label": "{{ steps.label.output.value }}"},
}
YAML_WORKFLOW = """\
name: Greet
inputs:
  who: {type: string, default: world}
steps:
  - id: hello
    task: echo
    with: {value: "hello {{ inputs.who }}"}
"""


async def test_health_reports_storage_and_queue(api):
    reply = await api("GET", "health")
    assert reply.status == 200
    assert reply.body["status"] == "ok"
    assert reply.body["storage"]["kind"] == "duckdb"
    assert reply.body["storage"]["projection_error"] is None
    assert reply.body["storage"]["unprojected_commits"] >= 0
    assert reply.body["queue"]["url"] == "local"
    assert reply.body["version"]


async def test_full_lifecycle_agent_workflow_run_websocket_result(api, jp_ws_fetch, jp_base_url):
    assert (await api("POST", "agents", body=MOCK_AGENT)).status == 201
    workflow_id = await create_workflow(api, TRIAGE_WORKFLOW)

    started = await api("POST", "workflows", workflow_id, "run", body={"inputs": {"report": "it crashes"}})
    assert started.status == 202
    assert started.body["status"] == "queued"
    run_id = started.body["run_id"]
    assert started.headers["Location"] == f"{jp_base_url}api/v3/runs/{run_id}"

    ws = await jp_ws_fetch("ws", "runs", run_id, "subscribe", params={"since": 0})
    events = await read_until_closed(ws)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_queued"
    assert events[-1]["type"] == "workflow_succeeded"
    assert ws.close_code == 1000

    run = (await api("GET", "runs", run_id)).body
    assert run["status"] == "succeeded"
    assert run["outputs"] == {"label": "bug"}
    assert {s["step_id"] for s in run["steps"]} == {"classify", "label"}


async def test_agent_crud(api, jp_base_url):
    created = await api("POST", "agents", body=MOCK_AGENT)
    assert created.headers["Location"] == f"{jp_base_url}api/v3/agents/triager"
    assert [a["id"] for a in (await api("GET", "agents")).body["agents"]] == ["triager"]
    replaced = await api("PUT", "agents", "triager", body={**MOCK_AGENT, "system_prompt": "Be brief."})
    assert replaced.status == 200
    assert (await api("GET", "agents", "triager")).body["system_prompt"] == "Be brief."
    assert (await api("DELETE", "agents", "triager")).status == 204
    assert (await api("GET", "agents", "triager")).status == 404


async def test_agent_import_returns_report_without_the_api_key(api):
    text = (FIXTURES / "code_reviewer.yaml").read_text()
    reply = await api("POST", "agents", "import", body=text, headers={"Content-Type": "application/yaml"})
    assert reply.status == 201
    assert [a["id"] for a in reply.body["agents"]] == ["code-reviewer"]
    assert "sk-proj-DO-NOT-IMPORT" not in json.dumps(reply.body)
    assert (await api("GET", "agents", "code-reviewer")).status == 200


async def test_agent_import_of_nothing_valid_is_422_with_the_errors(api):
    reply = await api("POST", "agents", "import", body="just: [a, list")
    assert reply.status == 422
    assert reply.body["error"]["code"] == "invalid"
    assert reply.body["error"]["details"]


async def test_yaml_workflow_keeps_its_source_and_timestamps(api, jp_base_url):
    created = await api("POST", "workflows", body=YAML_WORKFLOW, headers={"Content-Type": "application/yaml"})
    assert created.status == 201
    assert created.headers["Location"] == f"{jp_base_url}api/v3/workflows/greet"
    stored = (await api("GET", "workflows", "greet")).body
    assert stored["source"] == YAML_WORKFLOW
    assert stored["created_at"] and stored["updated_at"]
    assert stored["steps"][0]["id"] == "hello"


async def test_json_workflow_has_no_source(api):
    await create_workflow(api, ECHO_WORKFLOW)
    stored = (await api("GET", "workflows", "echo")).body
    assert "source" not in stored
    assert [w["id"] for w in (await api("GET", "workflows")).body["workflows"]] == ["agent-run", "echo"]


async def test_put_replaces_a_workflow(api):
    await create_workflow(api, ECHO_WORKFLOW)
    replaced = await api("PUT", "workflows", "echo", body={**ECHO_WORKFLOW, "name": "Echo twice"})
    assert replaced.status == 200
    assert (await api("GET", "workflows", "echo")).body["name"] == "Echo twice"


async def test_delete_workflow(api):
    await create_workflow(api, ECHO_WORKFLOW)
    assert (await api("DELETE", "workflows", "echo")).status == 204
    assert (await api("GET", "workflows", "echo")).status == 404


async def test_delete_run_removes_it_with_its_events(api):
    await create_workflow(api, ECHO_WORKFLOW)
    run_id = await start_run(api, "echo")
    await wait_run(api, run_id)
    assert (await api("DELETE", "runs", run_id)).status == 204
    assert (await api("GET", "runs", run_id)).status == 404
    assert (await api("GET", "runs", run_id, "events")).status == 404
    assert (await api("GET", "runs")).body["runs"] == []


async def test_delete_run_unknown_is_404(api):
    reply = await api("DELETE", "runs", "01NOSUCHRUN")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"


async def test_delete_run_not_finished_is_409_and_keeps_it(api):
    await create_workflow(api, SLEEP_30_WORKFLOW)
    run_id = await start_run(api, "long")
    await wait_event(api, run_id, "step_started", "nap")
    reply = await api("DELETE", "runs", run_id)
    assert reply.status == 409
    assert reply.body["error"]["code"] == "conflict"
    assert (await api("GET", "runs", run_id)).status == 200
    await api("POST", "runs", run_id, "cancel")
    await wait_run(api, run_id)


async def test_delete_runs_by_filter_deletes_only_the_finished_matching_ones(api):
    await create_workflow(api, ECHO_WORKFLOW)
    await create_workflow(api, {**ECHO_WORKFLOW, "id": "echo2", "name": "Echo 2"})
    await create_workflow(api, SLEEP_30_WORKFLOW)
    mine = [await wait_run(api, await start_run(api, "echo")) for _ in range(2)]
    other = await wait_run(api, await start_run(api, "echo2"))
    active = await start_run(api, "long")
    await wait_event(api, active, "step_started", "nap")

    reply = await api("DELETE", "runs", params={"workflow_id": "echo", "status": "succeeded"})
    assert reply.status == 200
    assert reply.body == {"deleted": 2}
    assert all([(await api("GET", "runs", run["run_id"])).status == 404 for run in mine])
    assert (await api("GET", "runs", other["run_id"])).status == 200
    assert (await api("DELETE", "runs", params={"workflow_id": "long"})).body == {"deleted": 0}
    assert (await api("GET", "runs", active)).body["status"] == "running"
    await api("POST", "runs", active, "cancel")
    await wait_run(api, active)


async def test_delete_runs_without_a_filter_needs_all_true(api):
    await create_workflow(api, ECHO_WORKFLOW)
    await wait_run(api, await start_run(api, "echo"))
    refused = await api("DELETE", "runs")
    assert refused.status == 400
    assert "all=true" in refused.body["error"]["message"]
    assert (await api("DELETE", "runs", params={"all": "true"})).body == {"deleted": 1}
    assert (await api("GET", "runs")).body["runs"] == []


async def test_delete_runs_with_an_unknown_status_is_400(api):
    reply = await api("DELETE", "runs", params={"status": "finished"})
    assert reply.status == 400
    assert reply.body["error"]["details"]["allowed"]


async def test_same_idempotency_key_gives_the_same_run(api):
    await create_workflow(api, ECHO_WORKFLOW)
    first = await api("POST", "workflows", "echo", "run", body={"idempotency_key": "k1"})
    again = await api("POST", "workflows", "echo", "run", body={"idempotency_key": "k1"})
    by_header = await api("POST", "workflows", "echo", "run", headers={"Idempotency-Key": "k1"})
    assert first.status == again.status == by_header.status == 202
    assert first.body["run_id"] == again.body["run_id"] == by_header.body["run_id"]
    other = await api("POST", "workflows", "echo", "run", body={"idempotency_key": "k2"})
    assert other.body["run_id"] != first.body["run_id"]


async def test_runs_list_pages_with_cursor_newest_first(api):
    await create_workflow(api, ECHO_WORKFLOW)
    run_ids = [await start_run(api, "echo", inputs={"word": str(i)}) for i in range(5)]
    seen, cursor = [], None
    while True:
        page = (await api("GET", "runs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).body
        assert len(page["runs"]) <= 2
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(run_ids))


async def test_runs_list_filters_by_workflow_and_status(api):
    await create_workflow(api, ECHO_WORKFLOW)
    await create_workflow(api, {**ECHO_WORKFLOW, "id": "echo2", "name": "Echo 2"})
    mine = await start_run(api, "echo")
    await wait_run(api, await start_run(api, "echo2"))
    await wait_run(api, mine)
    by_workflow = (await api("GET", "runs", params={"workflow_id": "echo"})).body["runs"]
    assert [r["run_id"] for r in by_workflow] == [mine]
    assert len((await api("GET", "runs", params={"status": "succeeded"})).body["runs"]) == 2
    assert (await api("GET", "runs", params={"status": "failed"})).body["runs"] == []


async def test_events_after_since(api):
    await create_workflow(api, ECHO_WORKFLOW)
    run_id = await start_run(api, "echo")
    await wait_run(api, run_id)
    events = (await api("GET", "runs", run_id, "events", params={"since": 2})).body["events"]
    assert events[0]["seq"] == 3
    assert events[-1]["type"] == "workflow_succeeded"


async def test_cancel_stops_a_running_shell_step_and_kills_it(api, jp_root_dir):
    await create_workflow(api, SLEEP_30_WORKFLOW)
    run_id = await start_run(api, "long")
    await wait_event(api, run_id, "step_started", "nap")
    pid_file = jp_root_dir / "nap.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    pid = int(pid_file.read_text())

    reply = await api("POST", "runs", run_id, "cancel")
    assert reply.status == 202
    run = await wait_run(api, run_id, timeout=5)
    assert run["status"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_tasks_lists_builtin_types_with_schemas(api):
    tasks = {t["name"]: t for t in (await api("GET", "tasks")).body["tasks"]}
    assert {"echo", "shell", "file_read", "file_write", "llm_call"} <= set(tasks)
    assert "command" in tasks["shell"]["config_schema"]["properties"]


async def test_openapi_document_is_served_as_yaml(api, tmp_path, monkeypatch):
    spec = tmp_path / "openapi.yaml"
    spec.write_text("openapi: 3.1.0\ninfo: {title: Clarion, version: '3'}\npaths: {}\n")
    monkeypatch.setattr(handlers, "OPENAPI_PATH", spec)
    reply = await api("GET", "openapi.yaml")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/yaml")


async def test_openapi_document_missing_is_404_json(api, tmp_path, monkeypatch):
    monkeypatch.setattr(handlers, "OPENAPI_PATH", tmp_path / "absent.yaml")
    reply = await api("GET", "openapi.yaml")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"


def test_shipped_jupyter_config_enables_the_extension():
    config = Path(__file__).parents[1] / "jupyter-config" / "jupyter_server_config.d" / "clarion_jupyter.json"
    assert json.loads(config.read_text()) == {"ServerApp": {"jpserver_extensions": {"clarion_jupyter": True}}}


@pytest.mark.clarion(allow_shell=False)
async def test_a_shell_workflow_is_refused_at_save_when_shell_is_off(api: Api) -> None:
    doc = {"id": "sh", "name": "Sh", "steps": [{"id": "s", "task": "shell", "with": {"command": "true"}}]}
    reply = await api("POST", "workflows", body=doc)
    assert reply.status == 422
    assert reply.body["error"]["details"][0] == {
        "loc": "step 's' field 'task'",
        "message": "shell steps are disabled on this server (allow_shell=False)",
        "step": "s",
        "field": "task",
    }


@pytest.mark.clarion(max_steps=2)
async def test_too_many_steps_are_refused_at_save_as_at_run(api: Api) -> None:
    doc = {"id": "big", "name": "Big", "steps": [{"id": f"s{i}", "task": "echo"} for i in range(3)]}
    assert (await api("POST", "workflows", body=doc)).status == 422


def test_the_server_and_the_engine_share_one_max_steps_default() -> None:
    from clarion_jupyter import Engine
    from clarion_jupyter.server.app import ClarionExtension

    engine_default = Engine.__init__.__kwdefaults__["max_steps"]
    assert ClarionExtension.max_steps.default_value == engine_default
