"""The Python Client against a real Jupyter server running the Clarion extension."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_server import ECHO_WORKFLOW, SLEEP_30_WORKFLOW, SLEEPY_WORKFLOW

from clarion_jupyter.agent.models import Agent
from clarion_jupyter.api import ClarionAPIError, Client
from clarion_jupyter.core.errors import ClarionError, Conflict, NotFound, ValidationFailed
from clarion_jupyter.core.protocol import EventType, RunStatus
from clarion_jupyter.storage.records import StoredDocument
from clarion_jupyter.workflow.models import WorkflowRun

AGENT = {
    "name": "Triager",
    "model": "openai/gpt-4o",
    "system_prompt": "Sort bug reports.",
    "parameters": {"temperature": 0},
}
WORKFLOW_YAML = """\
# A comment the server keeps with the source
id: greet
name: Greet
inputs:
  who: {type: string}
steps:
  - id: hello
    task: echo
    with: {value: "hello {{ inputs.who }}"}
outputs:
  greeting: "{{ steps.hello.output.value }}"
"""
V2_AGENT = """\
type: Agent
metadata: {name: Reviewer}
properties:
  system_prompt: Review the diff.
  llm_config: {provider: Anthropic, model: claude-3-5-sonnet-latest}
"""


@pytest.fixture
def client(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> Iterator[Client]:
    """A Client of the test server (``http_server`` makes it listen; pytest-jupyter has no async fixtures)."""
    client = Client(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token)
    yield client
    client.close()


async def test_health_and_tasks(client: Client) -> None:
    health = await client.health()
    assert health["status"] == "ok"
    assert {"echo", "file_read", "file_write", "shell", "llm_call"} <= {
        task["name"] for task in await client.task_types()
    }


async def test_agent_crud_round_trip(client: Client) -> None:
    created = await client.create_agent(AGENT)
    assert isinstance(created, Agent) and created.id == "triager"
    assert await client.get_agent("triager") == created
    assert [a.id for a in await client.list_agents()] == ["triager"]

    updated = await client.replace_agent("triager", AGENT | {"system_prompt": "Sort them faster."})
    assert updated.system_prompt == "Sort them faster."
    assert (await client.get_agent("triager")).system_prompt == "Sort them faster."

    await client.delete_agent("triager")
    assert await client.list_agents() == []
    with pytest.raises(NotFound) as missing:
        await client.get_agent("triager")
    assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_import_agents(client: Client) -> None:
    report = await client.import_agents(V2_AGENT.encode())
    assert [a["model"] for a in report["agents"]] == ["anthropic/claude-3-5-sonnet-latest"]
    assert (await client.get_agent("reviewer")).system_prompt == "Review the diff."


async def test_import_agents_from_a_path_uploads_the_files_there(client: Client, tmp_path: Any) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "reviewer.yml").write_text(V2_AGENT)
    report = await client.import_agents(tmp_path / "agents")
    assert [(c["id"], c["source"]) for c in report["changes"]] == [("reviewer", "reviewer.yml")]


async def test_workflow_crud_round_trip(client: Client) -> None:
    created = await client.create_workflow(WORKFLOW_YAML)
    assert isinstance(created, StoredDocument) and created.id == "greet"
    assert created.source == WORKFLOW_YAML
    assert (await client.get_workflow("greet")).doc["steps"] == created.doc["steps"]

    updated = await client.replace_workflow("greet", created.doc | {"name": "Greet v2"})
    assert updated.doc["name"] == "Greet v2"
    assert updated.updated_at > created.updated_at
    assert [w.doc["name"] for w in await client.list_workflows()] == ["Agent run", "Greet v2"]

    await client.delete_workflow("greet")
    assert [w.id for w in await client.list_workflows()] == ["agent-run"]
    with pytest.raises(NotFound) as missing:
        await client.delete_workflow("greet")
    assert missing.value.status == 404


async def test_run_and_wait(client: Client) -> None:
    await client.create_workflow(WORKFLOW_YAML)
    run_id = await client.submit_saved("greet", {"who": "Ada"})
    run = await client.wait(run_id)
    assert isinstance(run, WorkflowRun) and run.run_id == run_id
    assert run.status == RunStatus.succeeded
    assert run.outputs == {"greeting": "hello Ada"}
    assert await client.get_run(run_id) == run
    assert await client.wait(run_id) == run  # an ended run answers at once


async def test_idempotent_run(client: Client) -> None:
    await client.create_workflow(ECHO_WORKFLOW)
    first = await client.submit_saved("echo", idempotency_key="once")
    assert await client.submit_saved("echo", idempotency_key="once") == first
    assert await client.submit_saved("echo") != first


async def test_subscribe_from_zero_is_gap_free_and_ends_with_the_terminal_event(client: Client) -> None:
    await client.create_workflow(SLEEPY_WORKFLOW)
    run_id = await client.submit_saved("sleepy")
    events = [event async for event in client.subscribe(run_id)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == EventType.run_queued
    assert events[-1].type == EventType.workflow_succeeded
    assert events == await client.events(run_id)


async def test_watch_follows_every_run(client: Client) -> None:
    await client.create_workflow(ECHO_WORKFLOW)
    feed = client.watch()
    first = asyncio.ensure_future(anext(feed))  # connects the feed before the runs start
    await asyncio.sleep(0.2)
    run_ids = {await client.submit_saved("echo"), await client.submit_saved("echo")}
    ended: set[str] = set()
    event = await asyncio.wait_for(first, 10)
    while True:
        if event.type == EventType.workflow_succeeded:
            ended.add(event.run_id)
        if ended == run_ids:
            break
        event = await asyncio.wait_for(anext(feed), 10)
    await feed.aclose()
    assert ended == run_ids


async def test_subscribe_resumes_with_since(client: Client) -> None:
    await client.create_workflow(ECHO_WORKFLOW)
    run_id = await client.submit_saved("echo")
    everything = [event async for event in client.subscribe(run_id)]
    later = [event async for event in client.subscribe(run_id, since=3)]
    assert later == everything[3:]
    assert await client.events(run_id, since=3) == later


@pytest.mark.parametrize(("code", "reason"), [(4008, "client fell behind"), (1001, "server going away")])
async def test_subscribe_reconnects_transparently(client: Client, clarion: Any, code: int, reason: str) -> None:
    """The server drops the socket mid-run (overflow, restart): the caller still sees every event once."""
    await client.create_workflow(SLEEPY_WORKFLOW)
    run_id = await client.submit_saved("sleepy")
    events, drops = [], 0
    async for event in client.subscribe(run_id):
        events.append(event)
        if event.type == EventType.step_completed and drops < 2:
            drops += 1
            for socket in list(clarion.sockets):  # drop them as an overflow or a restart would
                socket.close(code, reason)
    assert drops == 2
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == EventType.workflow_succeeded
    assert events == await client.events(run_id)


async def test_cancel(client: Client) -> None:
    await client.create_workflow(SLEEP_30_WORKFLOW)
    run_id = await client.submit_saved("long")
    async for event in client.subscribe(run_id):
        if event.type == EventType.step_started:
            break
    await client.cancel(run_id)
    run = await asyncio.wait_for(client.wait(run_id), 20)
    assert run.status == RunStatus.cancelled
    with pytest.raises(Conflict) as ended:
        await client.cancel(run_id)
    assert (ended.value.status, ended.value.code) == (409, "conflict")


async def test_errors_raise_with_status_and_code(
    client: Client, jp_serverapp: Any, jp_http_port: int, jp_base_url: str
) -> None:
    async def error_of(call: Any) -> ClarionAPIError:
        with pytest.raises(ClarionAPIError) as caught:
            await call
        assert isinstance(caught.value, ClarionError)
        return caught.value

    missing = await error_of(client.get_run("0" * 26))
    assert (missing.status, missing.code) == (404, "not_found")
    assert (await error_of(client.submit_saved("no-such-workflow"))).status == 404

    invalid = await error_of(
        client.create_workflow({"name": "dup", "steps": [{"id": "a", "task": "echo"}, {"id": "a", "task": "echo"}]})
    )
    assert (invalid.status, invalid.code) == (422, "invalid")
    assert isinstance(invalid, ValidationFailed)
    assert any(problem.step == "a" for problem in invalid.problems)

    await client.create_agent(AGENT)
    taken = await error_of(client.create_agent(AGENT))
    assert (taken.status, taken.code) == (409, "conflict")

    await client.create_workflow(WORKFLOW_YAML)
    no_input = await error_of(client.submit_saved("greet"))
    assert (no_input.status, no_input.code) == (422, "invalid")

    bad_filter = await error_of(client.list_runs(status="exploded"))
    assert (bad_filter.status, bad_filter.code) == (400, "bad_request")

    unknown = await error_of(anext(client.subscribe("0" * 26)))
    assert unknown.status == 404

    async with Client(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", "wrong-token") as stranger:
        refused = await error_of(stranger.health())
    assert refused.status in (401, 403)

    async with Client("http://127.0.0.1:9/", jp_serverapp.identity_provider.token, timeout=2) as nowhere:
        assert (await error_of(nowhere.health())).status == 599


async def test_iter_runs_follows_cursors(client: Client) -> None:
    await client.create_workflow(ECHO_WORKFLOW)
    await client.create_workflow(WORKFLOW_YAML)
    started = [await client.submit_saved("echo", {"word": str(i)}) for i in range(7)]
    other = await client.submit_saved("greet", {"who": "Ada"})
    for run_id in (*started, other):
        await client.wait(run_id)

    runs, cursor = await client.list_runs(workflow_id="echo", limit=3)
    assert len(runs) == 3 and cursor

    listed = [run.run_id async for run in client.iter_runs(workflow_id="echo", page_size=3)]
    assert listed == started[::-1]  # newest first, every page
    assert [run.run_id async for run in client.iter_runs(page_size=2)] == [other, *started[::-1]]
    assert [run.run_id async for run in client.iter_runs(status="failed")] == []


async def test_a_folder_uploaded_as_files_is_imported_with_each_file_named_in_the_report(client: Client) -> None:
    good = b"name: Folder reviewer\nmodel: openai/gpt-4o\nsystem_prompt: Review.\n"
    report = await client.import_agents([("agents/reviewer.yaml", good), ("agents/broken.yaml", b"name: [unclosed\n")])
    assert [(c["id"], c["source"]) for c in report["changes"]] == [("folder-reviewer", "agents/reviewer.yaml")]
    assert [e["source"] for e in report["errors"]] == ["agents/broken.yaml"]


async def test_a_document_runs_without_being_saved(client: Client) -> None:
    """``submit`` is an ad-hoc run: the run holds what ran, the saved workflows stay as they were."""
    await client.create_workflow(WORKFLOW_YAML)
    edited = WORKFLOW_YAML.replace("hello {{", "howdy {{")
    run = await client.wait(await client.submit(edited, {"who": "Ada"}))
    assert run.outputs == {"greeting": "howdy Ada"}
    assert run.workflow_id == "greet" and run.workflow["steps"][0]["with"]["value"].startswith("howdy")
    assert (await client.get_workflow("greet")).source == WORKFLOW_YAML
    assert [w.id for w in await client.list_workflows()] == ["agent-run", "greet"]


async def test_an_invalid_document_is_refused_with_the_same_problems_as_a_save(client: Client) -> None:
    document = {"name": "dup", "steps": [{"id": "a", "task": "echo"}, {"id": "a", "task": "nope"}]}
    with pytest.raises(ValidationFailed) as on_run:
        await client.submit(document)
    with pytest.raises(ValidationFailed) as on_save:
        await client.create_workflow(document)
    assert on_run.value.problems == on_save.value.problems
    assert await client.list_runs() == ([], None)
