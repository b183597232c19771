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
from pathlib import Path
from typing import Any

import nats
import pytest
from broker_support import broker, queue_secret, until
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig

from clarion_jupyter.task.batching import Batcher, stopped
from clarion_jupyter.task.broker import STATE_TTL_S, BrokerQueue
from clarion_jupyter.task.queue import Job
from clarion_jupyter.task.queues import make_queue
from clarion_jupyter.testing.brokers import BrokerProcess, NatsServer, RedisServer, TcpProxy

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
        taken = Calls(worker, "_checked_in")
        await asyncio.gather(*(engine.put(job) for job in jobs(SLOTS)))
        slots += [asyncio.create_task(slot(worker)) for _ in range(SLOTS)]
        async for got in results(engine, SLOTS):
            assert sorted(result.output for result in got) == list(range(SLOTS))
        await until(lambda: sum(len(acks) for _results, acks in calls.made["_send"]) == SLOTS, timeout=10)

    assert [len(datas) for (datas,) in offers.made["_offer"]] == [SLOTS], "the jobs put together went in one offer"
    reads = [len(read) for (read,) in taken.made["_checked_in"] if read]
    # Redis hands over what waits in one reply; a NATS pull's messages may arrive in two socket
    # reads, and the intake takes what has arrived.
    assert reads == [SLOTS] if broker.kind == "redis" else sum(reads) == SLOTS and len(reads) <= 2, reads
    checks = [len(checked) for (checked,) in calls.made["_jobs_state"]]
    # Redis reads the jobs' state records in the script that takes them; NATS in one more round trip.
    assert checks == ([] if broker.kind == "redis" else reads)
    assert len(calls.made["_send"]) <= len(reads) + 1, "results and acks go together, not one round trip each"
    assert sum(len(results) for results, _acks in calls.made["_send"]) == SLOTS


async def test_a_job_put_while_a_redis_worker_waits_comes_with_its_state_in_the_round_trip_that_waited(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path) as redis_server:
        async with queues(redis_server.url) as (engine, worker, slots):
            calls = Calls(worker, "_woken_take", "_jobs_state")
            heard: list[str] = []
            worker.on_cancel(heard.append)
            slots.append(asyncio.create_task(slot(worker)))
            await until(lambda: len(calls.made["_woken_take"]) == 1, timeout=10)  # waiting, blocked
            # The run's cancel recorded, not broadcast: only the job's own state can tell the worker.
            await engine._state_set({"cancel.run": engine._signer.tag("cancel", "run")})
            [job] = jobs(1)
            await engine.put(job)
            async for [result] in results(engine, 1):
                assert result.output == 0

    assert heard == ["run"], "the state read with the job says its run was cancelled"
    assert calls.made["_jobs_state"] == [], "no round trip of its own to check the job"
    assert len(calls.made["_woken_take"]) >= 1


def watch_waits(worker: BrokerQueue, made: list[asyncio.Task[Any]]) -> None:
    """Keeps each wait of a Redis worker for jobs (:meth:`_woken_take`), to see which ended."""
    woken = worker._woken_take

    def wait(args: list[Any]) -> asyncio.Task[Any]:
        made.append(asyncio.ensure_future(woken(args)))
        return made[-1]

    worker._woken_take = wait


async def test_a_job_put_while_redis_workers_wait_wakes_one_of_them(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis_server:
        async with queues(redis_server.url) as (engine, first, slots):
            second = make_queue(redis_server.url)
            await second.start()
            try:
                waits: list[list[asyncio.Task[Any]]] = [[], []]
                for worker, made in zip((first, second), waits, strict=True):
                    worker._block_ms = 60_000  # only a job ends a wait here
                    watch_waits(worker, made)
                slots += [asyncio.create_task(slot(worker)) for worker in (first, second)]
                await until(lambda: [len(made) for made in waits] == [1, 1], timeout=10)
                [job] = jobs(1)
                await engine.put(job)
                async for [result] in results(engine, 1):
                    assert result.output == 0
                await until(lambda: sum(map(len, waits)) == 3, timeout=10)  # the woken one waits again
                ended = sorted(len(made) for made in waits)
                still = [made[0].done() for made in waits]
            finally:
                for task in slots:  # a worker's slots stop before its queue closes, as in Worker.stop
                    task.cancel()
                await asyncio.gather(*slots, return_exceptions=True)
                await second.close()

    assert ended == [1, 2] and sorted(still) == [False, True], "one worker woke for the job, the other still waits"


class KvCalls:
    """Counts a NATS queue's key-value requests, by operation and key kind (``took``, ``cancel``, ...)."""

    def __init__(self, queue: BrokerQueue) -> None:
        self.made: list[tuple[str, str]] = []
        for name in ("get", "put", "update", "create", "delete"):
            setattr(queue._kv, name, self._recording(name, getattr(queue._kv, name)))

    def _recording(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        async def recorded(key: str, *args: Any, **kwargs: Any) -> Any:
            self.made.append((name, key.split(".")[0]))
            return await call(key, *args, **kwargs)

        return recorded


async def test_a_nats_job_is_checked_in_with_two_state_requests_and_recorded_done_with_one(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        async with queues(nats_server.url) as (engine, worker, slots):
            kv = KvCalls(worker)
            [job] = jobs(1)
            await engine.put(job)
            slots.append(asyncio.create_task(slot(worker)))
            async for [result] in results(engine, 1):
                assert result.output == 0
            async with asyncio.timeout(10):  # the result is sent before the job is recorded done
                while (record := (await engine._kv.get(f"took.{job.nonce}")).value).startswith(b"["):
                    await asyncio.sleep(0.02)

    assert sorted(kv.made) == [("get", "cancel"), ("put", "took"), ("update", "took")]
    assert record == engine._signer.tag("done", job.nonce), "the job's record is its done tag once it finished"


async def test_a_nats_job_finished_when_done_had_a_record_of_its_own_is_still_refused_again(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        async with queues(nats_server.url) as (engine, worker, slots):
            [job] = jobs(1)
            # As a worker that kept ``done.<nonce>`` beside ``took.<nonce>`` left a finished job.
            await engine._kv.put(f"took.{job.nonce}", b"[]")
            await engine._kv.delete(f"took.{job.nonce}")
            await engine._kv.put(f"done.{job.nonce}", engine._signer.tag("done", job.nonce))
            await engine.put(job)
            slots.append(asyncio.create_task(slot(worker)))
            await until(lambda: worker.dropped["replayed"] == 1, timeout=10)

    assert worker.dropped["replayed"] == 1, "refused as a replay, not run"


async def test_a_nats_state_bucket_made_without_direct_gets_is_given_them(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        old = await js.create_key_value(KeyValueConfig(bucket="clarion_state", ttl=STATE_TTL_S))
        await old.put("cancel.kept", b"tag")
        try:
            async with queues(nats_server.url) as (engine, worker, _slots):
                kept = await worker._state_get(["cancel.kept"])
                direct = [queue._kv._direct for queue in (engine, worker)]
            allowed = (await js.stream_info("KV_clarion_state")).config.allow_direct
        finally:
            await client.close()

    assert allowed and direct == [True, True], "gets go to any server directly, without the JetStream API"
    assert kept == [b"tag"], "the records it held are kept"


async def one_by_one(engine: BrokerQueue, count: int, run_id: str = "run") -> None:
    """``count`` jobs, each put once the one before was answered (a chain of steps)."""
    reading = engine.results()
    for job in jobs(count, run_id):
        await engine.put(job)
        assert (await anext(reading)).output == job.config["value"]
    await reading.aclose()


async def test_a_nats_worker_reads_a_runs_cancel_record_once_while_its_link_holds(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        async with queues(nats_server.url) as (engine, worker, slots):
            kv = KvCalls(worker)
            slots.append(asyncio.create_task(slot(worker)))
            await one_by_one(engine, 3)
            await one_by_one(engine, 1, run_id="other")

    assert kv.made.count(("update", "took")) == 4
    assert kv.made.count(("get", "cancel")) == 2, "once for each run"


async def test_a_nats_worker_whose_link_broke_reads_the_cancel_record_again(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        async with (
            TcpProxy(nats_server.port) as link,
            queues(link.url(nats_server.url), engine_url=nats_server.url) as (engine, worker, slots),
        ):
            heard: list[str] = []
            worker.on_cancel(heard.append)
            kv = KvCalls(worker)
            slots.append(asyncio.create_task(slot(worker)))
            await one_by_one(engine, 1)
            link.cut()
            await until(lambda: not worker._nc.is_connected, timeout=10)
            await engine.cancel("run")  # its broadcast does not reach the worker
            await engine.put(jobs(2)[1])
            link.heal()
            await until(lambda: heard == ["run"], timeout=20)

    assert kv.made.count(("get", "cancel")) == 2, "read again after the link came back"


async def test_a_nats_worker_taking_one_job_at_a_time_asks_for_more_only_at_half(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        async with queues(nats_server.url) as (engine, worker, slots):
            pulls: list[bytes] = []
            publish = worker._nc.publish

            async def recorded(subject: str, payload: bytes = b"", **kwargs: Any) -> None:
                if ".CONSUMER.MSG.NEXT." in subject:
                    pulls.append(payload)
                await publish(subject, payload, **kwargs)

            worker._nc.publish = recorded
            slots.extend(asyncio.create_task(slot(worker)) for _ in range(SLOTS))
            await one_by_one(engine, 16)

    # One request for the eight slots, then one for each four jobs taken (and one for each that expired).
    assert 1 < len(pulls) <= 8, pulls


class Writes:
    """The commands of each socket write a NATS queue's client makes."""

    def __init__(self, queue: BrokerQueue) -> None:
        self.made: list[list[bytes]] = []
        transport = queue._nc._transport
        writelines = transport.writelines

        def recorded(commands: list[bytes]) -> Any:
            self.made.append(list(commands))
            return writelines(commands)

        transport.writelines = recorded

    def acks_with_others(self) -> int:
        """Acks written together with another message (rather than in a write of their own)."""
        count = 0
        for commands in self.made:
            acks = sum(command.startswith(b"PUB $JS.ACK.") for command in commands)
            count += acks if acks < len(commands) else 0
        return count


async def test_nats_acks_leave_in_the_write_of_the_next_message(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as nats_server:
        async with queues(nats_server.url) as (engine, worker, slots):
            writes = {queue: Writes(queue) for queue in (engine, worker)}
            slots.append(asyncio.create_task(slot(worker)))
            await one_by_one(engine, 4)

    # Jobs 1-3 acked with the check-in of the next; results 1-3 acked with the next job's put.
    assert writes[worker].acks_with_others() >= 3, writes[worker].made
    assert writes[engine].acks_with_others() >= 3, writes[engine].made


async def test_nats_messages_are_taken_without_next_msg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Subscription] = []
    next_msg = Subscription.next_msg

    async def counted(self: Subscription, *args: Any, **kwargs: Any) -> Any:
        calls.append(self)
        return await next_msg(self, *args, **kwargs)

    monkeypatch.setattr(Subscription, "next_msg", counted)
    with NatsServer(tmp_path) as nats_server:
        async with queues(nats_server.url) as (engine, worker, slots):
            slots.append(asyncio.create_task(slot(worker)))
            await one_by_one(engine, 3)

    assert calls == [], "nats-py's next_msg makes a task and a uuid for every message"


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


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again_until_it_ends() -> None:
    cancels = 0

    async def library_read() -> None:
        """Swallows the first cancel (as a client's ``wait_for`` may), then waits, as a blocking read does."""
        nonlocal cancels
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancels += 1
        await asyncio.Event().wait()

    task = asyncio.create_task(library_read())
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await stopped(task)

    assert cancels == 1 and task.cancelled(), "a second cancel ended the wait the first one did not"
