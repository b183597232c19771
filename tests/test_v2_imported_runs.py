"""Runs imported from Clarion v2 behave as runs: they reach live subscribers as they are stored
(the sidebar lists them without a reload) and their workflow is a saved one (filters list it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.agent.v2runs import V2_RUN_WORKFLOW_ID
from clarion_jupyter.core.errors import Conflict
from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.clarion_v2 import v2_agent, v2_run, write_clarion_db
from clarion_jupyter.workflow.v2_rerun import rerun_request

EDITOR = v2_agent("basic_editor", "Basic File Editor")
PLAIN = {"id": "plain", "name": "Plain", "steps": [{"id": "s", "task": "echo", "with": {"value": 1}}]}
PROJECT = {"id": "p", "name": "P", "path": "/home/me/project", "lastOpenedAt": "", "activeAgentId": ""}


def clarion_db(tmp_path: Path, *run_ids: str) -> Path:
    runs = [("p", v2_run(r, prompt=f"task {r}", agent=EDITOR), "2024-05-01 10:00:05") for r in run_ids]
    return write_clarion_db(tmp_path / "clarion.db", agents=[EDITOR], projects=[PROJECT], runs=runs)


async def test_imported_runs_reach_live_subscribers_once_each(tmp_path: Path) -> None:
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"))
        (tmp_path / "clarion.db").unlink()
        with engine.feed() as live:
            await engine.import_v2(clarion_db(tmp_path, "run-1714557600123", "run-1714557700456"))
            events = [await asyncio.wait_for(live.get(), 5) for _ in range(3)]
            with pytest.raises(TimeoutError):  # the run imported before is not announced again
                await asyncio.wait_for(live.get(), 0.3)
        page = await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)
    newest = page.runs[0].run_id
    assert [(e.run_id, e.seq) for e in events] == [(newest, 1), (newest, 2), (newest, 3)]
    assert events[-1].terminal


async def test_the_workflow_of_imported_runs_is_listed_with_the_saved_ones(tmp_path: Path) -> None:
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"), dry_run=True)
        before = [w.id for w in await engine.list_workflows()]
        await engine.import_v2(tmp_path / "clarion.db")
        after = [w.id for w in await engine.list_workflows()]
    assert V2_RUN_WORKFLOW_ID not in before
    assert V2_RUN_WORKFLOW_ID in after


async def test_an_imported_run_is_announced_once_its_workflow_is_listed(tmp_path: Path) -> None:
    """A sidebar that sees a run of a workflow it does not know reads the workflows again at once."""
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        with engine.feed() as live:
            importing = asyncio.create_task(engine.import_v2(clarion_db(tmp_path, "run-1714557600123")))
            await asyncio.wait_for(live.get(), 5)
            listed = [w.id for w in await engine.list_workflows()]
            await importing
    assert V2_RUN_WORKFLOW_ID in listed


async def test_an_imported_run_reruns_as_an_agent_run_of_the_same_prompt_and_agent(tmp_path: Path) -> None:
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"))
        [imported] = (await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)).runs
        plain = await engine.wait(await engine.submit(PLAIN))
    agent_id, request = rerun_request(imported)
    assert (agent_id, request.prompt, request.apply) == ("basic_editor", "task run-1714557600123", "review")
    with pytest.raises(Conflict, match="not a run imported from Clarion v2"):
        rerun_request(plain)


async def test_the_workflow_of_imported_runs_is_read_only(tmp_path: Path) -> None:
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"))
        saved = await engine.get_workflow(V2_RUN_WORKFLOW_ID)
        with pytest.raises(Conflict, match="read-only"):
            await engine.replace_workflow(V2_RUN_WORKFLOW_ID, saved.doc | {"name": "Mine now"})
        with pytest.raises(Conflict, match="read-only"):
            await engine.delete_workflow(V2_RUN_WORKFLOW_ID)
        assert (await engine.get_workflow(V2_RUN_WORKFLOW_ID)).doc == saved.doc


async def test_running_the_imported_runs_workflow_with_a_runs_inputs_starts_an_agent_run(tmp_path: Path) -> None:
    """What the sidebar's Re-run sends (the run's workflow id and inputs) repeats the v2 run."""
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"))
        agent = await engine.get_agent("basic_editor")
        reply = '{"summary": "ok", "file_changes": []}'
        await engine.replace_agent(
            "basic_editor", agent.model_copy(update={"api_key_env": None, "parameters": {"mock_response": reply}})
        )
        [imported] = (await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)).runs
        again = await engine.wait(await engine.submit_saved(V2_RUN_WORKFLOW_ID, imported.inputs))
    assert (again.workflow_id, again.inputs["agent"], again.inputs["prompt"]) == (
        "agent-run", "basic_editor", "task run-1714557600123"
    )  # fmt: skip
    assert again.status == "succeeded"


async def test_running_the_imported_runs_workflow_with_a_budget_holds_the_agent_run_to_it(tmp_path: Path) -> None:
    """v2 runs had no budget: the one given with the Re-run is the new agent run's."""
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"))
        agent = await engine.get_agent("basic_editor")
        await engine.replace_agent(
            "basic_editor", agent.model_copy(update={"api_key_env": None, "parameters": {"mock_response": "{}"}})
        )
        [imported] = (await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)).runs
        run_id = await engine.submit_saved(V2_RUN_WORKFLOW_ID, imported.inputs, budget={"tokens": 1})
        again = await engine.wait(run_id)
    assert again.workflow_id == "agent-run"
    assert again.budget is not None and again.budget.tokens == 1
    assert again.status == "failed" and "budget" in str(again.error)


async def test_running_the_imported_runs_workflow_with_cache_answers_the_second_re_run_from_the_llm_cache(
    tmp_path: Path,
) -> None:
    """The Re-run request's cache choice is the new agent run's, as for any agent run."""
    with OpenAIStubServer(reply='{"summary": "Nothing to change", "file_changes": []}') as server:
        async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
            await engine.import_v2(clarion_db(tmp_path, "run-1714557600123"))
            agent = await engine.get_agent("basic_editor")
            await engine.replace_agent(
                "basic_editor",
                agent.model_copy(update={"api_key_env": None, "model": "openai/fake", "api_base": server.url}),
            )
            [imported] = (await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)).runs
            again = [
                await engine.wait(await engine.submit_saved(V2_RUN_WORKFLOW_ID, imported.inputs, cache=True))
                for _ in range(2)
            ]
    cached = [next(s for s in run.steps if s.key == "reply").output["cached"] for run in again]
    assert cached == [False, True]
    assert server.request_count == 1
