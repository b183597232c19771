"""What the broker-backed queues (Redis, NATS) share, so each of them is only its broker's calls.

A broker queue is the local queue's protocol stretched across processes: the engine puts
jobs and reads results, ``clarion worker`` processes anywhere consume jobs and report
results. Both brokers give the same guarantees, so the machinery for them lives here once:

- the URL's own query parameters (``prefix``, ``visibility_timeout``, ``max_pending``), taken
  out before the URL reaches the client library, and the URL as shown (password masked);
- the wire format: a job or a result is one JSON document;
- at-least-once bookkeeping: the jobs a worker holds are kept from being redelivered while
  they run (touched every third of the visibility timeout, so only a dead worker's jobs go
  to others), and are given back when the worker stops, so another worker takes them at once;
  a batch of results is acked only when the engine asks for the next one, i.e. once it has
  taken them, so an engine that dies in between reads them again;
- backpressure: ``put`` waits while ``max_pending`` jobs are waiting or running; nothing is
  ever dropped or trimmed;
- a broker that goes away makes the loops wait and retry (logged), never die.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import BadRequest, QueueUnavailable
from .base import config_problems
from .queue import Delivery, Job, JobResult

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_PENDING = 1000
CONNECT_TIMEOUT_S = 5.0
"""How long ``start`` tries to reach the broker before it says it cannot."""
RESULT_BATCH = 256
BACKLOG_MAX_AGE_S = 1.0
"""Health shows the backlog as measured at most this long ago (measured when asked, in the background)."""
PUT_POLL_S = (0.005, 0.25)
"""First and longest pause between offers of a job while the queue is full."""
_SECRET_PARAMS = ("pass", "token", "secret", "key")

Raw = tuple[Any, bytes | None]
"""A message as a broker hands it over: its handle (for ack) and its body (None: deleted meanwhile)."""
TakeJob = Callable[[], Awaitable[Raw | None]]


class BrokerOptions(BaseModel):
    """The queue's own query parameters in a broker URL; the others go to the client library."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(
        "clarion",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Streams, groups and subjects are named after it, so servers sharing a broker do not mix.",
    )
    visibility_timeout: float = Field(
        30.0, gt=0, description="Seconds after which the job of a worker that stopped answering goes to another."
    )
    max_pending: int | None = Field(
        None, ge=1, description="Most jobs waiting or running at once; beyond it `put` waits (default: the engine's)."
    )


OPTION_NAMES = frozenset(BrokerOptions.model_fields)


def redact(url: str) -> str:
    """``url`` fit to show: passwords and tokens (also NATS's ``nats://TOKEN@host``) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"***@{host}"
    query = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def split_url(url: str, *, client_params: bool) -> tuple[str, BrokerOptions]:
    """The URL for the client library, and the queue's options taken out of it.

    ``client_params``: whether the client library takes query parameters of its own (redis-py
    does, e.g. ``ssl_cert_reqs``); if not, an unknown parameter is a mistake worth naming."""
    parts = urlsplit(url)
    ours, theirs = {}, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in OPTION_NAMES:
            ours[name] = value
        else:
            theirs.append((name, value))
    if theirs and not client_params:
        unknown = ", ".join(sorted({name for name, _ in theirs}))
        raise BadRequest(
            f"queue_url {redact(url)!r}: unknown parameter(s) {unknown}; known: {', '.join(sorted(OPTION_NAMES))}",
            details={"queue_url": redact(url)},
        )
    try:
        options = BrokerOptions.model_validate(ours)
    except ValidationError as exc:
        raise BadRequest(
            f"queue_url {redact(url)!r}: {config_problems(exc)}", details={"queue_url": redact(url)}
        ) from None
    return urlunsplit(parts._replace(query=urlencode(theirs))), options


# -- wire format -----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode(message: Job | JobResult) -> bytes:
    return json.dumps(message.as_dict(), separators=(",", ":"), default=_json_default).encode()


def encode_result(result: JobResult) -> bytes:
    """A result as sent; an output that is not JSON fails its step (as the engine would) rather than the worker."""
    try:
        return encode(result)
    except (TypeError, ValueError, RecursionError) as exc:
        error = {"code": "output", "message": f"the step's output is not JSON: {exc}"}
        return encode(JobResult(result.run_id, result.key, result.attempt, "error", error=error, retryable=False))


def decode_job(data: bytes) -> Job:
    return Job(**json.loads(data))


def decode_result(data: bytes) -> JobResult:
    return JobResult(**json.loads(data))


class Unreachable(Exception):
    """Raised by a queue's ``_connect`` when the broker does not answer; the message says why."""


class BrokerQueue(ABC):
    """The :class:`~.queue.Queue` protocol over a broker; subclasses implement the broker calls.

    Jobs a worker has taken and not yet acked are *held*; :meth:`close` gives them back."""

    kind: ClassVar[str]
    transient: ClassVar[tuple[type[BaseException], ...]]
    """Errors meaning the broker is away for now: the operation waits and tries again."""
    client_params: ClassVar[bool] = False

    def __init__(self, url: str, max_pending: int | None = None) -> None:
        """``max_pending`` is the engine's bound; a worker passes none and leaves the bound as the engine set it."""
        self.client_url, self.options = split_url(url, client_params=self.client_params)
        self.url = redact(url)
        self.sets_bound = self.options.max_pending is not None or max_pending is not None
        self.max_pending = self.options.max_pending or max_pending or DEFAULT_MAX_PENDING
        self._held: dict[int, Delivery] = {}
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._background: list[asyncio.Task[None]] = []
        self._backlog: int | None = None
        self._backlog_at = 0.0
        self._measuring: asyncio.Task[None] | None = None

    # -- what each broker implements -----------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Connect, create streams / groups / consumers that are missing, subscribe to cancels."""

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    def _job_source(self) -> AbstractAsyncContextManager[TakeJob]:
        """For one worker slot: a function giving the next job, or None after a while without one."""

    @abstractmethod
    async def _offer(self, data: bytes) -> bool:
        """Add a job unless ``max_pending`` jobs are waiting or running; False when full."""

    @abstractmethod
    async def _ack(self, handle: Any) -> None: ...

    @abstractmethod
    async def _give_back(self, deliveries: list[Delivery]) -> None:
        """Make held jobs deliverable again at once."""

    @abstractmethod
    async def _touch(self, handles: list[Any]) -> None:
        """Restart the visibility timeout of jobs still running here."""

    @abstractmethod
    async def _publish_result(self, data: bytes) -> None: ...

    @abstractmethod
    async def _take_results(self) -> list[Raw]:
        """The next results for the engine (its own unacked ones from before first), [] after a while."""

    @abstractmethod
    async def _ack_results(self, handles: list[Any]) -> None: ...

    @abstractmethod
    async def _publish_cancel(self, run_id: str) -> None: ...

    @abstractmethod
    async def _count_backlog(self) -> int:
        """Jobs waiting or running."""

    # -- the Queue protocol ----------------------------------------------------------------

    async def start(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._connect()
                self._backlog, self._backlog_at = await self._count_backlog(), time.monotonic()
        except (Unreachable, TimeoutError, *self.transient) as exc:
            await self._quietly("disconnecting", self._disconnect())
            reason = str(exc) or f"no answer within {CONNECT_TIMEOUT_S:g} s"
            raise QueueUnavailable(
                f"cannot reach the {self.kind} broker at {self.url}: {reason}", details={"queue_url": self.url}
            ) from None
        self._spawn(self._keep_held())
        log.info("queue connected to %s (prefix %s)", self.url, self.options.prefix)

    async def close(self) -> None:
        for task in [*self._background, *([self._measuring] if self._measuring else [])]:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        held, self._held = list(self._held.values()), {}
        if held:
            log.info("giving %d unfinished job(s) back to %s", len(held), self.url)
            await self._quietly("giving jobs back", asyncio.wait_for(self._give_back(held), CONNECT_TIMEOUT_S))
        await self._quietly("disconnecting", self._disconnect())

    async def put(self, job: Job) -> None:
        data = encode(job)
        pause, longest = PUT_POLL_S
        while not await self._retrying("queueing a job", lambda: self._offer(data)):
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    async def consume(self) -> AsyncIterator[Delivery]:
        async with self._job_source() as take:
            while True:
                _stop_if_cancelled()
                handle, data = await self._retrying("taking jobs", take) or (None, None)
                if handle is None:
                    continue
                job = self._decoded(decode_job, data)
                if job is None:  # unreadable: redelivering it would only fail again
                    await self._quietly("dropping an unreadable job", self._ack(handle))
                    continue
                delivery = Delivery(job, handle)
                self._held[id(delivery)] = delivery
                yield delivery

    async def ack(self, delivery: Delivery) -> None:
        self._held.pop(id(delivery), None)
        await self._quietly("acking a job", self._ack(delivery.tag))

    async def nack(self, delivery: Delivery) -> None:
        self._held.pop(id(delivery), None)
        await self._quietly("giving a job back", self._give_back([delivery]))

    async def report(self, result: JobResult) -> None:
        data = encode_result(result)
        await self._retrying("reporting a result", lambda: self._publish_result(data))

    async def results(self) -> AsyncIterator[JobResult]:
        while True:
            _stop_if_cancelled()
            batch = await self._retrying("reading results", self._take_results)
            for _handle, data in batch:
                result = self._decoded(decode_result, data)
                if result is not None:
                    yield result
            if batch:
                await self._quietly("acking results", self._ack_results([handle for handle, _ in batch]))

    async def cancel(self, run_id: str) -> None:
        await self._retrying("broadcasting a cancel", lambda: self._publish_cancel(run_id))

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    def health(self) -> dict[str, Any]:
        stale = self._background and time.monotonic() - self._backlog_at > BACKLOG_MAX_AGE_S
        if stale and self._measuring is None:
            self._measuring = asyncio.get_running_loop().create_task(self._measure_backlog())
        return {
            "kind": self.kind,
            "url": self.url,
            "prefix": self.options.prefix,
            "visibility_timeout_s": self.options.visibility_timeout,
            "max_pending": self.max_pending,
            "backlog": self._backlog,
        }

    # -- helpers for the subclasses ----------------------------------------------------------

    def _cancelled(self, run_id: str) -> None:
        for callback in self._cancel_callbacks:
            callback(run_id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._background.append(asyncio.ensure_future(coro))

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation`` until the broker answers it (a broker restart is waited out)."""
        failures = 0
        while True:
            try:
                return await operation()
            except self.transient as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("%s on %s failed (%s); retrying", what, self.url, exc or type(exc).__name__)
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))

    async def _quietly(self, what: str, operation: Awaitable[Any]) -> None:
        """Best effort: what fails here is redelivered, or redone, by the at-least-once rules."""
        try:
            await operation
        except (TimeoutError, *self.transient) as exc:
            log.warning("%s on %s failed: %s", what, self.url, exc or type(exc).__name__)

    @staticmethod
    def _decoded(decode: Callable[[bytes], T], data: bytes | None) -> T | None:
        if data is None:
            return None
        try:
            return decode(data)
        except (ValueError, TypeError) as exc:
            log.error("dropping an unreadable queue message (%s): %.200r", exc, data)
            return None

    async def _keep_held(self) -> None:
        while True:
            await asyncio.sleep(self.options.visibility_timeout / 3)
            if self._held:
                await self._quietly("extending running jobs", self._touch([d.tag for d in self._held.values()]))

    async def _measure_backlog(self) -> None:
        try:
            self._backlog = await self._count_backlog()
            self._backlog_at = time.monotonic()
        except self.transient:
            self._backlog = None
        finally:
            self._measuring = None


def _stop_if_cancelled() -> None:
    """A wait inside a client library can swallow a cancellation (nats-py's fetch does, when
    its ``asyncio.wait_for`` races a reply); a loop that went on after one would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
