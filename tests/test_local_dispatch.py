"""The in-process queue's result path: a result reaches its run in the worker's own report."""

from __future__ import annotations

import asyncio

from clarion_jupyter.task.local import LocalQueue
from clarion_jupyter.task.queue import JobResult


async def test_a_reported_result_is_handed_to_the_sink_within_the_report() -> None:
    queue, got = LocalQueue(), []
    queue.deliver_to(got.append)
    result = JobResult("run", "a", 1, "ok", output={"value": 1})
    await queue.report(result)
    assert got == [result]


async def test_results_reported_before_a_sink_is_set_stay_in_the_results_stream() -> None:
    queue, got = LocalQueue(), []
    early = JobResult("run", "a", 1, "ok")
    await queue.report(early)
    queue.deliver_to(got.append)
    stream = queue.results()
    assert await asyncio.wait_for(anext(stream), 1) is early
    assert got == []
