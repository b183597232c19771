"""Engine benchmarks with persistence on; one JSON line per workload.

W1  50-step chain of echo steps: engine overhead per step (ms)
W2  200-step fan-out (parallel group) and a join step: steps/s
W3  200 concurrent runs of a 5-step chain: runs/s and steps/s
W4  1,000 llm_call steps (a priced model name, openai/gpt-4o-mini, so litellm prices each
    call as in real use) through for_each against a local OpenAI-compatible server that
    answers after 100 ms, workers=64: wall time against the ideal 1000 x 0.1 / 64 s

Usage: python bench/engine.py [--only W1,W2] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from clarion_jupyter import Engine
from clarion_jupyter.task.builtin.llm_call import DEFAULT_PROVIDER
from clarion_jupyter.testing.workloads import chain, fan_out, llm_map, stub_agent, stub_server, timed_run


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(name: str, **values: Any) -> None:
    print(json.dumps({"workload": name, **values, "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


async def w1(engine: Engine, repeat: int) -> None:
    """Per-step overhead is the marginal cost of a step: (t(50 steps) - t(1 step)) / 49, which
    leaves out the fixed cost of a run (its two durable commits: queued, and finished)."""
    n = 50
    await timed_run(engine, chain(5))
    long = statistics.median([await timed_run(engine, chain(n)) for _ in range(repeat)])
    short = statistics.median([await timed_run(engine, chain(1)) for _ in range(repeat)])
    emit(
        "W1",
        steps=n,
        ms_per_step=round((long - short) * 1000 / (n - 1), 4),
        run_fixed_ms=round(short * 1000, 2),
        wall_ms_per_step=round(long * 1000 / n, 4),
        target_ms_per_step=0.3,
    )


async def w2(engine: Engine, repeat: int) -> None:
    n = 200
    samples = [await timed_run(engine, fan_out(n)) for _ in range(repeat)]
    best = min(samples)
    emit(
        "W2",
        steps=n + 1,
        steps_per_s=round((n + 1) / best),
        median_steps_per_s=round((n + 1) / statistics.median(samples)),
        target_steps_per_s=6000,
    )


async def w3(engine: Engine, repeat: int) -> None:
    runs, length = 200, 5
    workflow = chain(length)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        ids = await asyncio.gather(*(engine.submit(workflow) for _ in range(runs)))
        results = await asyncio.gather(*(engine.wait(i) for i in ids))
        assert all(r.status == "succeeded" for r in results)
        best = min(best, time.perf_counter() - start)
    emit(
        "W3",
        runs=runs,
        steps=runs * length,
        runs_per_s=round(runs / best),
        steps_per_s=round(runs * length / best),
        target_steps_per_s=2500,
    )


async def w4(engine: Engine, repeat: int) -> None:
    n, delay, workers = 1000, 0.1, 64
    with stub_server(delay) as (url, _pid):
        await engine.agents.upsert(stub_agent(url))
        await engine.wait(await engine.submit(llm_map(), {"prompts": list(range(workers))}))
        await DEFAULT_PROVIDER.settled()  # the LLM processes that warm-up started have imported litellm
        start = time.perf_counter()
        cpu = time.process_time()
        run = await engine.wait(await engine.submit(llm_map(), {"prompts": list(range(n))}))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert run.status == "succeeded", run.error
    ideal = n * delay / workers
    emit(
        "W4",
        calls=n,
        workers=workers,
        wall_s=round(wall, 3),
        ideal_s=round(ideal, 3),
        over_ideal_pct=round((wall / ideal - 1) * 100, 1),
        cpu_ms_per_call=round(cpu * 1000 / n, 2),
        target_over_ideal_pct=25,
    )


WORKLOADS = {"W1": (w1, 8), "W2": (w2, 8), "W3": (w3, 64), "W4": (w4, 64)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            fn, workers = WORKLOADS[name]
            async with Engine(Path(tmp) / f"{name}.duckdb", workers=workers, workspace_root=tmp) as engine:
                await fn(engine, args.repeat)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
