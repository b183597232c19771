"""NatsQueue: step jobs in a JetStream work-queue stream, results in another, cancels on core NATS.

Names, under the URL's ``prefix`` (``nats://host:4222?prefix=clarion``):

- stream ``{prefix}_jobs`` (subject ``{prefix}.jobs``, work-queue retention: a job is gone
  once acked; ``max_msgs`` = ``max_pending`` with discard-new, so a full stream refuses a
  job and ``put`` waits and offers it again) and its durable pull consumer ``workers``, with
  explicit acks and ``ack_wait`` = the visibility timeout: a job not acked in time (its
  worker died) is redelivered; a worker marks its running jobs in progress to keep them.
- stream ``{prefix}_results`` (subject ``{prefix}.results``) and the engine's durable push
  consumer ``engine``: results wait there while no engine runs, and one that was delivered
  but not acked comes again.
- core subject ``{prefix}.cancel``: every worker hears which run was cancelled.
- key-value bucket ``{prefix}_state``: the state records. A job's ``took.<nonce>`` is both of
  its records: the JSON array of the workers it went to while it runs, its done tag once it
  finished; so a worker checks a job in with one request (that record created with itself),
  plus the run's cancel read for the first job of each run while its link holds, and records
  it done with one. (A job finished before records were kept so has its ``took`` deleted and a
  ``done.<nonce>``, which is still honoured.)

Socket writes cost more CPU than anything else here (on loopback the kernel's whole TCP path
runs in the writer): acks wait for the next message the client sends and leave in its write
(:class:`_Acks`), and messages are taken from callback inboxes (:class:`_Inbox`).

A JetStream that lost its streams (restarted on an empty store) is rebuilt by the first
client that meets a missing stream or consumer; the engine, missing its ``epoch``, sends
again the jobs it waits for.

nats-py's ``drain()`` hangs after a pull ``fetch`` timed out, so pull subscriptions are
unsubscribed and the connection closed instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import (
    DEFAULT_PREFIX,
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StreamConfig,
)
from nats.js.kv import KeyValue

from .broker import (
    CANCELS_KEPT,
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_PENDING,
    RESULT_BATCH,
    STATE_TTL_S,
    Ack,
    BrokerQueue,
    JobState,
    Raw,
    Sealed,
    TakeJobs,
    Taken,
    Unreachable,
)
from .queue import Delivery, Job

log = logging.getLogger(__name__)
WORKERS, ENGINE = "workers", "engine"
FETCH_WAIT_S = 1.0
"""How long a worker slot's pull (or the engine's wait for results) lasts before it is made again."""
RESULTS_ACK_WAIT_S = 30.0
STREAM_FULL = 10077
"""JetStream's error code for "maximum messages exceeded" (a discard-new stream at its bound)."""
PULL_S = 2.0
"""How long a worker's pull request for jobs stands before the server ends it (and it is made again)."""
PUBLISH_TIMEOUT_S = 5.0
"""How long a publish waits for JetStream's acknowledgement before it is tried again."""
ACK_DELAY_S = 0.05
"""Longest an ack (of a finished job, of results the engine took) waits for a message to leave with."""


class NatsQueue(BrokerQueue):
    """Step jobs through a NATS JetStream work-queue stream, for ``clarion worker`` processes anywhere."""

    kind = "nats"
    transient = (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        nats.errors.FlushTimeoutError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
        nats.js.errors.ServiceUnavailableError,
    )
    broker_errors = (nats.errors.Error, OSError)

    def __init__(self, url: str, max_pending: int | None = None) -> None:
        super().__init__(url, max_pending)
        prefix = self.options.prefix
        self._jobs_stream, self._jobs_subject = f"{prefix}_jobs", f"{prefix}.jobs"
        self._results_stream, self._results_subject = f"{prefix}_results", f"{prefix}.results"
        self._cancel_subject = f"{prefix}.cancel"
        self._nc: nats.NATS | None = None
        self._state_bucket = f"{prefix}_state"
        self._results_sub: Any = None
        self._results_inbox: _Inbox | None = None
        self._kv: KeyValue | None = None
        self._connected = False
        self._link = 0
        """Bumped whenever the connection breaks, is made again or drops messages: a cancel
        broadcast may have been missed since."""
        self._runs_clear: OrderedDict[str, int] = OrderedDict()
        """Runs whose cancel record was read and absent, with the :attr:`_link` of that read."""
        self._acks = _Acks(self.url)

    async def _connect(self) -> None:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            # Connection errors are retried by nats-py; say so once connected, not with its traceback.
            errors.append(exc)
            self._link_changed()
            if self._connected:
                log.warning("nats %s: %s", self.url, exc or type(exc).__name__)

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    self.client_url,
                    connect_timeout=CONNECT_TIMEOUT_S / 2,
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,
                    error_cb=on_error,
                    disconnected_cb=self._on_link_change,
                    reconnected_cb=self._on_link_change,
                ),
                CONNECT_TIMEOUT_S,
            )
        except TimeoutError:
            raise Unreachable(str(errors[-1]) if errors else "") from None
        self._connected = True
        self._js = self._nc.jetstream()
        await self._ensure()
        await self._nc.subscribe(self._cancel_subject, cb=self._on_cancel_message)

    async def _ensure(self) -> None:
        await self._ensure_stream(
            StreamConfig(
                name=self._jobs_stream,
                subjects=[self._jobs_subject],
                retention=RetentionPolicy.WORK_QUEUE,
                max_msgs=self.max_pending if self.sets_bound else DEFAULT_MAX_PENDING,
                discard=DiscardPolicy.NEW,
            ),
            update=self.sets_bound,
        )
        await self._ensure_stream(
            StreamConfig(
                name=self._results_stream, subjects=[self._results_subject], retention=RetentionPolicy.WORK_QUEUE
            ),
            update=False,
        )
        await self._js.add_consumer(
            self._jobs_stream,
            ConsumerConfig(
                durable_name=WORKERS,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.options.visibility_timeout,
                max_deliver=-1,
                max_ack_pending=-1,
            ),
        )
        self._kv = await self._state_store()
        if self._results_sub is not None:  # its consumer may be gone with the stream: subscribe anew
            sub, self._results_sub = self._results_sub, None
            with suppress(*self.broker_errors):
                await sub.unsubscribe()

    async def _state_store(self) -> KeyValue:
        """The state bucket, read with direct gets (any server answers them without the JetStream
        API's JSON and base64: most of a check-in's cost); one made without them is changed."""
        try:
            return await self._js.create_key_value(
                KeyValueConfig(bucket=self._state_bucket, ttl=STATE_TTL_S, direct=True)
            )
        except nats.js.errors.BadRequestError:  # it exists with another configuration
            config = (await self._js.stream_info(f"KV_{self._state_bucket}")).config
            if not config.allow_direct:
                await self._js.update_stream(replace(config, allow_direct=True))
            return await self._js.key_value(self._state_bucket)

    @staticmethod
    def _lost(exc: BaseException) -> bool:
        return isinstance(exc, nats.js.errors.NotFoundError)

    async def _ensure_stream(self, config: StreamConfig, update: bool) -> None:
        """Create the stream, or, when ``update`` (the engine's bound), bring its limits to ``config``."""
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError:  # it exists with another configuration
            if update:
                await self._js.update_stream(config)

    async def _disconnect(self) -> None:
        if self._nc is None:
            return
        await self._acks.send()
        if self._results_sub is not None:
            with suppress(*self.transient):
                await self._results_sub.unsubscribe()
        if self._nc.is_connected:
            with suppress(*self.transient):
                await self._nc.flush(timeout=1)  # acks and give-backs are buffered publishes
        await self._nc.close()
        self._nc = None

    async def _on_cancel_message(self, message: Msg) -> None:
        self._cancel_heard(message.data)

    async def _on_link_change(self) -> None:
        self._link_changed()

    def _link_changed(self) -> None:
        self._link += 1
        self._runs_clear.clear()

    @asynccontextmanager
    async def _job_source(self) -> AsyncIterator[TakeJobs]:
        pull = _Pull(self._nc, f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self._jobs_stream}.{WORKERS}")
        await pull.open()
        try:
            yield pull.take
        finally:
            with suppress(*self.transient):
                await pull.close()

    async def _offer(self, sealed: list[Sealed]) -> list[bool]:
        taken = []
        for outcome in await self._published(self._jobs_subject, self._jobs_stream, [data for _, data in sealed]):
            full = isinstance(outcome, nats.js.errors.APIError) and outcome.err_code == STREAM_FULL
            if isinstance(outcome, BaseException) and not full:
                raise outcome
            taken.append(not full)
        return taken

    async def _published(self, subject: str, stream: str, datas: list[bytes]) -> list[Any]:
        """Publish in order, without waiting for each acknowledgement before the next (one round
        trip for all), the acks held leaving with them; each one's acknowledgement, or its error."""
        if len(datas) == 1:  # a lone message: a plain request is answered without the futures' detour
            # The acks are sent by a second task, scheduled after the publish's: both go in one write.
            outcome, _acked = await asyncio.gather(
                self._js.publish(subject, datas[0], timeout=PUBLISH_TIMEOUT_S, stream=stream),
                self._acks.send(),
                return_exceptions=True,
            )
            return [outcome]
        acks = [await self._js.publish_async(subject, data, stream=stream) for data in datas]
        await self._acks.send()
        return await asyncio.gather(*(asyncio.wait_for(ack, PUBLISH_TIMEOUT_S) for ack in acks), return_exceptions=True)

    async def _send(self, results: list[bytes], acks: list[Ack]) -> None:
        for outcome in await self._published(self._results_subject, self._results_stream, results):
            if isinstance(outcome, BaseException):
                raise outcome
        await _together(*(self._kv.put(f"took.{ack.nonce}", ack.tag) for ack in acks if ack.nonce is not None))
        self._acks.add([ack.handle for ack in acks])

    async def _jobs_state(self, jobs: list[Job]) -> list[JobState]:
        async def state(job: Job) -> JobState:
            (done, took), cancelled = await _together(self._delivered_to(job.nonce), self._cancel_record(job.run_id))
            return done, cancelled, took

        *states, _acked = await _together(*(state(job) for job in jobs), self._acks.send())
        return states

    async def _cancel_record(self, run_id: str) -> bytes | None:
        """The run's cancel record, read once per run while the link holds: a cancel recorded
        after a read that found none is broadcast after it, on the subscription this link has
        had since it was made, so it is heard; a link that broke (or dropped messages) reads again."""
        if run_id in self._cancels_heard:
            return self._signer.tag("cancel", run_id)
        link = self._link
        if self._runs_clear.get(run_id) == link:
            self._runs_clear.move_to_end(run_id)
            return None
        (cancelled,) = await self._state_get([f"cancel.{run_id}"])
        if cancelled is None and link == self._link:
            self._runs_clear[run_id] = link
            while len(self._runs_clear) > CANCELS_KEPT:
                self._runs_clear.popitem(last=False)
        return cancelled

    async def _delivered_to(self, nonce: str) -> tuple[bytes | None, list[bytes]]:
        """The job's done tag, if it finished; else the workers it went to, this one added to its
        ``took`` record. Tried first as the record's creation, without reading it: nearly every
        job is delivered once, so one round trip; written back only if nobody wrote between."""
        name, me = f"took.{nonce}", self.identity
        took: list[str] = []
        last = 0
        while True:
            try:
                await self._kv.update(name, json.dumps([*took, me]).encode(), last=last)
                return None, [worker.encode() for worker in (*took, me)]
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._kv.get(name)
            except nats.js.errors.KeyNotFoundError as exc:  # deleted: finished, if a done record says so
                (done,) = await self._state_get([f"done.{nonce}"])
                if done is not None:
                    return done, []
                took, last = [], exc.entry.revision if exc.entry is not None else 0
                continue
            took, last = _workers(entry.value), entry.revision
            if took is None:
                return entry.value, [me.encode()]

    async def _give_back(self, deliveries: list[tuple[Delivery, bytes]]) -> None:
        for delivery, _data in deliveries:
            await delivery.tag.nak()

    async def _touch(self, handles: list[Any]) -> None:
        for message in handles:
            await message.in_progress()

    async def _take_results(self, acked: list[Any]) -> list[Raw]:
        """Results are pushed to the one engine as they come (a pull of many would wait for the
        batch to fill); those already here join the first, up to a batch."""
        if self._results_sub is None:
            inbox = _Inbox(self._nc)
            self._results_sub = await self._js.subscribe(
                self._results_subject,
                durable=ENGINE,
                stream=self._results_stream,
                manual_ack=True,
                cb=inbox.put,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=RESULTS_ACK_WAIT_S, max_deliver=-1),
            )
            self._results_inbox = inbox
        self._acks.add(acked)
        messages = await self._results_inbox.take(RESULT_BATCH, FETCH_WAIT_S)
        return [(message, message.data) for message in messages]

    async def _publish_cancel(self, data: bytes) -> None:
        await self._nc.publish(self._cancel_subject, data)

    async def _count_backlog(self) -> int:
        return (await self._js.stream_info(self._jobs_stream)).state.messages

    async def _scan(self) -> tuple[list[bytes], list[bytes]]:
        return (
            await self._messages(self._jobs_stream, self._jobs_subject),
            await self._messages(self._results_stream, self._results_subject),
        )

    async def _messages(self, stream: str, subject: str) -> list[bytes]:
        """Every message a work-queue stream holds (acked ones are gone), each found as the
        next one after the last, so the gaps acks leave cost nothing."""
        found, seq = [], 1
        while True:
            try:
                message = await self._js.get_msg(stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return found
            found.append(message.data)
            seq = message.seq + 1

    async def _state_get(self, names: list[str]) -> list[bytes | None]:
        async def get(name: str) -> bytes | None:
            try:
                return (await self._kv.get(name)).value
            except nats.js.errors.NotFoundError:  # no such key, or the bucket is gone
                return None

        return await _together(*(get(name) for name in names))

    async def _state_set(self, values: dict[str, bytes], delete: tuple[str, ...] = ()) -> None:
        for name, value in values.items():
            await self._kv.put(name, value)
        for name in delete:
            await self._kv.delete(name)

    async def _state_remove(self, name: str, value: bytes) -> None:
        try:
            entry = await self._kv.get(name)
        except nats.js.errors.KeyNotFoundError:
            return
        items = _workers(entry.value)
        if items is not None and value.decode() in items:
            items.remove(value.decode())
            await self._kv.put(name, json.dumps(items).encode())


def _workers(value: bytes | None) -> list[str] | None:
    """A ``took`` record's workers; None when it holds something else (the job's done tag)."""
    try:
        workers = json.loads(value or b"")
    except ValueError:
        return None
    return workers if isinstance(workers, list) and all(isinstance(w, str) for w in workers) else None


async def _together(*operations: Awaitable[Any]) -> list[Any]:
    """Concurrent round trips, answered in order; the first error is raised once all have ended."""
    outcomes = await asyncio.gather(*operations, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


class _Acks:
    """Acks held back until the next message this client sends, so they leave in its socket
    write (an ack alone costs a write here and a read at the server), or :data:`ACK_DELAY_S`
    at the latest. Holding one back is safe: what is not acked is delivered again, and the
    job's done record (or the engine's awaited nonces) refuses it then."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._held: list[Msg] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None

    def add(self, messages: list[Msg]) -> None:
        self._held.extend(messages)
        if self._held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self._due)

    def _due(self) -> None:
        self._timer = None
        self._sending = asyncio.ensure_future(self.send())

    async def send(self) -> None:
        """Publish the acks held (buffered: they go with whatever is published next in this turn of the loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, []
        try:
            for message in held:
                await message.ack()
        except nats.errors.Error as exc:  # delivered again, and refused then
            log.debug("acks on %s not sent: %s", self._url, exc or type(exc).__name__)


class _Inbox:
    """A subscription's messages as they come (its callback puts them here), taken without
    nats-py's ``next_msg``, which makes a task and a uuid for every message."""

    def __init__(self, nc: nats.NATS) -> None:
        self._nc = nc
        self._messages: deque[Msg] = deque()
        self._arrived = asyncio.Event()

    async def put(self, message: Msg) -> None:
        self._messages.append(message)
        self._arrived.set()

    async def take(self, most: int, timeout: float) -> list[Msg]:
        """Up to ``most`` messages, as soon as there is one; [] after ``timeout`` without any."""
        if not self._messages:
            if self._nc.is_closed:
                raise nats.errors.ConnectionClosedError
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        return [self._messages.popleft() for _ in range(min(most, len(self._messages)))]


class _Pull:
    """A worker's pull requests for jobs, standing for :data:`PULL_S`: jobs come as soon as they
    are there, up to the number asked for. (nats-py's ``fetch`` of more than one waits for all
    of them or for its timeout, so a lone job would wait.) More are asked for only once at most
    half of the jobs wanted are still asked for, so a worker taking one job at a time does not
    send a request with each."""

    def __init__(self, nc: nats.NATS, subject: str) -> None:
        self._nc = nc
        self._subject = subject
        self._inbox = nc.new_inbox()
        self._subscription: Any = None
        self._messages = _Inbox(nc)
        self._asked: deque[list[float]] = deque()
        """The requests standing, oldest first: [when it ends, jobs it may still bring]."""

    async def open(self) -> None:
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._messages.put)

    async def close(self) -> None:
        await self._subscription.unsubscribe()

    def _standing(self) -> int:
        now = time.monotonic()
        while self._asked and self._asked[0][0] < now:  # ended (its end may have been lost with a link)
            self._asked.popleft()
        return int(sum(left for _end, left in self._asked))

    async def take(self, count: int) -> list[Taken]:
        standing = self._standing()
        if standing <= count // 2:
            missing = count - standing
            request = {"batch": missing, "expires": int(PULL_S * 1e9)}
            await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)
            self._asked.append([time.monotonic() + PULL_S + FETCH_WAIT_S, missing])
        taken: list[Taken] = []
        for message in await self._messages.take(count, FETCH_WAIT_S):
            self._received(message, taken)
        return taken

    def _received(self, message: Msg, taken: list[Taken]) -> None:
        status = message.headers.get("Status") if message.headers else None
        if status is None:
            taken.append(Taken(message, message.data))
            if self._asked:
                self._asked[0][1] -= 1
                if self._asked[0][1] <= 0:
                    self._asked.popleft()
        elif status == "408" and self._asked:  # the oldest request ended
            self._asked.popleft()
        elif status == "409":  # the server dropped requests (consumer deleted, leader changed, ...)
            self._asked.clear()
        elif status == "503":  # nobody answers for the consumer: the stream went with a restart
            self._asked.clear()
            raise nats.js.errors.NotFoundError
