"""Iterating on runs; one JSON line per workload.

R1  re-run the last step of a 50-step chain on the local queue: milliseconds from the
    re-run call to its finished run document (target under 50 ms), and how many tasks it
    started (1: the 49 reused steps call none)

Usage: python bench/iterate.py [--repeat N]
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
from clarion_jupyter.testing.workloads import chain


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        async with Engine(Path(tmp) / "bench.duckdb", workspace_root=tmp) as engine:
            await r1(engine, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
