"""The LLM call cache on a real engine and DuckDB file (ARCHITECTURE.md, "Iterating on runs").

Every claim that the provider was not called is counted: the LLM is the local
OpenAI-compatible server, which counts the HTTP requests it gets.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from notebook_support import Shell
from test_notebook_kernel import execute, start_kernel
from test_resume import SUPPORT, Runner

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import BadRequest
from clarion_jupyter.storage.llm_cache import CacheEntry
from clarion_jupyter.storage.records import utcnow
from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.workflow.agent_run import AgentRunRequest
from clarion_jupyter.workflow.models import StepRun, WorkflowRun

pytestmark = pytest.mark.timeout(90)

KEY_ENV = "CLARION_CACHE_TEST_API_KEY"
SECRET = "sk-cache-test-SECRET-31337"
STALLED = SUPPORT / "run_stalled_commit.py"
PRICED = "openai/gpt-4o-mini"
"""A model litellm prices by name, also when the local server answers for it."""


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(reply="The answer is 42.") as server:
        yield server


@asynccontextmanager
async def engine_at(tmp_path: Path, **options: Any) -> AsyncIterator[Engine]:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path, **options) as engine:
        yield engine


def agent(server: OpenAIStubServer, agent_id: str = "asker", **fields: Any) -> dict[str, Any]:
    return {"id": agent_id, "name": agent_id, "model": "openai/fake", "api_base": server.url, **fields}


def ask(prompt: str = "What is the answer?", agent_id: str = "asker", **with_: Any) -> dict[str, Any]:
    step = {"id": "ask", "task": "llm_call", "with": {"agent": agent_id, "prompt": prompt, **with_}}
    return {"name": "Ask", "steps": [step]}


async def run(engine: Engine, doc: dict[str, Any], **submit: Any) -> WorkflowRun:
    finished = await asyncio.wait_for(engine.wait(await engine.submit(doc, **submit)), 60)
    assert finished.status == "succeeded", finished.error
    return finished


def step(run: WorkflowRun, key: str = "ask") -> StepRun:
    return next(s for s in run.steps if s.key == key)


# -- hits and misses -------------------------------------------------------------------


async def test_the_second_identical_call_makes_no_http_request(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub))
        first = await run(engine, ask(), cache=True)
        second = await run(engine, ask(), cache=True)
    assert stub.request_count == 1
    assert step(first).output["cached"] is False
    assert step(second).output["cached"] is True
    assert step(second).output["text"] == "The answer is 42."
    assert step(second).output["cache_key"] == step(first).output["cache_key"]


async def test_a_hit_costs_nothing_and_keeps_the_first_calls_usage(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub, model=PRICED))
        first = await run(engine, ask(), cache=True)
        second = await run(engine, ask(), cache=True)
    assert stub.request_count == 1
    paid, free = step(first), step(second)
    assert paid.output["cost_usd"] > 0 and paid.usage.cost_usd > 0
    assert free.output["cost_usd"] == 0 and free.usage.cost_usd == 0
    assert free.output["usage"] == paid.output["usage"]
    assert (free.usage.prompt_tokens, free.usage.completion_tokens) == (
        paid.usage.prompt_tokens,
        paid.usage.completion_tokens,
    )
    assert second.usage.cost_usd == 0, "the run's total counted the cached call"


async def test_a_changed_temperature_misses(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub, parameters={"temperature": 0.1}))
        await run(engine, ask(), cache=True)
        hotter = await run(engine, ask(parameters={"temperature": 0.9}), cache=True)
        again = await run(engine, ask(parameters={"temperature": 0.9}), cache=True)
    assert stub.request_count == 2
    assert step(hotter).output["cached"] is False
    assert step(again).output["cached"] is True


async def test_a_changed_api_base_misses(tmp_path: Path, stub: OpenAIStubServer) -> None:
    with OpenAIStubServer(reply="The answer is 42.") as elsewhere:
        async with engine_at(tmp_path) as engine:
            await engine.create_agent(agent(stub))
            await run(engine, ask(), cache=True)
            await engine.replace_agent("asker", agent(elsewhere))
            moved = await run(engine, ask(), cache=True)
        assert (stub.request_count, elsewhere.request_count) == (1, 1)
    assert step(moved).output["cached"] is False


async def test_a_changed_prompt_misses_and_streaming_does_not_change_the_key(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub))
        await run(engine, ask("one"), cache=True)
        await run(engine, ask("two"), cache=True)
        streamed = await run(engine, ask("one", stream=True), cache=True)
    assert stub.request_count == 2
    assert step(streamed).output["cached"] is True


async def test_the_api_key_is_never_stored_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider quotes the key back (some do, in errors): the worker masks it before the
    reply reaches the engine, so neither the cache nor anything else in the file holds it."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    with OpenAIStubServer(reply=f"I was called with {SECRET}.", api_key=SECRET) as keyed:
        async with engine_at(tmp_path) as engine:
            await engine.create_agent(agent(keyed, api_key_env=KEY_ENV))
            await run(engine, ask(), cache=True)
            hit = await run(engine, ask(), cache=True)
        assert keyed.request_count == 1
    assert step(hit).output["text"] == "I was called with ***."
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    try:
        (entries,) = con.execute("SELECT count(*) FROM llm_cache").fetchone()
        (reply,) = con.execute("SELECT reply FROM llm_cache").fetchone()
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        stored = [str(row) for table in tables for row in con.execute(f'SELECT * FROM "{table}"').fetchall()]
    finally:
        con.close()
    assert entries == 1
    assert set(json.loads(reply)) == {"text", "model", "usage", "cost_usd"}
    assert not [row for row in stored if SECRET in row]


# -- who decides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_cache", "run_cache", "agent_cache", "server", "cached"),
    [
        (None, None, None, False, False),  # nothing asks: off
        (None, None, None, True, True),  # the server's trait
        (None, None, True, False, True),  # the agent's cache: true
        (None, False, True, True, False),  # the run's --no-cache beats the agent and the server
        (None, True, False, False, True),  # the run's --cache beats the agent's cache: false
        (False, True, True, True, False),  # a step's with.cache: false beats everything
        (True, False, False, False, True),  # and its with.cache: true too
    ],
)
async def test_the_most_specific_choice_decides(
    tmp_path: Path,
    stub: OpenAIStubServer,
    step_cache: bool | None,
    run_cache: bool | None,
    agent_cache: bool | None,
    server: bool,
    cached: bool,
) -> None:
    with_ = {} if step_cache is None else {"cache": step_cache}
    async with engine_at(tmp_path, llm_cache=server) as engine:
        await engine.create_agent(agent(stub, cache=agent_cache))
        await run(engine, ask(**with_), cache=run_cache)
        second = await run(engine, ask(**with_), cache=run_cache)
    assert stub.request_count == (1 if cached else 2)
    assert step(second).output.get("cached", False) is cached


async def test_a_run_without_the_cache_neither_reads_nor_writes_it(tmp_path: Path, stub: OpenAIStubServer) -> None:
    """A run that does not use the cache neither reads nor writes it."""
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub))
        plain = await run(engine, ask())
        await run(engine, ask(), cache=True)
        await run(engine, ask(), cache=True)
        stats = await engine.cache_stats()
    assert "cached" not in step(plain).output and "cache_key" not in step(plain).output
    assert stub.request_count == 2
    assert (stats.entries, stats.agents) == (1, {"asker": 1})


# -- what a hit looks like -------------------------------------------------------------


async def test_a_streamed_hit_replays_its_text_as_llm_token_events(tmp_path: Path) -> None:
    reply = "Streaming from the cache: " + " ".join(f"word{i}" for i in range(80))
    with OpenAIStubServer(reply=reply, chunk_chars=5) as server:
        async with engine_at(tmp_path) as engine:
            await engine.create_agent(agent(server))
            live = await run(engine, ask(stream=True), cache=True)
            replayed = await run(engine, ask(stream=True), cache=True)
            live_events = await engine.events(live.run_id)
            replay_events = await engine.events(replayed.run_id)
        assert server.request_count == 1
    tokens = [e.data["text"] for e in replay_events if e.type == "llm_token"]
    assert len(tokens) > 1, "the cached text came back in one piece, not as a stream"
    assert "".join(tokens) == reply == "".join(e.data["text"] for e in live_events if e.type == "llm_token")
    kinds = [e.type for e in replay_events if e.step_id == "ask"]
    assert kinds[0] == "step_started" and kinds[-1] == "step_completed"
    assert set(kinds[1:-1]) == {"llm_token"}
    assert step(replayed).output["cached"] is True


async def test_llm_calls_say_which_calls_the_cache_answered(tmp_path: Path, stub: OpenAIStubServer) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub))
        first = await run(engine, ask(), cache=True)
        second = await run(engine, ask(), cache=True)
        result = await engine.query("SELECT run_id, cached, cost_usd, completion_tokens FROM llm_calls ORDER BY ts")
    assert result.rows == [
        [first.run_id, False, None, step(first).usage.completion_tokens],
        [second.run_id, True, 0.0, step(first).usage.completion_tokens],
    ]


async def test_a_rerun_with_the_cache_answers_the_steps_it_runs_again(tmp_path: Path, stub: OpenAIStubServer) -> None:
    doc = ask()
    doc["steps"].append({"id": "after", "task": "echo", "with": {"value": "{{ steps.ask.output.text }}"}})
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub))
        parent = await run(engine, doc, cache=True)
        rerun = await engine.rerun(parent.run_id, from_step="ask", cache=True)
        rerun = await asyncio.wait_for(engine.wait(rerun.run_id), 60)
    assert rerun.status == "succeeded" and rerun.cache is True
    assert stub.request_count == 1
    assert step(rerun).output["cached"] is True and not step(rerun).reused_from


# -- clearing and the cap --------------------------------------------------------------


async def put_entry(engine: Engine, key: str, agent_id: str, age: timedelta = timedelta(0)) -> None:
    reply = {"text": f"reply {key}", "model": "openai/fake", "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    entry = CacheEntry(key, agent_id, "openai/fake", reply | {"cost_usd": None}, utcnow() - age)
    await engine.storage.llm_cache.put(entry, max_bytes=10**9)


async def test_clear_by_agent_and_by_age(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await put_entry(engine, "old-a", "a", timedelta(days=8))
        await put_entry(engine, "new-a", "a")
        await put_entry(engine, "old-b", "b", timedelta(days=8))
        await put_entry(engine, "new-b", "b")
        assert await engine.clear_cache(older_than="7d") == 2
        assert (await engine.cache_stats()).agents == {"a": 1, "b": 1}
        assert await engine.clear_cache(agent_id="a") == 1
        assert await engine.storage.llm_cache.get("new-a") is None
        assert await engine.storage.llm_cache.get("new-b") is not None
        assert await engine.clear_cache() == 1
        assert (await engine.cache_stats()).entries == 0


async def test_an_age_that_is_not_one_is_refused_naming_the_field(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        with pytest.raises(BadRequest) as caught:
            await engine.clear_cache(older_than="a week")
    assert caught.value.details == {"field": "older_than", "value": "a week"}


def clarion(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clarion_jupyter.cli", *args, "--db", str(tmp_path / "c.duckdb")]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)


async def test_clarion_cache_clear_and_stats_on_the_command_line(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await put_entry(engine, "old-a", "a", timedelta(hours=13))
        await put_entry(engine, "new-a", "a")
        await put_entry(engine, "new-b", "b")
    stats = await asyncio.to_thread(clarion, tmp_path, "cache", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["agents"] == {"a": 2, "b": 1}
    aged = await asyncio.to_thread(clarion, tmp_path, "cache", "clear", "--older-than", "12h")
    assert (aged.returncode, aged.stdout.strip()) == (0, "deleted 1 cached reply")
    by_agent = await asyncio.to_thread(clarion, tmp_path, "cache", "clear", "--agent", "b", "--json")
    assert json.loads(by_agent.stdout) == {"deleted": 1}
    shown = await asyncio.to_thread(clarion, tmp_path, "cache", "stats")
    assert shown.stdout.startswith("1 cached reply") and " a " in shown.stdout
    refused = await asyncio.to_thread(clarion, tmp_path, "cache", "clear", "--older-than", "soon")
    assert refused.returncode == 2 and "older_than 'soon' is not an age" in refused.stderr


async def test_the_size_cap_evicts_the_oldest_entries(tmp_path: Path) -> None:
    with OpenAIStubServer(reply=lambda body: "x" * 200 + body["messages"][-1]["content"]) as server:
        async with engine_at(tmp_path, llm_cache_max_bytes=700) as engine:
            await engine.create_agent(agent(server))
            for prompt in ("one", "two", "three"):  # about 300 bytes each: the third evicts the first
                await run(engine, ask(prompt), cache=True)
            stats = await engine.cache_stats()
            three = await run(engine, ask("three"), cache=True)
            assert server.request_count == 3
            one = await run(engine, ask("one"), cache=True)
        assert server.request_count == 4
    assert stats.entries == 2 and stats.bytes <= 700
    assert step(three).output["cached"] is True
    assert step(one).output["cached"] is False


# -- a restart -------------------------------------------------------------------------


async def test_a_resumed_run_answers_its_interrupted_call_from_the_cache(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    """The reply came back and was cached, the step's success was never committed, the engine
    was killed: the attempt that runs again after the restart calls no provider."""
    runner = Runner(tmp_path / "c.duckdb", tmp_path, stub.url, script=STALLED)
    try:
        run_id = (await asyncio.to_thread(runner.expect, "run", "*"))[1]
        await asyncio.to_thread(runner.expect, "stalled")
    finally:
        runner.kill()
    assert stub.request_count == 1
    async with engine_at(tmp_path) as engine:
        assert run_id in engine.resumed
        resumed = await asyncio.wait_for(engine.wait(run_id), 60)
    assert resumed.status == "succeeded" and resumed.cache is True
    assert stub.request_count == 1, "the interrupted call went to the provider again"
    assert step(resumed).attempt == 2
    assert step(resumed).output["cached"] is True
    assert step(resumed).output["text"] == "The answer is 42."


# -- a notebook ------------------------------------------------------------------------

CELL = """%%clarion --cache
id: ask
name: Ask
steps:
  - {id: ask, task: llm_call, with: {agent: asker, prompt: "What is the answer?"}}
outputs:
  answer: "{{ steps.ask.output.text }}"
"""


async def test_running_a_cell_again_with_cache_pays_nothing_twice(tmp_path: Path, stub: OpenAIStubServer) -> None:
    manager, client = await start_kernel(tmp_path)
    try:
        await execute(client, "%load_ext clarion_jupyter")
        saved, text = await execute(
            client, f"%%clarion save-agent\nid: asker\nname: Asker\nmodel: openai/fake\napi_base: {stub.url}\n"
        )
        assert saved["status"] == "ok", text
        report = "print('cached:', _.steps[0].output['cached'], 'cost:', _.steps[0].usage.cost_usd, _.outputs)"
        for cached in (False, True):
            reply, text = await execute(client, CELL)
            assert reply["status"] == "ok", text
            _, shown = await execute(client, report)
            assert f"cached: {cached} " in shown, shown
            assert "{'answer': 'The answer is 42.'}" in shown
        assert "cost: 0.0 " in shown
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)
    assert stub.request_count == 1


async def test_clarion_agents_set_cache_true_turns_the_cache_on_for_the_agent(
    tmp_path: Path, stub: OpenAIStubServer
) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_agent(agent(stub))
    changed = await asyncio.to_thread(clarion, tmp_path, "agents", "set", "asker", "cache=true")
    assert changed.returncode == 0, changed.stderr
    async with engine_at(tmp_path) as engine:
        assert (await engine.get_agent("asker")).cache is True
        await run(engine, ask())
        second = await run(engine, ask())
    assert stub.request_count == 1
    assert step(second).output["cached"] is True


def test_the_line_magics_run_and_rerun_take_cache(shell: Shell, stub: OpenAIStubServer) -> None:
    clarion = shell.magics.session(local=True).clarion()
    shell.magics.loop.run(clarion.create_agent(agent(stub)))
    assert shell.cell("--save --no-cache", CELL.split("\n", 1)[1]).success
    first = shell.last
    assert shell.line("run ask --cache").success
    saved = shell.last
    assert shell.line(f"rerun {first.run_id} --from ask --cache").success
    rerun = shell.last
    assert stub.request_count == 2  # the --no-cache cell, then the first run that asked for the cache
    assert first.steps[0].output.get("cached") is None
    assert saved.steps[0].output["cached"] is False
    assert rerun.steps[0].output["cached"] is True


# -- agent runs ------------------------------------------------------------------------


async def test_an_agent_run_asked_to_use_the_cache_is_answered_from_it_the_second_time(tmp_path: Path) -> None:
    reply = json.dumps({"summary": "Nothing to change", "file_changes": []})
    request = AgentRunRequest(prompt="Look at the code", apply="never", cache=True)
    with OpenAIStubServer(reply=reply) as server:
        async with engine_at(tmp_path) as engine:
            await engine.create_agent(agent(server))
            first, second = [await engine.wait(await engine.run_agent("asker", request)) for _ in range(2)]
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert (step(first, "reply").output["cached"], step(second, "reply").output["cached"]) == (False, True)
    assert server.request_count == 1
    assert "cache" not in second.inputs
