"""The one interface: the engine in process and the client of a real server answer every call
alike (names, signatures, return models, exceptions), so code written against one runs on the other."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.agent.models import Agent
from clarion_jupyter.api import Clarion, Client, save_workflow
from clarion_jupyter.core.errors import Conflict, NotFound, ValidationFailed
from clarion_jupyter.core.protocol import RunStatus, StepStatus
from clarion_jupyter.storage.query import QueryResult
from clarion_jupyter.workflow.models import Decision, RunPage, WorkflowRun, parse_workflow

GATED = {
    "id": "gated",
    "name": "Gated",
    "steps": [
        {"id": "ask", "task": "echo", "approval": {"message": "ok?", "on_reject": "skip"}, "with": {"value": 1}},
        {"id": "after", "task": "echo", "with": {"value": 2}},
    ],
}
AGENT = {"id": "helper", "name": "Helper", "model": "openai/gpt-4o", "system_prompt": "Help."}
INTERFACE = sorted(
    name for name, member in vars(Clarion).items() if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.fixture(params=["engine", "server"])
def opened(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[], AbstractAsyncContextManager[Clarion]]:
    """The same interface in process, or through a real Jupyter server's API (opened in the
    test: pytest-jupyter runs async tests, not async fixtures)."""
    if request.param == "engine":
        return lambda: Engine(tmp_path / "runs.duckdb", workspace_root=tmp_path)
    app = request.getfixturevalue("jp_serverapp")
    request.getfixturevalue("http_server")
    port, base = request.getfixturevalue("jp_http_port"), request.getfixturevalue("jp_base_url")
    return lambda: Client(f"http://127.0.0.1:{port}{base}", app.identity_provider.token)


@pytest.mark.parametrize("name", INTERFACE)
def test_engine_and_client_have_each_method_with_the_interface_signature(name: str) -> None:
    """Same parameters in the same order; an implementation may add keyword-only ones with defaults
    (the engine's ``by``, its query limits), which code written against the interface never passes."""
    wanted = inspect.signature(getattr(Clarion, name)).parameters
    for implementation in (Engine, Client):
        method = getattr(implementation, name)
        given = inspect.signature(method).parameters
        shared = [p for p in given if p in wanted]
        extra = [p for p in given.values() if p.name not in wanted]
        assert shared == list(wanted), f"{implementation.__name__}.{name}{inspect.signature(method)}"
        assert all(p.kind == p.KEYWORD_ONLY and p.default is not p.empty for p in extra), extra
        assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


async def test_both_are_the_interface(opened: Callable[[], AbstractAsyncContextManager[Clarion]]) -> None:
    async with opened() as either:
        assert isinstance(either, Clarion)


async def test_a_conflict_is_the_same_exception_on_both(
    opened: Callable[[], AbstractAsyncContextManager[Clarion]],
) -> None:
    async with opened() as either:
        assert isinstance(await either.create_agent(AGENT), Agent)
        with pytest.raises(Conflict):
            await either.create_agent(AGENT)
        with pytest.raises(NotFound):
            await either.get_agent("nobody")


async def test_an_invalid_document_is_the_same_exception_with_the_same_problems(
    opened: Callable[[], AbstractAsyncContextManager[Clarion]],
) -> None:
    async with opened() as either:
        with pytest.raises(ValidationFailed) as caught:
            await either.submit({"name": "x", "steps": [{"id": "a", "task": "echo", "needs": ["ghost"]}]})
        assert [(p.step, p.field) for p in caught.value.problems] == [("a", "needs")]


async def test_a_run_waits_for_a_decision_and_answers_in_the_same_models(
    opened: Callable[[], AbstractAsyncContextManager[Clarion]],
) -> None:
    async with opened() as either:
        run_id = await either.submit(GATED)
        run = await either.get_run(run_id)
        while run.status != RunStatus.waiting:
            await asyncio.sleep(0.01)
            run = await either.get_run(run_id)
        decision = await either.reject(run_id, "ask", comment="not now")
        assert isinstance(decision, Decision) and (decision.decision, decision.comment) == ("reject", "not now")
        with pytest.raises(Conflict):
            await either.approve(run_id, "ask")
        finished = await either.wait(run_id)
        assert isinstance(finished, WorkflowRun) and finished.status == RunStatus.succeeded
        assert {s.key: s.status for s in finished.steps} == {"ask": StepStatus.skipped, "after": StepStatus.succeeded}
        page = await either.list_runs(status="succeeded")
        assert isinstance(page, RunPage) and [r.run_id for r in page.runs] == [run_id]
        assert [e.seq for e in await either.events(run_id)] == list(range(1, finished.last_seq + 1))


async def test_a_run_is_found_by_a_unique_prefix_of_its_id(
    opened: Callable[[], AbstractAsyncContextManager[Clarion]],
) -> None:
    async with opened() as either:
        first = await either.wait(await either.submit(GATED | {"steps": GATED["steps"][1:]}))
        assert (await either.get_run(first.run_id[:-4])).run_id == first.run_id
        second = await either.wait(await either.submit(GATED | {"steps": GATED["steps"][1:]}))
        shared = next(i for i in range(26) if first.run_id[i] != second.run_id[i])
        if shared >= 6:
            with pytest.raises(Conflict):
                await either.get_run(first.run_id[:shared])
        with pytest.raises(NotFound):
            await either.get_run("zzzzzz")


async def test_saving_is_asked_for_never_a_side_effect_of_running(
    opened: Callable[[], AbstractAsyncContextManager[Clarion]],
) -> None:
    async with opened() as either:
        await either.wait(await either.submit(GATED | {"steps": GATED["steps"][1:]}))
        assert "gated" not in [w.id for w in await either.list_workflows()]
        await save_workflow(either, parse_workflow(GATED))
        await save_workflow(either, parse_workflow(GATED | {"name": "Gated again"}))
        assert (await either.get_workflow("gated")).doc["name"] == "Gated again"


async def test_history_sql_answers_a_query_result(opened: Callable[[], AbstractAsyncContextManager[Clarion]]) -> None:
    async with opened() as either:
        await either.wait(await either.submit(GATED | {"steps": GATED["steps"][1:]}))
        result = await either.query("SELECT workflow_id, status FROM runs")
        assert isinstance(result, QueryResult) and result.rows == [["gated", "succeeded"]]


async def test_a_rerun_and_a_comparison_answer_in_the_same_models(
    opened: Callable[[], AbstractAsyncContextManager[Clarion]],
) -> None:
    async with opened() as either:
        parent = await either.wait(await either.submit(GATED | {"steps": GATED["steps"][1:]}))
        rerun = await either.rerun(parent.run_id, overrides={"steps": {"after": {"with": {"value": 3}}}})
        assert isinstance(rerun, WorkflowRun) and rerun.parent_run_id == parent.run_id
        done = await either.wait(rerun.run_id)
        comparison = await either.compare_runs([parent.run_id, done.run_id])
        assert [(s.key, s.differs) for s in comparison.steps] == [("after", True)]
        with pytest.raises(ValidationFailed):
            await either.rerun(parent.run_id, from_step="nope")
