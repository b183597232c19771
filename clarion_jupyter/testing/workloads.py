"""Workflows and timings the benchmarks share (bench/engine.py, bench/queues.py)."""

from __future__ import annotations

import time
from typing import Any

from ..workflow.engine import Engine


def chain(n: int) -> dict[str, Any]:
    """``n`` echo steps, each reading the one before: every step waits for its predecessor."""
    steps = [{"id": "s0", "task": "echo", "with": {"value": 0}}]
    steps += [
        {"id": f"s{i}", "task": "echo", "with": {"value": f"{{{{ steps.s{i - 1}.output.value + 1 }}}}"}}
        for i in range(1, n)
    ]
    return {"name": f"chain-{n}", "steps": steps}


def fan_out(n: int) -> dict[str, Any]:
    """``n`` parallel echo steps and a join step that reads the first and the last."""
    group = [{"id": f"p{i}", "task": "echo", "with": {"value": i}} for i in range(n)]
    join = {
        "id": "join",
        "task": "echo",
        "with": {"value": f"{{{{ steps.p0.output.value + steps.p{n - 1}.output.value }}}}"},
    }
    return {"name": f"fan-{n}", "steps": [{"parallel": group}, join]}


async def timed_run(engine: Engine, workflow: dict[str, Any]) -> float:
    """Seconds from submit to the end of a run, which must succeed."""
    start = time.perf_counter()
    run = await engine.wait(await engine.submit(workflow))
    assert run.status == "succeeded", run.error
    return time.perf_counter() - start
