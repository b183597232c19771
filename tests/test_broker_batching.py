"""Broker round trips come in batches: several jobs per read, their state in one check, results
and acks in one send, jobs put together in one offer, results acked with the next read.

Each test runs on a real ``redis-server`` and ``nats-server -js``; the engine's and a worker's
queues share the test's loop, and the broker calls each queue makes are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from broker_support import broker, queue_secret, until

from clarion_jupyter.task.batching import Batcher
from clarion_jupyter.task.broker import BrokerQueue
from clarion_jupyter.task.queue import Job
from clarion_jupyter.task.queues import make_queue
from clarion_jupyter.testing.brokers import BrokerProcess

__all__ = ["broker", "queue_secret"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)
SLOTS = 8
Slots = list[asyncio.Task[None]]


class Calls:
    """Records the arguments of a queue's broker calls, by name, and passes them on."""

    def __init__(self, queue: BrokerQueue, *names: str) -> None:
        self.made: dict[str, list[tuple[Any, ...]]] = {name: [] for name in names}
        for name in names:
            setattr(queue, name, self._recording(name, getattr(queue, name)))

    def _recording(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        async def recorded(*args: Any) -> Any:
            self.made[name].append(args)
            return await call(*args)

        return recorded


@asynccontextmanager
async def queues(url: str, engine_url: str | None = None) -> AsyncIterator[tuple[BrokerQueue, BrokerQueue, Slots]]:
    """An engine's queue and a worker's on ``url``, and the worker's slots (started by the test)."""
    engine, worker = make_queue(engine_url or url, 100), make_queue(url)
    await engine.start()
    await worker.start()
    slots: Slots = []
    try:
        yield engine, worker, slots
    finally:
        for task in slots:
            task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        await worker.close()
        await engine.close()


def jobs(count: int, run_id: str = "run") -> list[Job]:
    return [Job(run_id, f"k{i}", "s", 1, "echo", {"value": i}) for i in range(count)]


async def slot(queue: BrokerQueue) -> None:
    async for delivery in queue.consume():
        await queue.report(delivery.job.result("ok", output=delivery.job.config["value"]))
        await queue.ack(delivery)


async def results(engine: BrokerQueue, count: int) -> AsyncIterator[list[Any]]:
    got = []
    async for result in engine.results():
        got.append(result)
        if len(got) == count:
            yield got
            return


async def test_waiting_jobs_are_taken_checked_and_answered_a_batch_per_round_trip(broker: BrokerProcess) -> None:
    async with queues(broker.url) as (engine, worker, slots):
        offers = Calls(engine, "_offer")
        calls = Calls(worker, "_jobs_state", "_send")
        await asyncio.gather(*(engine.put(job) for job in jobs(SLOTS)))
        slots += [asyncio.create_task(slot(worker)) for _ in range(SLOTS)]
        async for got in results(engine, SLOTS):
            assert sorted(result.output for result in got) == list(range(SLOTS))
        await until(lambda: sum(len(acks) for _results, acks in calls.made["_send"]) == SLOTS, timeout=10)

    assert [len(datas) for (datas,) in offers.made["_offer"]] == [SLOTS], "the jobs put together went in one offer"
    assert [len(checked) for (checked,) in calls.made["_jobs_state"]] == [SLOTS], "one read and one check for all"
    assert len(calls.made["_send"]) <= 2, "results and acks go together, not one round trip each"
    assert sum(len(results) for results, _acks in calls.made["_send"]) == SLOTS


async def test_the_engine_acks_a_batch_of_results_in_the_round_trip_that_asks_for_the_next(
    broker: BrokerProcess,
) -> None:
    async with queues(broker.url) as (engine, worker, slots):
        taken = Calls(engine, "_take_results")
        slots.append(asyncio.create_task(slot(worker)))
        reading = engine.results()
        for job in jobs(3):
            await engine.put(job)
            await anext(reading)
        with contextlib.suppress(TimeoutError):  # nothing more comes: the third batch is acked meanwhile
            await asyncio.wait_for(anext(reading), 3)
        await reading.aclose()

    acked = [len(handles) for (handles,) in taken.made["_take_results"]]
    assert acked[0] == 0 and sum(acked) >= 3, acked
    assert len(taken.made["_take_results"]) >= 4


async def test_a_full_queue_takes_the_jobs_it_has_room_for_and_the_rest_follow_in_order(broker: BrokerProcess) -> None:
    async with queues(broker.url, f"{broker.url}?max_pending=3") as (engine, worker, slots):
        offers = Calls(engine, "_offer")
        puts = asyncio.gather(*(engine.put(job) for job in jobs(5)))
        await until(lambda: len(offers.made["_offer"]) >= 3, timeout=10)
        assert not puts.done(), "two jobs wait for room"
        slots.append(asyncio.create_task(slot(worker)))
        await asyncio.wait_for(puts, 20)
        async for got in results(engine, 5):
            seen = sorted(result.key for result in got)

    assert len(offers.made["_offer"][0][0]) == 3, "as many as there is room for, in one offer"
    assert seen == [f"k{i}" for i in range(5)]


async def test_a_batcher_sends_what_piled_up_during_a_send_in_one_send_in_order() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> list[bool] | None:
        sent.append(items)
        await release.wait()
        return [item != 3 or len(sent) > 2 for item in items]  # 3 is refused once (a full queue)

    batcher: Batcher[int] = Batcher(send, limit=100, batch=100, pauses=(0.001, 0.01))
    first = await batcher.add(0)
    await asyncio.sleep(0)
    later = [await batcher.add(item) for item in (1, 2, 3, 4)]
    given_up = await batcher.add(5)
    given_up.cancel()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 5)
    await batcher.drain()
    await batcher.stop()

    assert sent == [[0], [1, 2, 3, 4], [3]], "one send for all that waited; the refused one again, first"
