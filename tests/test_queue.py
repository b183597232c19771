"""LocalQueue and the worker pool: bounded, nothing dropped, results back to the engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.base import TaskSettings
from clarion_jupyter.task.local import LocalQueue
from clarion_jupyter.task.queue import Job
from clarion_jupyter.task.registry import TaskRegistry
from clarion_jupyter.task.worker import Worker


def echo_job(n: int) -> Job:
    return Job(run_id="r", key=f"s{n}", step_id=f"s{n}", attempt=1, task="echo", config={"value": n})


async def test_a_full_queue_makes_the_producer_wait_instead_of_dropping() -> None:
    queue = LocalQueue(maxsize=2)
    await queue.put(echo_job(0))
    await queue.put(echo_job(1))
    blocked = asyncio.ensure_future(queue.put(echo_job(2)))
    await asyncio.sleep(0.05)
    assert not blocked.done()

    consumer = queue.consume()
    first = await anext(consumer)
    await asyncio.wait_for(blocked, 1)
    rest = [await anext(consumer), await anext(consumer)]

    assert [d.job.key for d in [first, *rest]] == ["s0", "s1", "s2"]


async def test_workers_run_every_job_and_report_each_result_once(tmp_path: Path) -> None:
    queue = LocalQueue(maxsize=4)
    worker = Worker(queue, TaskRegistry.from_entry_points(), Workspace(tmp_path), TaskSettings(), concurrency=3)
    await worker.start()
    try:
        for n in range(50):
            await queue.put(echo_job(n))
        results = queue.results()
        received = [await asyncio.wait_for(anext(results), 5) for _ in range(50)]
    finally:
        await worker.stop()

    assert sorted(r.output["value"] for r in received) == list(range(50))
    assert {r.kind for r in received} == {"ok"}


async def test_a_job_given_back_is_delivered_again() -> None:
    queue = LocalQueue(maxsize=2)
    await queue.put(echo_job(7))
    consumer = queue.consume()
    delivery = await anext(consumer)
    await queue.nack(delivery)

    again = await asyncio.wait_for(anext(consumer), 1)

    assert again.job.id == delivery.job.id
