"""A run's cost budget (ARCHITECTURE.md, "Iterating on runs"): every LLM call reserves its worst
case before it is sent, a call that would pass the budget is not made (``budget_exceeded``),
and the run document shows what was spent, live and across a restart.

Every claim that a call was, or was not, made is counted by the local OpenAI-compatible
server. ``openai/fake`` is a model litellm has no price (and no output limit) for;
``openai/gpt-4o-mini`` at the same server is priced by litellm's cost map from the usage the
server reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker, engine_on, queue_secret
from conftest_server import Api, create_workflow, read_until_closed, start_run, wait_run
from notebook_support import Shell

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import ValidationFailed
from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.base import TaskContext, TaskFailed
from clarion_jupyter.task.builtin.llm_call import LLMCallConfig, LLMCallTask
from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.brokers import BrokerProcess, WorkerProcess
from clarion_jupyter.workflow.fold import fold, initial
from clarion_jupyter.workflow.models import StepRun, WorkflowRun

__all__ = ["broker", "queue_secret"]  # fixtures, used by name
pytestmark = pytest.mark.timeout(120)

UNPRICED = "openai/fake"
PRICED = "openai/gpt-4o-mini"
REPLY_CAP = 50
"""Every agent here says ``max_tokens: 50``: the most a reply may take, so the worst case is known."""


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(reply="ok") as server:
        yield server


def agent(stub: OpenAIStubServer, model: str = UNPRICED, agent_id: str = "bot", **parameters: Any) -> dict[str, Any]:
    return {
        "id": agent_id, "name": agent_id, "model": model, "api_base": stub.url, "system_prompt": "Be brief.",
        "parameters": {"max_tokens": REPLY_CAP, **parameters},
    }  # fmt: skip


def call(step_id: str, prompt: str = "call 0", agent_id: str = "bot", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "task": "llm_call", "with": {"agent": agent_id, "prompt": prompt}, **fields}


def parallel(count: int, **fields: Any) -> dict[str, Any]:
    """``count`` calls with prompts of the same length, side by side (each may fail alone)."""
    return {"parallel": [call(f"c{i}", f"call {i}", continue_on_error=True, **fields) for i in range(count)]}


@asynccontextmanager
async def engine_at(tmp_path: Path, *agents: dict[str, Any]) -> AsyncIterator[Engine]:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        for doc in agents:
            await engine.create_agent(doc)
        yield engine


async def finished(engine: Engine, run_id: str) -> WorkflowRun:
    return await asyncio.wait_for(engine.wait(run_id), 60)


def step(run: WorkflowRun, key: str) -> StepRun:
    return next(s for s in run.steps if s.key == key)


def refused(run: WorkflowRun) -> list[str]:
    return sorted(s.key for s in run.steps if (s.error or {}).get("code") == "budget_exceeded")


async def worst_case(engine: Engine, stub: OpenAIStubServer, prompt: str = "call 0") -> dict[str, Any]:
    """What one call of ``prompt`` reserves, as the engine says it refusing a budget of one token."""
    before = stub.request_count
    run = await finished(
        engine, await engine.submit({"name": "probe", "steps": [call("c", prompt)]}, budget={"tokens": 1})
    )
    assert refused(run) == ["c"] and stub.request_count == before, "the probe's call was made"
    return step(run, "c").error["details"]


# -- reservations ------------------------------------------------------------------


async def test_five_parallel_calls_against_a_budget_for_three_make_three_calls(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    stub.delay_s = 0.2  # the calls are in flight together
    async with engine_at(tmp_path, agent(stub)) as engine:
        need = (await worst_case(engine, stub))["call_tokens"]
        limit = 4 * need - 1  # three worst cases fit, a fourth does not
        run = await finished(
            engine, await engine.submit({"name": "five", "steps": [parallel(5)]}, budget={"tokens": limit})
        )
    assert stub.request_count == 3
    assert len(refused(run)) == 2 and run.status.value == "succeeded"  # the refused ones continue_on_error
    assert sorted(s.key for s in run.steps if s.status.value == "succeeded") == sorted(
        {"c0", "c1", "c2", "c3", "c4"} - set(refused(run))
    )
    assert run.budget.spent_tokens == sum(
        s.usage.prompt_tokens + s.usage.completion_tokens for s in run.steps if s.usage
    )
    assert 0 < run.budget.spent_tokens <= limit
    assert (run.budget.reserved_tokens, run.budget.tokens) == (0, limit)
    error = next(s.error for s in run.steps if s.key in refused(run))
    assert f"would pass the limit of {limit:,} tokens" in error["message"]
    assert error["details"]["reserved_tokens"] == 3 * need and error["details"]["call_tokens"] == need


async def test_with_a_broker_the_engine_reserves_before_it_sends_so_workers_make_three_calls(
    broker: BrokerProcess, tmp_path: Path, stub: OpenAIStubServer
) -> None:
    stub.delay_s = 0.2
    async with engine_on(broker, tmp_path) as engine, WorkerProcess(broker.url, tmp_path) as worker:
        await engine.create_agent(agent(stub))
        await worker.wait_ready()
        need = (await worst_case(engine, stub))["call_tokens"]
        run_id = await engine.submit({"name": "five", "steps": [parallel(5)]}, budget={"tokens": 4 * need - 1})
        run = await finished(engine, run_id)
    assert stub.request_count == 3 and len(refused(run)) == 2
    assert 0 < run.budget.spent_tokens <= 4 * need - 1 and run.budget.reserved_tokens == 0


async def test_a_sequential_run_stops_at_the_call_that_would_overshoot(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path, agent(stub, PRICED)) as engine:
        probe = await finished(
            engine, await engine.submit({"name": "probe", "steps": [call("c")]}, budget={"usd": 1.0})
        )
        started = next(e for e in await engine.events(probe.run_id) if e.type == "step_started")
        worst, spent_each = started.data["budget"]["reserved_usd"], step(probe, "c").usage.cost_usd
        assert 0 < spent_each < worst, "the reply costs less than its worst case"
        limit = 2.5 * spent_each + worst  # the calls of spent 0, 1 and 2 replies fit; the fourth does not
        stub.request_count = 0
        doc = {"name": "four", "budget": {"usd": limit}, "steps": [call(f"s{i}") for i in range(1, 6)]}
        run = await finished(engine, await engine.submit(doc))
    assert stub.request_count == 3
    assert [s.key for s in run.steps if s.status.value == "succeeded"] == ["s1", "s2", "s3"]
    assert refused(run) == ["s4"] and run.status.value == "failed"
    assert "s5" not in {s.key for s in run.steps}, "a step after the refused call ran"
    error = step(run, "s4").error
    details = error["details"]
    assert details["spent_usd"] == pytest.approx(3 * spent_each) and details["limit_usd"] == limit
    assert details["call_usd"] == pytest.approx(worst) and details["reserved_usd"] == 0
    assert "the call was not made" in error["message"] and "spent" in error["message"]
    assert "would pass the limit of $" in error["message"]
    assert run.budget.spent_usd == pytest.approx(3 * spent_each) and run.budget.spent_usd <= limit
    assert "budget exceeded" in run.error["message"]


async def test_a_call_the_cache_answers_is_not_refused_by_a_budget_it_would_not_fit(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    doc = {"name": "cached", "steps": [call("c", "the same question")]}
    async with engine_at(tmp_path, agent(stub)) as engine:
        first = await finished(engine, await engine.submit(doc, cache=True))
        before = stub.request_count
        again = await finished(engine, await engine.submit(doc, cache=True, budget={"tokens": 1}))
    assert first.status.value == "succeeded" and again.status.value == "succeeded", refused(again)
    assert stub.request_count == before, "the cached call went to the provider"
    assert step(again, "c").output["cached"] is True and again.budget.spent_tokens == 0


async def test_a_token_budget_holds_for_a_model_without_a_price(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path, agent(stub)) as engine:
        run = await finished(
            engine, await engine.submit({"name": "two", "steps": [parallel(2)]}, budget={"tokens": 10_000})
        )
    assert run.status.value == "succeeded" and stub.request_count == 2
    budget = run.budget
    assert budget.spent_tokens == sum(s.usage.prompt_tokens + s.usage.completion_tokens for s in run.steps)
    assert (budget.spent_usd, budget.unpriced_calls, budget.usd) == (0.0, 2, None)


async def test_a_usd_budget_refuses_a_model_without_a_price_unless_it_says_unpriced_allow(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    async with engine_at(tmp_path, agent(stub)) as engine:
        doc = {"name": "unpriced", "budget": {"usd": 1.0}, "steps": [call("c")]}
        refusal = await finished(engine, await engine.submit(doc))
        assert stub.request_count == 0
        allowed = await finished(engine, await engine.submit({**doc, "budget": {"usd": 1.0, "unpriced": "allow"}}))
        per_run = await finished(engine, await engine.submit(doc, budget={"unpriced": "allow"}))
    assert refused(refusal) == ["c"]
    message = step(refusal, "c").error["message"]
    assert f"model '{UNPRICED}' has no price" in message and "unpriced: allow" in message
    assert allowed.status.value == per_run.status.value == "succeeded" and stub.request_count == 2
    assert (allowed.budget.unpriced_calls, allowed.budget.spent_usd) == (1, 0.0)
    assert (
        allowed.budget.spent_tokens
        == step(allowed, "c").usage.prompt_tokens + step(allowed, "c").usage.completion_tokens
    )
    assert (per_run.budget.usd, per_run.budget.unpriced) == (1.0, "allow")


async def test_a_call_with_no_bound_on_its_reply_is_refused_under_a_budget(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    doc = agent(stub)
    doc["parameters"] = {}
    async with engine_at(tmp_path, doc) as engine:
        run = await finished(
            engine, await engine.submit({"name": "open", "steps": [call("c")]}, budget={"tokens": 10_000})
        )
        free = await finished(engine, await engine.submit({"name": "open", "steps": [call("c")]}))
    assert refused(run) == ["c"] and "set max_tokens" in step(run, "c").error["message"]
    assert free.status.value == "succeeded" and free.budget is None and stub.request_count == 1


async def test_a_reply_refused_by_its_schema_still_counts_what_it_spent(tmp_path: Path, stub: OpenAIStubServer) -> None:
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    async with engine_at(tmp_path, agent(stub)) as engine:
        doc = {"name": "schema", "steps": [{**call("c"), "with": {**call("c")["with"], "response_format": schema}}]}
        run = await finished(engine, await engine.submit(doc, budget={"tokens": 10_000}))
    assert stub.request_count == 1 and step(run, "c").status.value == "failed"
    assert "not valid JSON" in step(run, "c").error["message"]
    assert run.budget.spent_tokens > 0 and run.budget.reserved_tokens == 0


async def test_a_call_that_sends_a_workspace_file_reserves_its_tokens_too(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    (tmp_path / "notes.txt").write_text("note " * 300)
    with_file = {**call("c"), "with": {**call("c")["with"], "files": ["notes.txt"]}}
    async with engine_at(tmp_path, agent(stub)) as engine:
        plain = await finished(
            engine, await engine.submit({"name": "plain", "steps": [call("c")]}, budget={"tokens": 10**6})
        )
        sent = await finished(
            engine, await engine.submit({"name": "file", "steps": [with_file]}, budget={"tokens": 10**6})
        )
        held = [
            next(e.data["budget"]["reserved_tokens"] for e in await engine.events(r.run_id) if e.type == "step_started")
            for r in (plain, sent)
        ]
    assert plain.status.value == sent.status.value == "succeeded" and stub.request_count == 2
    assert held[1] - held[0] >= 300, "the file's tokens were not reserved"


async def test_a_step_waiting_for_approval_holds_nothing_and_reserves_once_approved(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    async with engine_at(tmp_path, agent(stub)) as engine:
        need = (await worst_case(engine, stub))["call_tokens"]
        doc = {"name": "gated", "steps": [call("c", approval=True)]}
        run_id = await engine.submit(doc, budget={"tokens": need})
        async for event in engine.subscribe(run_id):
            if event.type == "approval_requested":
                break
        waiting = (await engine.get_run(run_id)).budget
        await engine.approve(run_id, "c")
        run = await finished(engine, run_id)
    assert (waiting.reserved_tokens, waiting.spent_tokens) == (0, 0)
    assert run.status.value == "succeeded" and stub.request_count == 1 and run.budget.spent_tokens > 0


async def test_a_worker_refuses_a_prompt_that_grew_since_it_was_reserved(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    """The engine reserved the prompt with the file as it was; the file grew before the worker
    read it, so the prompt the worker would send is larger than what was reserved."""
    (tmp_path / "notes.txt").write_text("grown " * 200)
    ctx = TaskContext(
        run_id="r", step_id="c", key="c", attempt=1, workspace=Workspace(tmp_path),
        resources={"agent": agent(stub), "budget": {"prompt_tokens": 40}},
    )  # fmt: skip
    config = LLMCallConfig(agent="bot", prompt="summarise", files=["notes.txt"])
    with pytest.raises(TaskFailed) as raised:
        await LLMCallTask().run(config, ctx)
    assert (
        raised.value.code == "budget_exceeded" and "more than the 40 the run's budget reserved" in raised.value.message
    )
    assert raised.value.details["prompt_tokens"] > 200 and stub.request_count == 0
    ctx.resources["budget"] = {"prompt_tokens": 10_000}
    assert (await LLMCallTask().run(config, ctx))["text"] == "ok" and stub.request_count == 1


# -- the budget's sources -----------------------------------------------------------


async def test_a_run_budget_replaces_the_fields_it_gives_of_the_workflows(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    async with engine_at(tmp_path, agent(stub, PRICED)) as engine:
        doc = {"name": "both", "budget": {"usd": 0.5, "tokens": 10_000}, "steps": [call("c")]}
        own = await finished(engine, await engine.submit(doc))
        tighter = await finished(engine, await engine.submit(doc, budget={"tokens": 5_000}))
        none = await finished(engine, await engine.submit({**doc, "budget": None}))
        rerun = await finished(engine, (await engine.rerun(tighter.run_id, from_step="c", budget={"usd": 0.25})).run_id)
    assert (own.budget.usd, own.budget.tokens) == (0.5, 10_000)
    assert (tighter.budget.usd, tighter.budget.tokens) == (0.5, 5_000)
    assert none.budget is None
    assert (rerun.budget.usd, rerun.budget.tokens) == (0.25, 5_000), "a re-run holds to its parent's budget"
    assert rerun.budget.spent_tokens > 0 and stub.request_count == 4


async def test_a_rerun_pays_nothing_for_the_steps_it_reuses(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path, agent(stub)) as engine:
        doc = {"name": "pair", "budget": {"tokens": 10_000}, "steps": [call("a"), call("b", "call 1")]}
        parent = await finished(engine, await engine.submit(doc))
        rerun = await finished(engine, (await engine.rerun(parent.run_id, from_step="b")).run_id)
    assert stub.request_count == 3
    assert step(rerun, "a").reused_from is not None
    b = step(rerun, "b").usage
    assert rerun.budget.spent_tokens == b.prompt_tokens + b.completion_tokens < parent.budget.spent_tokens


@pytest.mark.parametrize(
    ("budget", "field"),
    [({"usd": -1}, "budget.usd"), ({"tokens": 0}, "budget.tokens"), ({"usd": "a lot"}, "budget.usd"),
     ({"tokens": 2.5}, "budget.tokens"), ({"unpriced": "maybe"}, "budget.unpriced"), ({"dollars": 1}, "budget.dollars"),
     ({}, "budget")],
)  # fmt: skip
async def test_an_invalid_budget_names_its_field(tmp_path: Path, budget: dict[str, Any], field: str) -> None:
    doc = {"name": "bad", "steps": [{"id": "a", "task": "echo", "with": {"value": 1}}]}
    async with engine_at(tmp_path) as engine:
        for attempt in ({**doc, "budget": budget}, None):
            with pytest.raises(ValidationFailed) as raised:
                await (engine.submit(attempt) if attempt else engine.submit(doc, budget=budget))
            assert [p.field for p in raised.value.problems] == [field]


# -- through the server ---------------------------------------------------------------


async def test_every_rest_door_takes_a_budget_and_the_document_shows_what_was_spent(
    api: Api, stub: OpenAIStubServer
) -> None:
    assert (await api("POST", "agents", body=agent(stub))).status == 201
    doc = {"id": "one", "name": "one", "steps": [call("c")]}
    reply = await api("POST", "runs", body={"workflow": doc, "budget": {"tokens": 10_000}})
    assert reply.status == 202, reply.body
    adhoc = await wait_run(api, reply.body["run_id"])
    saved = await wait_run(api, await start_run(api, await create_workflow(api, doc), budget={"tokens": 9_000}))
    reply = await api("POST", "runs", saved["run_id"], "rerun", body={"from_step": "c", "budget": {"tokens": 8_000}})
    assert reply.status == 202, reply.body
    rerun = await wait_run(api, reply.body["run_id"])
    reply = await api(
        "POST", "agents", "bot", "run", body={"prompt": "hi", "apply": "never", "budget": {"tokens": 7_000}}
    )
    assert reply.status == 202, reply.body
    agent_run = await wait_run(api, reply.body["run_id"])
    runs = [adhoc, saved, rerun, agent_run]
    assert [r["budget"]["tokens"] for r in runs] == [10_000, 9_000, 8_000, 7_000]
    assert all(r["status"] == "succeeded" and r["budget"]["spent_tokens"] > 0 for r in runs), runs
    assert stub.request_count == 4
    for run in runs:
        usage = run["usage"]
        assert run["budget"]["spent_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert run["budget"]["reserved_tokens"] == 0


@pytest.mark.parametrize("route", ["runs", "workflow", "rerun", "agent"])
async def test_an_invalid_budget_is_a_422_naming_the_field_on_every_route(
    api: Api, stub: OpenAIStubServer, route: str
) -> None:
    doc = {"id": "one", "name": "one", "steps": [{"id": "a", "task": "echo", "with": {"value": 1}}]}
    bad = {"usd": -0.5}
    if route == "runs":
        in_document = await api("POST", "runs", body={"workflow": {**doc, "budget": bad}})
        assert in_document.status == 422, in_document.body
        assert [p["field"] for p in in_document.body["error"]["details"]] == ["budget.usd"]
        reply = await api("POST", "runs", body={"workflow": doc, "budget": bad})
    elif route == "workflow":
        await create_workflow(api, doc)
        reply = await api("POST", "workflows", doc["id"], "run", body={"budget": bad})
    elif route == "rerun":
        parent = await wait_run(api, await start_run(api, await create_workflow(api, doc)))
        reply = await api("POST", "runs", parent["run_id"], "rerun", body={"budget": bad})
    else:
        assert (await api("POST", "agents", body=agent(stub))).status == 201
        reply = await api("POST", "agents", "bot", "run", body={"prompt": "hi", "budget": bad})
    assert reply.status == 422, reply.body
    assert [p["field"] for p in reply.body["error"]["details"]] == ["budget.usd"]
    assert stub.request_count == 0


async def test_the_budget_reaches_a_websocket_follower_as_it_changes(
    api: Api, stub: OpenAIStubServer, jp_ws_fetch: Any
) -> None:
    stub.delay_s = 0.3  # the follower subscribes while the calls are in flight
    assert (await api("POST", "agents", body=agent(stub))).status == 201
    body = {"workflow": {"name": "two", "steps": [parallel(2)]}, "budget": {"tokens": 10_000}}
    run_id = (await api("POST", "runs", body=body)).body["run_id"]
    events = await read_until_closed(await jp_ws_fetch("ws", "runs", run_id, "subscribe", params={"since": 0}))
    run = (await api("GET", "runs", run_id)).body
    budgets = [(e["type"], e["data"]["budget"]["reserved_tokens"]) for e in events if "budget" in e["data"]]
    assert [kind for kind, _ in budgets] == [
        "run_queued", "step_started", "step_started", "step_completed", "step_completed",
    ]  # fmt: skip
    held = [reserved for _, reserved in budgets]
    assert held[0] == 0 and held[2] == 2 * held[1] > 0 and held[-1] == 0
    state = initial({**run, "last_seq": 0, "steps": [], "approvals": [], "budget": None})
    for event in events:
        state = fold(state, event)
    assert state["run"]["budget"] == run["budget"] and run["budget"]["spent_tokens"] > 0


# -- the CLI and the magic ------------------------------------------------------------


def clarion(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion_jupyter.cli", *args, "--db", str(tmp_path / "c.duckdb"), "--workspace", str(tmp_path)],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=90, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip


async def test_clarion_run_takes_a_budget_and_stops_at_it(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path, agent(stub), agent(stub, PRICED, "priced")) as engine:
        need = (await worst_case(engine, stub))["call_tokens"]
    (tmp_path / "wf.json").write_text(json.dumps({"name": "two", "steps": [call("a"), call("b")]}))
    (tmp_path / "priced.json").write_text(json.dumps({"name": "priced", "steps": [call("a", agent_id="priced")]}))
    stopped = clarion(tmp_path, "run", "wf.json", "--budget-tokens", str(need + 1))
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert "budget exceeded" in stopped.stdout and f"of {need + 1} tokens spent" in stopped.stdout
    assert stub.request_count == 1
    done = clarion(tmp_path, "run", "priced.json", "--budget-tokens", "10000", "--budget-usd", "0.5", "--json")
    budget = json.loads(done.stdout)["budget"]
    assert done.returncode == 0 and (budget["tokens"], budget["usd"]) == (10_000, 0.5) and budget["spent_usd"] > 0
    bad = clarion(tmp_path, "run", "wf.json", "--budget-usd", "-1")
    assert bad.returncode == 1 and "budget.usd" in bad.stderr
    assert stub.request_count == 2


def test_the_magic_takes_a_budget_and_the_widget_shows_it_spent(shell: Shell, stub: OpenAIStubServer) -> None:
    shell.magics.loop.run(shell.magics.session().clarion().create_agent(agent(stub, PRICED)))
    doc = "name: one\nsteps:\n  - {id: a, task: llm_call, with: {agent: bot, prompt: call 0}}\n"
    assert shell.cell("--budget 0.5 --budget-tokens 10000", doc).error_in_exec is None
    run = shell.last
    budget = run.state.document().budget
    assert (budget.usd, budget.tokens, run.status.value) == (0.5, 10_000, "succeeded")
    assert budget.spent_tokens > 0 and budget.spent_usd > 0 and stub.request_count == 1
    header = run.widget.header.value
    assert 'data-role="budget"' in header and "of 10,000 tokens spent" in header and "of $0.5" in header
    assert "budget: $" in run.state.to_text()
    assert shell.cell("--budget-tokens 5", doc).error_in_exec is None
    assert shell.last.status.value == "failed" and stub.request_count == 1
    saved = "id: saved\n" + doc
    assert shell.cell("--save --no-wait --budget-tokens 5", saved).error_in_exec is None
    assert shell.line("run saved --budget-tokens 9000").error_in_exec is None
    assert shell.last.state.document().budget.tokens == 9_000 and stub.request_count == 2
    assert shell.line(f"rerun {shell.last.run_id} --budget-tokens 7000").error_in_exec is None
    assert shell.last.state.document().budget.tokens == 7_000 and shell.last.status.value == "succeeded"


# -- durable ----------------------------------------------------------------------------


async def test_a_resumed_run_keeps_what_it_spent(tmp_path: Path, stub: OpenAIStubServer) -> None:
    """``first`` calls the model, ``hold`` waits while ``block`` exists and the engine stops
    there; after the restart ``second``'s worst case fits the limit, but not on top of what
    ``first`` spent: the run refuses it only if the spent amount survived."""
    (tmp_path / "block").touch()
    hold = {"id": "hold", "task": "shell", "with": {"command": "while [ -f block ]; do sleep 0.05; done"}}
    async with engine_at(tmp_path, agent(stub)) as engine:
        need = (await worst_case(engine, stub))["call_tokens"]
        doc = {"name": "resume", "budget": {"tokens": need + 1}, "steps": [call("first"), hold, call("second")]}
        run_id = await engine.submit(doc)
        async for event in engine.subscribe(run_id):
            if event.type == "step_started" and event.step_id == "hold":
                break
        before = (await engine.get_run(run_id)).budget
        await engine.stop()
    assert before.spent_tokens > 0 and stub.request_count == 1
    (tmp_path / "block").unlink()
    async with engine_at(tmp_path) as engine:
        assert engine.resumed == [run_id]
        run = await finished(engine, run_id)
    assert run.budget.spent_tokens == before.spent_tokens
    assert refused(run) == ["second"] and stub.request_count == 1
    assert step(run, "first").attempt == 1, "the call made before the restart was made again"
