"""Re-running a run from a step, and replaying it with changes (ARCHITECTURE.md, "Iterating on runs").

Every claim that a task was not called is counted: shell steps append to a file, LLM steps
go to the local OpenAI-compatible server, which counts its requests.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api, create_workflow, start_run, wait_run
from notebook_support import ECHO3, Shell

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import Conflict, ValidationFailed
from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.clarion_v2 import v2_agent, v2_run, write_clarion_db
from clarion_jupyter.workflow.models import StepRun, WorkflowRun

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def engine_at(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        yield engine


async def finished(engine: Engine, run_id: str) -> WorkflowRun:
    return await asyncio.wait_for(engine.wait(run_id), 30)


def step(run: WorkflowRun, key: str) -> StepRun:
    return next(s for s in run.steps if s.key == key)


def echo(step_id: str, value: Any, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "task": "echo", "with": {"value": value}, **fields}


def chain_of_20() -> dict[str, Any]:
    """``side`` appends to side.log and nothing reads it; s1..s19 each log their call and read the previous one."""
    steps = [{"id": "side", "task": "shell", "with": {"command": "echo once >> side.log"}}]
    steps.append({"id": "s1", "task": "shell", "with": {"command": "echo s1 >> calls.log; echo 1"}})
    for i in range(2, 20):
        command = f"echo s{i} >> calls.log; echo {{{{ steps.s{i - 1}.output.stdout | trim }}}}.{i}"
        steps.append({"id": f"s{i}", "task": "shell", "with": {"command": command}})
    return {"name": "chain", "steps": steps}


def logged(path: Path) -> list[str]:
    return path.read_text().split()


# -- re-run from a step ----------------------------------------------------------------


async def test_rerun_from_a_step_calls_exactly_the_steps_downstream_of_it(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(chain_of_20()))
        assert logged(tmp_path / "calls.log") == [f"s{i}" for i in range(1, 20)]
        rerun = await finished(engine, (await engine.rerun(parent.run_id, from_step="s15")).run_id)
    assert rerun.status.value == "succeeded"
    assert logged(tmp_path / "calls.log")[19:] == ["s15", "s16", "s17", "s18", "s19"]
    assert logged(tmp_path / "side.log") == ["once"], "the shell step upstream ran again"
    reused = [s.key for s in rerun.steps if s.reused_from]
    assert reused == ["side", *(f"s{i}" for i in range(1, 15))]
    assert step(rerun, "s19").output["stdout"] == step(parent, "s19").output["stdout"]


async def test_reused_steps_carry_the_parents_output_and_attempt(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(chain_of_20()))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, from_step="s19")).run_id)
        events = await engine.events(rerun.run_id)
    for key in ("side", "s1", "s18"):
        assert step(rerun, key).status.value == "succeeded"
        assert step(rerun, key).output == step(parent, key).output
        assert step(rerun, key).reused_from == {"run_id": parent.run_id, "attempt": 1}
    completed = {e.step_id: e.data for e in events if e.type == "step_completed"}
    assert completed["s18"]["reused_from"] == {"run_id": parent.run_id, "attempt": 1}
    assert "reused_from" not in completed["s19"]
    assert rerun.parent_run_id == parent.run_id and rerun.changes == {"from_step": "s19"}


async def test_rerun_with_a_changed_input_runs_only_the_steps_that_read_it(tmp_path: Path) -> None:
    doc = {
        "name": "inputs",
        "inputs": {"x": {"type": "integer", "default": 1}, "y": {"type": "integer", "default": 2}},
        "steps": [
            echo("a", "{{ inputs.x }}"),
            echo("b", "{{ inputs.y }}"),
            echo("c", "{{ steps.a.output.value }}!"),
        ],
    }
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, inputs={"x": 5})).run_id)
    assert {s.key for s in rerun.steps if s.reused_from} == {"b"}
    assert step(rerun, "c").output == {"value": "5!"}
    assert rerun.inputs == {"x": 5, "y": 2}
    assert rerun.changes == {"inputs": {"x": {"from": 1, "to": 5}}}


async def test_rerun_of_a_failed_run_runs_the_failed_step_and_reuses_what_succeeded(tmp_path: Path) -> None:
    doc = {
        "name": "flaky",
        "steps": [
            {"id": "ok", "task": "shell", "with": {"command": "echo ok >> calls.log"}},
            {"id": "flaky", "task": "shell", "with": {"command": "echo flaky >> calls.log; test -f fixed"}},
        ],
    }
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc))
        assert parent.status.value == "failed"
        (tmp_path / "fixed").touch()
        rerun = await finished(engine, (await engine.rerun(parent.run_id)).run_id)
    assert rerun.status.value == "succeeded"
    assert logged(tmp_path / "calls.log") == ["ok", "flaky", "flaky"]


async def test_a_for_each_no_change_reaches_is_reused_with_its_items(tmp_path: Path) -> None:
    doc = {
        "name": "map",
        "steps": [
            {"id": "each", "task": "shell", "for_each": [1, 2, 3], "with": {"command": "echo {{ item }} >> calls.log"}},
            echo("last", "done"),
        ],
    }
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, from_step="last")).run_id)
    assert sorted(logged(tmp_path / "calls.log")) == ["1", "2", "3"]  # items run concurrently, once each
    assert {s.key for s in rerun.steps if s.reused_from} == {"each", "each[0]", "each[1]", "each[2]"}
    assert step(rerun, "each").output == step(parent, "each").output


def mapped_over_input(command: str = "echo {{ item }} >> calls.log; echo {{ item }}") -> dict[str, Any]:
    return {
        "name": "map",
        "inputs": {"names": {"type": "array"}, "suffix": {"type": "string", "default": ""}},
        "steps": [{"id": "each", "task": "shell", "for_each": "{{ inputs.names }}", "with": {"command": command}}],
    }


async def test_a_for_each_over_a_changed_list_runs_only_its_new_items(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(mapped_over_input(), {"names": ["a", "b", "c"]}))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, inputs={"names": ["c", "a", "d"]})).run_id)
    assert rerun.status.value == "succeeded"
    assert sorted(logged(tmp_path / "calls.log")) == ["a", "b", "c", "d"], "only the new item ran again"
    assert {s.key: s.reused_from["run_id"] for s in rerun.steps if s.reused_from} == {
        "each[0]": parent.run_id,
        "each[1]": parent.run_id,
    }
    assert [line.strip() for line in (o["stdout"] for o in step(rerun, "each").output)] == ["c", "a", "d"]


async def test_a_for_each_whose_item_failed_runs_only_that_item_again(tmp_path: Path) -> None:
    doc = mapped_over_input("echo {{ item }} >> calls.log; grep -qx {{ item }} allowed.txt")
    (tmp_path / "allowed.txt").write_text("a\nc\n")
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc, {"names": ["a", "b", "c"]}))
        assert parent.status.value == "failed"
        (tmp_path / "allowed.txt").write_text("a\nb\nc\n")
        rerun = await finished(engine, (await engine.rerun(parent.run_id)).run_id)
    assert rerun.status.value == "succeeded"
    assert sorted(logged(tmp_path / "calls.log")) == ["a", "b", "b", "c"]
    assert {s.key for s in rerun.steps if s.reused_from} == {"each[0]", "each[2]"}


async def test_a_for_each_whose_config_reads_a_changed_input_runs_every_item_again(tmp_path: Path) -> None:
    doc = mapped_over_input("echo {{ item }}{{ inputs.suffix }} >> calls.log")
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc, {"names": ["a", "b"]}))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, inputs={"suffix": "!"})).run_id)
    assert rerun.status.value == "succeeded"
    assert sorted(logged(tmp_path / "calls.log")) == ["a", "a!", "b", "b!"]
    assert not any(s.reused_from for s in rerun.steps)


async def test_an_approved_step_no_change_reaches_is_reused_without_asking_again(tmp_path: Path) -> None:
    gated = echo("gated", "ok", approval={"message": "go?"})
    doc = {"name": "gate", "steps": [gated, echo("after", "{{ steps.gated.output.value }}!")]}
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        while not (await engine.get_run(run_id)).approvals:
            await asyncio.sleep(0.02)
        await engine.approve(run_id, "gated")
        parent = await finished(engine, run_id)
        rerun = await finished(engine, (await engine.rerun(parent.run_id, from_step="after")).run_id)
        events = await engine.events(rerun.run_id)
    assert rerun.status.value == "succeeded"
    assert not [e for e in events if e.type == "approval_requested"]
    assert step(rerun, "gated").reused_from == {"run_id": parent.run_id, "attempt": 1}


async def test_parallel_members_each_count_as_a_step(tmp_path: Path) -> None:
    members = [{"id": f"p{i}", "task": "shell", "with": {"command": f"echo p{i} >> calls.log"}} for i in range(3)]
    doc = {"name": "fan", "steps": [{"parallel": members}, echo("join", "{{ steps.p1.output.exit_code }}")]}
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, from_step="p1")).run_id)
    assert sorted(logged(tmp_path / "calls.log")) == ["p0", "p1", "p1", "p2"]
    assert {s.key for s in rerun.steps if s.reused_from} == {"p0", "p2"}


async def test_a_failed_run_imported_from_v2_runs_again_with_its_agent(
    tmp_path: Path, model_echo: OpenAIStubServer
) -> None:
    agent = v2_agent("a-1", "Editor")
    failed = v2_run("run-1714557607000", prompt="Fix it", agent=agent, status="error", error="401 Unauthorized")
    db = write_clarion_db(tmp_path / "clarion.db", agents=[agent], runs=[("p", failed, "2024-05-01 10:00:07")])
    async with engine_at(tmp_path) as engine:
        await engine.import_v2(db)
        (imported,) = await engine.list_agents()
        await engine.replace_agent(
            imported.id, {**imported.model_dump(), "api_base": model_echo.url, "api_key_env": None}
        )
        (parent,) = (await engine.list_runs()).runs
        rerun = await finished(engine, (await engine.rerun(parent.run_id)).run_id)
    assert parent.status.value == "failed" and rerun.status.value == "succeeded", rerun.error
    assert model_echo.request_count == 1
    assert rerun.parent_run_id == parent.run_id


async def test_rerun_of_an_unknown_step_names_the_field(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit({"name": "one", "steps": [echo("a", 1)]}))
        with pytest.raises(ValidationFailed) as raised:
            await engine.rerun(parent.run_id, from_step="nope")
    assert [p.field for p in raised.value.problems] == ["from_step"]


async def test_a_run_still_going_cannot_be_rerun(tmp_path: Path) -> None:
    doc = {"name": "slow", "steps": [{"id": "wait", "task": "shell", "with": {"command": "sleep 5"}}]}
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        with pytest.raises(Conflict):
            await engine.rerun(run_id)
        await engine.cancel(run_id)


# -- replay with overrides --------------------------------------------------------------


@pytest.fixture
def model_echo() -> Iterator[OpenAIStubServer]:
    """Answers with the model it was asked for, and counts its calls."""
    with OpenAIStubServer(reply=lambda body: f"model={body['model']}") as server:
        yield server


def two_agents(stub: OpenAIStubServer) -> list[dict[str, Any]]:
    return [
        {"id": agent_id, "name": agent_id, "model": "openai/base", "api_base": stub.url}
        for agent_id in ("coder", "reviewer")
    ]


def ask(step_id: str, agent: str) -> dict[str, Any]:
    return {"id": step_id, "task": "llm_call", "with": {"agent": agent, "prompt": f"hello from {step_id}"}}


async def test_a_model_override_reaches_only_the_steps_that_use_that_agent(
    tmp_path: Path, model_echo: OpenAIStubServer
) -> None:
    doc = {"name": "agents", "steps": [ask("write", "coder"), ask("review", "reviewer"), ask("write2", "coder")]}
    async with engine_at(tmp_path) as engine:
        for agent in two_agents(model_echo):
            await engine.create_agent(agent)
        parent = await finished(engine, await engine.submit(doc))
        assert model_echo.request_count == 3
        overrides = {"agents": {"coder": {"model": "openai/better"}}}
        rerun = await finished(engine, (await engine.rerun(parent.run_id, overrides=overrides)).run_id)
        saved = await engine.get_agent("coder")
    assert model_echo.request_count == 5
    assert step(rerun, "write").output["text"] == "model=better"
    assert step(rerun, "write2").output["text"] == "model=better"
    assert step(rerun, "review").reused_from is not None
    assert saved.model == "openai/base", "the saved agent changed"
    assert rerun.changes == {"overrides": {"agents": {"coder": {"model": "openai/better"}}}}


async def test_a_model_override_reaches_an_agent_named_by_an_input(
    tmp_path: Path, model_echo: OpenAIStubServer
) -> None:
    doc = {
        "name": "by-input",
        "inputs": {"who": {"type": "string", "default": "coder"}},
        "steps": [ask("write", "{{ inputs.who }}"), ask("review", "reviewer")],
    }
    async with engine_at(tmp_path) as engine:
        for agent in two_agents(model_echo):
            await engine.create_agent(agent)
        parent = await finished(engine, await engine.submit(doc))
        overrides = {"agents": {"coder": {"model": "openai/better"}}}
        rerun = await finished(engine, (await engine.rerun(parent.run_id, overrides=overrides)).run_id)
    assert model_echo.request_count == 3
    assert step(rerun, "write").output["text"] == "model=better"
    assert step(rerun, "review").reused_from is not None


async def test_a_step_override_changes_that_step_for_this_run_only(tmp_path: Path) -> None:
    doc = {"name": "steps", "steps": [echo("a", 1), echo("b", 2), echo("c", "{{ steps.b.output.value }}")]}
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit(doc))
        overrides = {"steps": {"b": {"with": {"value": 20}}}}
        rerun = await finished(engine, (await engine.rerun(parent.run_id, overrides=overrides)).run_id)
        again = await engine.get_run(parent.run_id)
    assert step(rerun, "c").output == {"value": 20}
    assert step(rerun, "a").reused_from is not None
    assert again.workflow == parent.workflow


async def test_an_override_of_an_agent_no_step_uses_names_the_field(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        parent = await finished(engine, await engine.submit({"name": "one", "steps": [echo("a", 1)]}))
        with pytest.raises(ValidationFailed) as raised:
            await engine.rerun(parent.run_id, overrides={"agents": {"ghost": {"model": "x"}}})
    assert [p.field for p in raised.value.problems] == ["overrides.agents.ghost"]


# -- over REST --------------------------------------------------------------------------


async def test_rerun_over_rest_answers_202_with_the_new_run(api: Api) -> None:
    workflow_id = await create_workflow(api, {"id": "pair", "name": "pair", "steps": [echo("a", 1), echo("b", 2)]})
    parent = await wait_run(api, await start_run(api, workflow_id))
    reply = await api("POST", "runs", parent["run_id"], "rerun", body={"from_step": "b"})
    assert reply.status == 202, reply.body
    assert reply.body["parent_run_id"] == parent["run_id"]
    assert reply.body["changes"] == {"from_step": "b"}
    done = await wait_run(api, reply.body["run_id"])
    reused = {s["key"]: s["reused_from"] for s in done["steps"]}
    assert reused == {"a": {"run_id": parent["run_id"], "attempt": 1}, "b": None}


async def test_a_bad_rerun_body_is_a_422_naming_the_field(api: Api) -> None:
    workflow_id = await create_workflow(api, {"id": "one", "name": "one", "steps": [echo("a", 1)]})
    parent = await wait_run(api, await start_run(api, workflow_id))
    reply = await api("POST", "runs", parent["run_id"], "rerun", body={"overrides": {"steps": {"a": {"wth": {}}}}})
    assert reply.status == 422
    assert "overrides" in json.dumps(reply.body)


# -- the CLI, the magic and the Run handle ----------------------------------------------


async def test_clarion_rerun_from_a_step_reuses_the_steps_before_it(tmp_path: Path) -> None:
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        parent = await finished(engine, await engine.submit(chain_of_20()))
    command = [sys.executable, "-m", "clarion_jupyter.cli", "rerun", parent.run_id, "--from", "s18", "--json"]
    command += ["--db", str(tmp_path / "x.duckdb"), "--workspace", str(tmp_path)]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rerun = json.loads(done.stdout)
    assert rerun["parent_run_id"] == parent.run_id
    assert [s["key"] for s in rerun["steps"] if s["reused_from"] is None] == ["s18", "s19"]
    assert logged(tmp_path / "calls.log")[19:] == ["s18", "s19"]


def test_the_rerun_magic_and_run_rerun_change_an_input(shell: Shell) -> None:
    shell.cell("", ECHO3)
    parent = shell.last
    shell.line(f"rerun {parent.run_id} --input word=yo --name again")
    again = shell.ip.user_ns["again"]
    assert again.outputs == {"said": "yo!!"}
    assert again.document().parent_run_id == parent.run_id
    third = again.rerun(from_step="three")
    assert third.wait(timeout=20).outputs == {"said": "yo!!"}
    assert [s.key for s in third.steps if s.reused_from] == ["one", "two"]
