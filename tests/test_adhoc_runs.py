"""``POST /api/v3/runs``: a document runs as sent, validated as a saved one, and nothing is saved."""

from __future__ import annotations

from typing import Any

from conftest_server import ECHO_WORKFLOW, create_workflow, wait_run

YAML_TEXT = """\
id: adhoc
name: Ad hoc
inputs:
  who: {type: string}
steps:
  - id: hello
    task: echo
    with: {value: "hello {{ inputs.who }}"}
outputs:
  greeting: "{{ steps.hello.output.value }}"
"""
INVALID = {"name": "Broken", "steps": [{"id": "a", "task": "echo"}, {"id": "a", "task": "nope", "needs": ["ghost"]}]}


async def saved_ids(api: Any) -> list[str]:
    return [w["id"] for w in (await api("GET", "workflows")).body["workflows"]]


async def test_a_document_runs_with_202_and_a_location_and_is_not_saved(api):
    reply = await api("POST", "runs", body={"workflow": ECHO_WORKFLOW, "inputs": {"word": "hi"}})
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "queued"
    assert reply.headers["Location"].endswith(f"/api/v3/runs/{reply.body['run_id']}")
    run = await wait_run(api, reply.body["run_id"])
    assert (run["status"], run["workflow_id"]) == ("succeeded", "echo")
    assert run["workflow"]["steps"] == ECHO_WORKFLOW["steps"]
    assert await saved_ids(api) == ["agent-run"]


async def test_yaml_text_runs_as_written(api):
    reply = await api("POST", "runs", body={"workflow": YAML_TEXT, "inputs": {"who": "Ada"}})
    assert reply.status == 202, reply.body
    run = await wait_run(api, reply.body["run_id"])
    assert (run["workflow_id"], run["outputs"]) == ("adhoc", {"greeting": "hello Ada"})


async def test_running_a_document_with_a_saved_id_leaves_the_saved_one_as_it_was(api):
    await create_workflow(api, ECHO_WORKFLOW)
    before = (await api("GET", "workflows", "echo")).body
    changed = ECHO_WORKFLOW | {"name": "Changed in a cell"}
    run = await wait_run(api, (await api("POST", "runs", body={"workflow": changed})).body["run_id"])
    assert run["workflow"]["name"] == "Changed in a cell"
    assert (await api("GET", "workflows", "echo")).body == before


async def test_an_invalid_document_gets_the_same_422_problems_as_saving_it(api):
    on_run = await api("POST", "runs", body={"workflow": INVALID})
    on_save = await api("POST", "workflows", body=INVALID)
    assert on_run.status == on_save.status == 422
    assert on_run.body["error"]["details"] == on_save.body["error"]["details"]
    assert {p.get("step") for p in on_run.body["error"]["details"]} >= {"a"}
    assert (await api("GET", "runs")).body["runs"] == []


async def test_missing_inputs_and_a_missing_document_are_422_naming_the_field(api):
    no_input = await api("POST", "runs", body={"workflow": YAML_TEXT})
    assert no_input.status == 422 and "who" in no_input.body["error"]["message"]
    no_document = await api("POST", "runs", body={"inputs": {}})
    assert no_document.status == 422
    assert [p["loc"] for p in no_document.body["error"]["details"]] == ["workflow"]


async def test_an_idempotency_key_answers_the_first_run_again(api):
    body = {"workflow": ECHO_WORKFLOW, "idempotency_key": "once"}
    first = (await api("POST", "runs", body=body)).body["run_id"]
    assert (await api("POST", "runs", body=body)).body["run_id"] == first
    assert (await api("POST", "runs", body={"workflow": ECHO_WORKFLOW})).body["run_id"] != first
