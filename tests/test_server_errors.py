"""Every failure is ``{"error": {"code", "message", "details"}}`` with the right status, never a 500 for input."""

from __future__ import annotations

import pytest
from conftest_server import (
    ECHO_WORKFLOW,
    SLEEP_30_WORKFLOW,
    create_workflow,
    start_run,
    wait_event,
    wait_run,
)


def assert_error(reply, status: int, code: str) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    assert set(reply.body) == {"error"}
    assert set(reply.body["error"]) == {"code", "message", "details"}
    assert reply.body["error"]["code"] == code
    return reply.body["error"]


async def test_malformed_json_body_is_400(api):
    assert_error(await api("POST", "workflows", body='{"name": "x",'), 400, "bad_request")


async def test_malformed_yaml_body_is_400(api):
    reply = await api("POST", "workflows", body="name: [unclosed", headers={"Content-Type": "application/yaml"})
    assert "YAML" in assert_error(reply, 400, "bad_request")["message"]


async def test_body_of_another_media_type_is_415(api):
    reply = await api("POST", "workflows", body="<workflow/>", headers={"Content-Type": "application/xml"})
    assert_error(reply, 415, "unsupported_media_type")


async def test_body_that_is_not_an_object_is_400(api):
    assert_error(await api("POST", "agents", body="[1, 2]"), 400, "bad_request")


@pytest.mark.parametrize(
    "path", [("runs", "nope"), ("agents", "nope"), ("workflows", "nope"), ("runs", "nope", "events")]
)
async def test_unknown_id_is_404(api, path):
    assert_error(await api("GET", *path), 404, "not_found")


async def test_unknown_path_under_the_api_is_404_json(api):
    assert_error(await api("GET", "no", "such", "thing"), 404, "not_found")


async def test_run_of_unknown_workflow_is_404(api):
    assert_error(await api("POST", "workflows", "nope", "run", body={}), 404, "not_found")


async def test_duplicate_workflow_id_is_409(api):
    await create_workflow(api, ECHO_WORKFLOW)
    assert_error(await api("POST", "workflows", body=ECHO_WORKFLOW), 409, "conflict")


async def test_deleting_a_workflow_with_an_active_run_is_409(api):
    await create_workflow(api, SLEEP_30_WORKFLOW)
    run_id = await start_run(api, "long")
    await wait_event(api, run_id, "step_started", "nap")
    assert_error(await api("DELETE", "workflows", "long"), 409, "conflict")
    await api("POST", "runs", run_id, "cancel")
    await wait_run(api, run_id)


async def test_cancelling_a_finished_run_is_409(api):
    await create_workflow(api, ECHO_WORKFLOW)
    run_id = await start_run(api, "echo")
    await wait_run(api, run_id)
    error = assert_error(await api("POST", "runs", run_id, "cancel"), 409, "conflict")
    assert error["details"]["status"] == "succeeded"


@pytest.mark.clarion(max_body_bytes=1024)
async def test_body_over_the_limit_is_413(api):
    big = {**ECHO_WORKFLOW, "description": "x" * 2048}
    error = assert_error(await api("POST", "workflows", body=big), 413, "payload_too_large")
    assert error["details"]["limit"] == 1024


async def test_invalid_workflow_is_422_listing_every_problem_by_step(api):
    workflow = {
        "name": "Broken",
        "steps": [
            {"id": "a", "task": "no_such_task"},
            {"id": "b", "task": "echo", "needs": ["ghost"], "with": {"value": 1}},
            {"id": "c", "task": "echo", "with": {"value": "{{ steps.zzz.output }}"}},
        ],
    }
    problems = assert_error(await api("POST", "workflows", body=workflow), 422, "invalid")["details"]
    assert {"a", "b", "c"} <= {p.get("step") for p in problems}


@pytest.mark.clarion(max_steps=3)
async def test_workflow_over_max_steps_is_422(api):
    workflow = {"name": "Long", "steps": [{"id": f"s{i}", "task": "echo", "with": {"value": i}} for i in range(4)]}
    error = assert_error(await api("POST", "workflows", body=workflow), 422, "invalid")
    assert "limit of 3" in error["message"]


async def test_missing_required_input_is_422(api):
    await create_workflow(api, {**ECHO_WORKFLOW, "inputs": {"word": {"type": "string"}}})
    problems = assert_error(await api("POST", "workflows", "echo", "run", body={}), 422, "invalid")["details"]
    assert any("word" in p["loc"] for p in problems)


async def test_run_request_with_wrong_shape_is_422(api):
    await create_workflow(api, ECHO_WORKFLOW)
    reply = await api("POST", "workflows", "echo", "run", body={"inputs": 5, "extra": True})
    assert len(assert_error(reply, 422, "invalid")["details"]) == 2


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"status": "sleeping"}])
async def test_bad_list_query_is_400(api, params):
    assert_error(await api("GET", "runs", params=params), 400, "bad_request")


async def test_bad_since_is_400(api):
    await create_workflow(api, ECHO_WORKFLOW)
    run_id = await start_run(api, "echo")
    assert_error(await api("GET", "runs", run_id, "events", params={"since": -1}), 400, "bad_request")


async def test_wrong_method_is_405_json_naming_the_allowed_ones(api):
    reply = await api("DELETE", "tasks")
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET"


async def test_unexpected_server_error_is_500_json_without_details(api, clarion, monkeypatch):

    def broken() -> list:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(clarion.engine.registry, "describe", broken)
    reply = await api("GET", "tasks")
    error = assert_error(reply, 500, "internal")
    assert "secret internals" not in str(reply.body) and "Traceback" not in str(reply.body)
    assert error["details"] is None


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=b0und"],
    ids=["no boundary", "no final boundary"],
)
async def test_a_malformed_form_upload_is_400_not_500(api, content_type):
    reply = await api("POST", "agents", "import", body=b"--b0und\r\nnot a part", headers={"Content-Type": content_type})
    assert reply.status == 400, reply.body
    assert reply.body["error"]["code"] == "bad_request"
    assert "not a valid form upload" in reply.body["error"]["message"]
