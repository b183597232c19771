"""Iterating on runs; one JSON line per workload.

R1  re-run the last step of a 50-step chain on the local queue: milliseconds from the
    re-run call to its finished run document (target under 50 ms), and how many tasks it
    started (1: the 49 reused steps call none)
C1  LLM cache hits over a 1,000-entry cache, on an engine started after the entries were
    stored: the engine's lookup before dispatch (the request built and hashed, its entry
    found), p50 and p99 in milliseconds (target p99 under 2 ms) once the entries were read
    (``lookup_ms``: from memory) and the first time each is read (``first_lookup_ms``: from
    DuckDB, through a reader thread); then whole one-step runs answered from the cache (the
    step's duration and submit-to-document), and the requests that reached the local
    OpenAI-compatible server (0)

Usage: python bench/iterate.py [--repeat N] [--lookups N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clarion_jupyter import Engine
from clarion_jupyter.agent.models import Agent
from clarion_jupyter.storage.llm_cache import CacheEntry
from clarion_jupyter.task.builtin.llm_call import LLMCallConfig, LLMCallTask
from clarion_jupyter.task.queue import Job
from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.workloads import chain

CACHED_ENTRIES = 1000


def emit(name: str, **values: Any) -> None:
    print(json.dumps({"workload": name, **values}), flush=True)


async def r1(engine: Engine, repeat: int) -> None:
    n = 50
    parent = await engine.wait(await engine.submit(chain(n)))
    assert parent.status == "succeeded", parent.error
    timings, started = [], []
    for _ in range(repeat + 1):  # the first warms the compiler's cache and the views
        start = time.perf_counter()
        run = await engine.wait((await engine.rerun(parent.run_id, from_step=f"s{n - 1}")).run_id)
        timings.append(time.perf_counter() - start)
        assert run.status == "succeeded", run.error
        started.append(sum(1 for e in await engine.events(run.run_id) if e.type == "step_started"))
    timings = timings[1:]
    emit(
        "R1",
        steps=n,
        rerun_ms_median=round(statistics.median(timings) * 1000, 2),
        rerun_ms_max=round(max(timings) * 1000, 2),
        tasks_started=max(started),
        target_ms=50,
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 3)


REPLY = {"text": "A cached reply. " * 20, "model": "openai/fake", "usage": {"prompt_tokens": 30, "completion_tokens": 80},
         "cost_usd": None}  # fmt: skip


def asks(agent: Agent) -> list[tuple[Job, LLMCallConfig]]:
    """One job per distinct request, as the engine builds them for an ``llm_call`` step."""
    document, jobs = agent.model_dump(mode="json"), []
    for i in range(CACHED_ENTRIES):
        config = {"agent": agent.id, "prompt": f"Question number {i}: what is {i} squared?"}
        jobs.append((Job("bench", "ask", "ask", 1, "llm_call", config, resources={"agent": document}),
                     LLMCallConfig.model_validate(config)))  # fmt: skip
    return jobs


async def lookups(engine: Engine, jobs: list[tuple[Job, LLMCallConfig]], count: int) -> tuple[list[float], int]:
    """The engine's lookup before dispatch, ``count`` times: the request built and hashed, its entry read."""
    task, timings, hits = LLMCallTask(), [], 0
    for n in range(count):
        job, config = jobs[(n * 7919) % len(jobs)]
        start = time.perf_counter()
        key = await task.cache_key(config, job.context(engine.workspace, engine.settings))
        hits += await engine.storage.llm_cache.get(key) is not None
        timings.append(time.perf_counter() - start)
    return timings, hits


async def c1(db: Path, workspace: str, count: int, runs: int) -> None:
    with OpenAIStubServer(reply=REPLY["text"]) as stub:
        agent = Agent(id="bench", name="Bench", model="openai/fake", api_base=stub.url, system_prompt="Be brief.")
        jobs = asks(agent)
        async with Engine(db, workspace_root=workspace) as engine:
            await engine.create_agent(agent)
            for job, config in jobs:  # what the first calls stored: one entry per distinct request
                key = await LLMCallTask().cache_key(config, job.context(engine.workspace, engine.settings))
                await engine.storage.llm_cache.put(CacheEntry(key, agent.id, agent.model, REPLY), 10**9)
        async with Engine(db, workspace_root=workspace) as engine:  # a new process's engine: nothing in memory
            cold, cold_hits = await lookups(engine, jobs, CACHED_ENTRIES)
            warm, warm_hits = await lookups(engine, jobs, count)
            steps, whole = [], []
            for n in range(runs + 1):
                prompt = jobs[n % CACHED_ENTRIES][0].config["prompt"]
                step = {"id": "ask", "task": "llm_call", "with": {"agent": agent.id, "prompt": prompt}}
                start = time.perf_counter()
                run = await engine.wait(await engine.submit({"name": "ask", "steps": [step]}, cache=True))
                whole.append(time.perf_counter() - start)
                assert run.status == "succeeded" and run.steps[0].output["cached"], run.error
                steps.append(run.steps[0].duration_ms / 1000)
            entries = (await engine.cache_stats()).entries
        emit(
            "C1",
            entries=entries,
            hits=cold_hits + warm_hits,
            lookups=CACHED_ENTRIES + count,
            lookup_ms_p50=percentile(warm, 0.5),
            lookup_ms_p99=percentile(warm, 0.99),
            target_p99_ms=2,
            first_lookup_ms_p50=percentile(cold, 0.5),
            first_lookup_ms_p99=percentile(cold, 0.99),
            step_ms_p50=percentile(steps[1:], 0.5),
            step_ms_p99=percentile(steps[1:], 0.99),
            run_ms_p50=percentile(whole[1:], 0.5),
            run_ms_p99=percentile(whole[1:], 0.99),
            provider_requests=stub.request_count,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--lookups", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        async with Engine(Path(tmp) / "bench.duckdb", workspace_root=tmp) as engine:
            await r1(engine, args.repeat)
        await c1(Path(tmp) / "cache.duckdb", tmp, args.lookups, max(args.repeat * 10, 50))


if __name__ == "__main__":
    asyncio.run(main())
