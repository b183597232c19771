"""What the broker-backed queues (Redis, NATS) share, so each of them is only its broker's calls.

A broker queue is the local queue's protocol stretched across processes: the engine puts
jobs and reads results, ``clarion worker`` processes anywhere consume jobs and report
results. Both brokers give the same guarantees, so the machinery for them lives here once:

- the URL's own query parameters (``prefix``, ``visibility_timeout``, ``max_pending``,
  ``max_deliveries``, ``secret_env``), taken out before the URL reaches the client library,
  and the URL as shown (password masked);
- the wire format: every job, result, progress message and cancel is one canonical JSON
  document signed with the shared secret (:class:`Signer`); what is not signed with it, a
  job that already ran, a result for a job the engine does not await, or a progress message
  carrying an event only the engine may record is dropped and counted (``dropped``);
- at-least-once bookkeeping: the jobs a worker holds are kept from being redelivered while
  they run (touched every third of the visibility timeout, so only a dead worker's jobs go
  to others), and are given back when the worker stops, so another worker takes them at once;
  a batch of results is acked only when the engine asks for the next one, i.e. once it has
  taken them, so an engine that dies in between reads them again;
- state records in the broker: each job's deliveries (past ``max_deliveries`` lost workers
  its step fails, ``worker_lost``), finished jobs (a replay is refused), cancelled runs (a
  worker checks them before a job and every second while it runs one), and the engine's
  ``epoch``, whose loss means the broker lost everything: the engine makes the streams again
  and sends again the jobs it awaits;
- adoption: a starting engine takes stock of the jobs and results the broker holds, and the
  runs it resumes take them over instead of sending new attempts;
- round trips: a worker's free slots are served by one intake that takes several jobs per
  read and reads their state in the same round trip (Redis) or in one more (NATS); results and acks leave through an
  outbox, and the engine's jobs through another, each sending what piled up while the last
  send was in flight in one round trip (:class:`~.batching.Batcher`); the engine acks a batch
  of results in the round trip that asks for the next;
- backpressure: ``put`` waits while ``max_pending`` jobs are waiting or running; nothing is
  ever dropped or trimmed;
- a broker that goes away makes the loops wait and retry (logged), never die; health says
  since when it is unreachable.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import BadRequest, QueueUnavailable
from ..core.protocol import EventType
from ..core.secrets import redact_url
from .base import config_problems
from .batching import Batcher, stop_if_cancelled, stopped
from .queue import Delivery, Job, JobResult, job_id

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_PENDING = 1000
CONNECT_TIMEOUT_S = 5.0
"""How long ``start`` tries to reach the broker before it says it cannot."""
RESULT_BATCH = 256
"""Most results the engine reads at once, and most jobs, results or acks sent in one round trip."""
OUTBOX_LIMIT = 1024
"""Results and acks a worker holds back while its broker does not take them, before ``report`` waits."""
WATCH_S = 1.0
"""How often a queue checks its broker: reachable (health, backlog), state lost, runs cancelled."""
STATE_TTL_S = 7 * 24 * 3600.0
"""How long the broker keeps a finished job's record; a job message older than that is refused."""
MIN_SECRET_CHARS = 16
CANCELS_KEPT = 10_000
PUT_POLL_S = (0.005, 0.25)
"""First and longest pause between offers of a job while the queue is full."""

Raw = tuple[Any, bytes | None]
"""A message as a broker hands it over: its handle (for ack) and its body (None: deleted meanwhile)."""
JobState = tuple[bytes | None, bytes | None, list[bytes]]
"""A job's ``done`` and ``cancel`` records, and the workers it was delivered to, this one last."""


@dataclass(slots=True, frozen=True)
class Taken:
    """A job message as the worker's intake takes it: its handle (for ack), its body (None:
    deleted meanwhile) and, when the broker read the job's state in the same round trip, that
    ``state`` and the ``(nonce, run_id)`` it was read for. Those come from the message's
    unsigned fields, so the state counts only for a signed job that names the same two."""

    handle: Any
    data: bytes | None
    state: JobState | None = None
    read_for: tuple[str, str] | None = None


TakeJobs = Callable[[int], Awaitable[list[Taken]]]
"""Up to ``n`` jobs, as soon as there is one; [] after a while without any."""
Sealed = tuple[Job, bytes]
"""A job and its signed message, on its way to the broker."""


@dataclass(slots=True, frozen=True)
class Ack:
    """A job a worker is done with: taken off the broker, and, with a ``nonce``, recorded as
    done (``tag``) so that a replay of it is refused."""

    handle: Any
    nonce: str | None = None
    tag: bytes = b""


@dataclass(slots=True, frozen=True)
class Outgoing:
    """What a worker sends back: a sealed result or progress message, or an :class:`Ack`."""

    result: bytes | None = None
    ack: Ack | None = None


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
    max_deliveries: int = Field(
        3, ge=1, description="Deliveries of a job whose workers were lost, after which its step fails (`worker_lost`)."
    )
    secret_env: str = Field(
        "CLARION_QUEUE_SECRET",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="The environment variable holding the secret that signs every message.",
    )


OPTION_NAMES = frozenset(BrokerOptions.model_fields)


def redact(url: str) -> str:
    """``url`` fit to show, this queue's own options (``secret_env`` names a variable) left as they are."""
    return redact_url(url, keep=OPTION_NAMES)


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


def canonical(message: Job | JobResult) -> bytes:
    """The JSON a message is signed as: sorted keys, no spaces, ASCII only."""
    return json.dumps(message.as_dict(), sort_keys=True, separators=(",", ":"), default=_json_default).encode()


class Rejected(Exception):
    """A message that is not ours to act on; ``reason`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


DROP_REASONS = ("unsigned", "bad_signature", "unreadable", "expired", "replayed", "not_sent", "event_type")
"""Why a broker message was dropped (health ``dropped`` and the ``clarion_queue_dropped`` metric)."""
PROGRESS_EVENT_TYPES = frozenset({EventType.llm_token})
"""What a progress message may carry: the events only a running task knows of. Everything
else (a step's or run's state, an approval) is the engine's to decide and record."""
WIRE_PREFIX = b"clarion1"


class Signer:
    """HMAC-SHA256 with the queue's shared secret over ``kind``, time and canonical JSON.

    The wire form is ``clarion1.<kind>.<unix ms>.<hex mac>.<json>``: the kind keeps a signed
    result from being passed off as a job (or a cancel), the time lets a worker refuse a job
    older than the records that would tell it the job already ran."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def seal(self, kind: str, body: bytes) -> bytes:
        stamp = str(int(time.time() * 1000)).encode()
        return b".".join((WIRE_PREFIX, kind.encode(), stamp, self._mac(kind.encode(), stamp, body).encode(), body))

    def open(self, kind: str, data: bytes, max_age_s: float | None = None) -> bytes:
        """The body of a message of ``kind`` this secret signed, else :class:`Rejected`."""
        parts = data.split(b".", 4)
        if len(parts) != 5 or parts[0] != WIRE_PREFIX:
            raise Rejected("unsigned")
        _, got_kind, stamp, mac, body = parts
        if got_kind != kind.encode() or not hmac.compare_digest(mac, self._mac(got_kind, stamp, body).encode()):
            raise Rejected("bad_signature")
        if max_age_s is not None and time.time() - int(stamp) / 1000 > max_age_s:
            raise Rejected("expired")
        return body

    def tag(self, kind: str, name: str) -> bytes:
        """A value for a state record, so only a holder of the secret can make one count."""
        return self._mac(kind.encode(), b"0", name.encode()).encode()

    def _mac(self, kind: bytes, stamp: bytes, body: bytes) -> str:
        return hmac.new(self._secret, b"\n".join((kind, stamp, body)), hashlib.sha256).hexdigest()


def signer_from_env(url: str, options: BrokerOptions) -> Signer:
    """The queue's signer, from the variable ``secret_env`` names; refuses to go on without one."""
    secret = os.environ.get(options.secret_env, "")
    if len(secret) < MIN_SECRET_CHARS:
        problem = "is not set" if not secret else f"is shorter than {MIN_SECRET_CHARS} characters"
        raise QueueUnavailable(
            f"queue_url {redact(url)!r}: the shared secret that signs broker messages {problem}: set the "
            f"environment variable {options.secret_env} to the same random value for the server and every "
            f"worker, e.g. export {options.secret_env}=$(openssl rand -hex 32)",
            details={"queue_url": redact(url), "secret_env": options.secret_env},
        )
    return Signer(secret.encode())


def decode_job(body: bytes) -> Job:
    return Job(**json.loads(body))


def decode_result(body: bytes) -> JobResult:
    result = JobResult(**json.loads(body))
    if result.kind not in ("ok", "error", "progress"):
        raise ValueError(f"unknown kind of result {result.kind!r}")
    if result.kind == "progress" and (
        result.event_type not in PROGRESS_EVENT_TYPES or not isinstance(result.data, dict)
    ):
        raise Rejected("event_type")
    return result


def encode_result(result: JobResult) -> bytes:
    """A result as sent; an output that is not JSON fails its step (as the engine would) rather than the worker."""
    try:
        return canonical(result)
    except (TypeError, ValueError, RecursionError) as exc:
        error = {"code": "output", "message": f"the step's output is not JSON: {exc}"}
        return canonical(
            JobResult(
                result.run_id, result.key, result.attempt, "error", error=error, retryable=False, nonce=result.nonce
            )
        )


@dataclass(slots=True)
class _Held:
    """A job the broker held when the engine started: its nonce, the job if it was still
    there (to send again should the broker lose it), whether its result was read already."""

    nonce: str
    job: Job | None = None
    answered: bool = False


class Unreachable(Exception):
    """Raised by a queue's ``_connect`` when the broker does not answer; the message says why."""


class NoAnswer(ConnectionError):
    """A broker call outlived :attr:`BrokerQueue.answer_timeout_s`. A partition can leave a
    connection open and silent, so it counts as lost: the call is tried again on a new one."""


class BrokerQueue(ABC):
    """The :class:`~.queue.Queue` protocol over a broker; subclasses implement the broker calls.

    Jobs a worker has taken and not yet acked are *held*; :meth:`close` gives them back.
    Besides its streams a broker keeps small *state* records, named ``done.<nonce>``,
    ``took.<nonce>``, ``cancel.<run_id>`` and ``epoch``, that expire after :data:`STATE_TTL_S`."""

    kind: ClassVar[str]
    transient: ClassVar[tuple[type[BaseException], ...]]
    """Errors meaning the broker is away for now: the operation waits and tries again."""
    broker_errors: ClassVar[tuple[type[BaseException], ...]]
    """Every error the client library raises: a loop logs it, backs off and goes on."""
    client_params: ClassVar[bool] = False

    def __init__(self, url: str, max_pending: int | None = None) -> None:
        """``max_pending`` is the engine's bound; a worker passes none and leaves the bound as the engine set it."""
        self.client_url, self.options = split_url(url, client_params=self.client_params)
        self.url = redact(url)
        self.sets_bound = self.options.max_pending is not None or max_pending is not None
        self.max_pending = self.options.max_pending or max_pending or DEFAULT_MAX_PENDING
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        """This process among the broker's clients (a Redis consumer name; the workers a lost job names)."""
        self.dropped: Counter[str] = Counter()
        self._signer: Signer | None = None
        self._held: dict[int, Delivery] = {}
        self._awaited: dict[str, str] = {}
        """Engine side: the nonce of every job whose result is awaited, by job id."""
        self._resend: dict[str, Job] = {}
        """Engine side: the jobs awaited that a broker which lost its state must be sent again."""
        self._stock: dict[str, _Held] = {}
        """Engine side: what :meth:`take_stock` found in the broker and no run adopted yet."""
        self._epoch: bytes | None = None
        self._epoch_marked = 0.0
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._cancels_heard: OrderedDict[str, None] = OrderedDict()
        self._background: list[asyncio.Task[None]] = []
        self._puts = Batcher(self._offered, limit=self.max_pending, batch=RESULT_BATCH, pauses=PUT_POLL_S)
        """Engine side: jobs on their way to the broker, many per round trip."""
        self._outbox = Batcher(self._sent, limit=OUTBOX_LIMIT, batch=RESULT_BATCH, pauses=PUT_POLL_S)
        """Worker side: results and acks on their way, many per round trip."""
        self._intake: asyncio.Task[None] | None = None
        self._deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self._wanted = 0
        """Worker slots waiting for a job; the intake takes as many jobs at once."""
        self._wanted_more = asyncio.Event()
        self._backlog: int | None = None
        self._down_since: datetime | None = None
        self._down_error = ""

    # -- what each broker implements -----------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Connect, :meth:`_ensure` what is missing, subscribe to cancels."""

    @abstractmethod
    async def _ensure(self) -> None:
        """Create the streams, groups, consumers and state store that are missing (a broker
        restarted without persistence has none of them)."""

    @staticmethod
    @abstractmethod
    def _lost(exc: BaseException) -> bool:
        """Whether ``exc`` says a stream, group or consumer is missing (see :meth:`_ensure`)."""

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    def _job_source(self) -> AbstractAsyncContextManager[TakeJobs]:
        """For the worker's intake: a function giving the next jobs (see :data:`TakeJobs`)."""

    @abstractmethod
    async def _offer(self, sealed: list[Sealed]) -> list[bool]:
        """Add jobs (their signed messages), in order, while fewer than ``max_pending`` are waiting or running; which were taken."""

    @abstractmethod
    async def _send(self, results: list[bytes], acks: list[Ack]) -> None:
        """Publish results (in order), then record and take off the broker the jobs acked."""

    @abstractmethod
    async def _give_back(self, deliveries: list[tuple[Delivery, bytes]]) -> None:
        """Make held jobs (with their signed message) deliverable again at once."""

    @abstractmethod
    async def _touch(self, handles: list[Any]) -> None:
        """Restart the visibility timeout of jobs still running here."""

    @abstractmethod
    async def _take_results(self, acked: list[Any]) -> list[Raw]:
        """Ack the results the engine has taken, and give the next ones (its own unacked ones from
        before first), [] after a while."""

    @abstractmethod
    async def _publish_cancel(self, data: bytes) -> None: ...

    @abstractmethod
    async def _count_backlog(self) -> int:
        """Jobs waiting or running."""

    @abstractmethod
    async def _scan(self) -> tuple[list[bytes], list[bytes]]:
        """Every job message and every result message the broker holds, without taking them."""

    @abstractmethod
    async def _state_get(self, names: list[str]) -> list[bytes | None]:
        """State records by name (None: there is none, or the store itself is gone)."""

    @abstractmethod
    async def _state_set(self, values: dict[str, bytes], delete: tuple[str, ...] = ()) -> None: ...

    @abstractmethod
    async def _jobs_state(self, jobs: list[Job]) -> list[JobState]:
        """Each job's state, after counting this delivery (``took.<nonce>`` gets this worker)."""

    @abstractmethod
    async def _state_remove(self, name: str, value: bytes) -> None:
        """Remove one ``value`` from a list record."""

    # -- the Queue protocol ----------------------------------------------------------------

    async def start(self) -> None:
        self._signer = signer_from_env(self.url, self.options)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._connect()
                self._backlog = await self._count_backlog()
        except (Unreachable, TimeoutError, *self.transient) as exc:
            await self._quietly("disconnecting", self._disconnect())
            reason = str(exc) or f"no answer within {CONNECT_TIMEOUT_S:g} s"
            raise QueueUnavailable(
                f"cannot reach the {self.kind} broker at {self.url}: {reason}", details={"queue_url": self.url}
            ) from None
        self._spawn(self._keep_held())
        self._spawn(self._watch())
        log.info("queue connected to %s (prefix %s)", self.url, self.options.prefix)

    async def close(self) -> None:
        """Stop taking jobs, send what the outbox holds, give back the jobs held, disconnect."""
        if self._intake is not None:
            await stopped(self._intake)
            self._intake = None
        if len(self._outbox):
            await self._quietly("sending results", asyncio.wait_for(self._outbox.drain(), CONNECT_TIMEOUT_S))
        await asyncio.gather(stopped(*self._background), self._puts.stop(), self._outbox.stop(), return_exceptions=True)
        self._background = []
        held, self._held = list(self._held.values()), {}
        if held:
            log.info("giving %d unfinished job(s) back to %s", len(held), self.url)
            await self._quietly("giving jobs back", asyncio.wait_for(self._handed_back(held), CONNECT_TIMEOUT_S))
        await self._quietly("disconnecting", self._disconnect())

    async def put(self, job: Job) -> None:
        """Waits until the broker took the job (while ``max_pending`` jobs wait or run, it offers
        it again); jobs put meanwhile go with it, in one round trip."""
        data = self._seal("job", canonical(job))
        self._awaited[job.id], self._resend[job.id] = job.nonce, job
        taken = await self._puts.add((job, data))
        await taken  # cancelled while it waits: the batcher leaves it out

    async def _offered(self, sealed: list[Sealed]) -> list[bool]:
        return await self._retrying("queueing jobs", lambda: self._offer(sealed))

    async def consume(self) -> AsyncIterator[Delivery]:
        """One slot's jobs: the slots waiting are served by one intake, which takes as many jobs
        in one round trip, and checks them in one more."""
        if self._intake is None:
            self._intake = asyncio.create_task(self._take_in(), name="clarion-broker-intake")
        while True:
            stop_if_cancelled()
            self._wanted += 1
            self._wanted_more.set()
            try:
                delivery = await self._deliveries.get()
            finally:
                self._wanted -= 1
            yield delivery

    async def _take_in(self) -> None:
        async with self._job_source() as take:
            while True:
                stop_if_cancelled()
                wanted = self._wanted - self._deliveries.qsize()
                if wanted <= 0:
                    self._wanted_more.clear()
                    await self._wanted_more.wait()
                    continue
                count = min(wanted, RESULT_BATCH)
                taken = await self._retrying("taking jobs", lambda count=count: take(count))
                for delivery in await self._checked_in(taken):
                    self._held[id(delivery)] = delivery
                    self._deliveries.put_nowait(delivery)

    async def ack(self, delivery: Delivery) -> None:
        """The job is done: recorded so (a replay of it is refused), then taken off the broker,
        after the results reported before it (with them, when they are still waiting)."""
        self._held.pop(id(delivery), None)
        await self._finished(delivery.job, delivery.tag)

    async def nack(self, delivery: Delivery) -> None:
        self._held.pop(id(delivery), None)
        await self._quietly("giving a job back", self._handed_back([delivery]))

    async def report(self, result: JobResult) -> None:
        """Handed to the outbox, which sends it at once or with the next batch (in order: a
        task's progress before its result); waits only while the broker takes nothing."""
        await self._outbox.add(Outgoing(result=self._seal("result", encode_result(result))))

    async def _sent(self, batch: list[Outgoing]) -> None:
        results = [item.result for item in batch if item.result is not None]
        acks = [item.ack for item in batch if item.ack is not None]
        await self._retrying("reporting results", lambda: self._send(results, acks))

    async def results(self) -> AsyncIterator[JobResult]:
        """A batch of results is acked once the engine asks for the next one, i.e. once it has
        taken them (in the same round trip as that ask): an engine that dies in between reads
        them again."""
        acked: list[Any] = []
        while True:
            stop_if_cancelled()
            batch = await self._retrying("reading results", lambda taken=acked: self._take_results(taken))
            acked = []
            for _handle, data in batch:
                result = self._accepted(data)
                if result is not None:
                    yield result
            acked = [handle for handle, _ in batch]

    async def cancel(self, run_id: str) -> None:
        """Recorded as state first (a worker away now checks it when it is back), then broadcast."""
        for jid in [j for j in self._awaited if j.startswith(f"{run_id}/")]:
            self._awaited.pop(jid)
            self._resend.pop(jid, None)
        tag = self._signer.tag("cancel", run_id)
        await self._retrying("recording a cancel", lambda: self._state_set({f"cancel.{run_id}": tag}))
        data = self._seal("cancel", run_id.encode())
        await self._retrying("broadcasting a cancel", lambda: self._publish_cancel(data))

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    async def take_stock(self) -> None:
        """What the broker holds from before this engine started, by job id; and this engine's
        mark (``epoch``), whose absence later means the broker lost its state."""
        jobs, results = await self._retrying("taking stock of the broker", self._scan)
        for data in jobs:
            job = self._opened("job", data, decode_job)
            if job is not None:
                self._stock[job.id] = _Held(job.nonce, job)
        for data in results:
            result = self._opened("result", data, decode_result)
            if result is not None and result.kind != "progress":
                self._stock.setdefault(result.job_id, _Held(result.nonce))
        self._epoch = secrets.token_hex(8).encode()
        await self._retrying("marking the broker", self._mark_epoch)
        if self._stock:
            log.info("%s holds %d job(s) from before this start", self.url, len(self._stock))

    def adopt(self, run_id: str, key: str, attempt: int) -> bool:
        jid = job_id(run_id, key, attempt)
        found = self._stock.pop(jid, None)
        if found is None:
            return False
        if not found.answered:
            self._awaited[jid] = found.nonce
            if found.job is not None:
                self._resend[jid] = found.job
        return True

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "prefix": self.options.prefix,
            "visibility_timeout_s": self.options.visibility_timeout,
            "max_pending": self.max_pending,
            "max_deliveries": self.options.max_deliveries,
            "backlog": self._backlog,
            "up": self._down_since is None,
            "down_since": self._down_since.isoformat() if self._down_since else None,
            "error": self._down_error or None,
            "dropped": dict(self.dropped),
        }

    # -- signing and checking ------------------------------------------------------------------

    def _seal(self, kind: str, body: bytes) -> bytes:
        if self._signer is None:
            raise RuntimeError("the queue is not started")
        return self._signer.seal(kind, body)

    def _opened(
        self, kind: str, data: bytes | None, decode: Callable[[bytes], T], max_age_s: float | None = None
    ) -> T | None:
        """The message if it is a well-formed ``kind`` signed with our secret; else dropped and counted."""
        if data is None:  # deleted after it was delivered
            return None
        try:
            return decode(self._signer.open(kind, data, max_age_s))
        except Rejected as exc:
            self._drop(kind, exc.reason)
        except (ValueError, TypeError):
            self._drop(kind, "unreadable")
        return None

    def _drop(self, kind: str, reason: str) -> None:
        """Counted; logged without the content (it may be an attacker's), less often as they add up."""
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if count & (count - 1) == 0:
            level = logging.DEBUG if reason == "not_awaited" else logging.WARNING
            log.log(level, "dropped a %s message on %s: %s (%d so far)", kind, self.url, reason, count)

    def _accepted(self, data: bytes | None) -> JobResult | None:
        """A result is taken only for a job this engine sent (or adopted) and still awaits."""
        result = self._opened("result", data, decode_result)
        if result is None:
            return None
        held = self._stock.get(result.job_id)
        if held is not None and held.nonce == result.nonce:
            # Results are read while resumed runs still adopt their jobs: one found at the start
            # goes to its run's inbox, where the adopting execution takes it.
            held.answered |= result.kind != "progress"
            return result
        if self._awaited.get(result.job_id) != result.nonce:
            self._drop("result", "not_awaited")
            return None
        if result.kind != "progress":
            del self._awaited[result.job_id]
            self._resend.pop(result.job_id, None)
        return result

    async def _checked_in(self, taken: list[Taken]) -> list[Delivery]:
        """The deliveries to run, of jobs taken together; left out: messages not ours, jobs that
        already ran (replays), jobs whose workers kept dying (failed as ``worker_lost`` instead).
        The state the broker did not read with the jobs is read in one round trip."""
        jobs: list[tuple[Any, Job, JobState | None]] = []
        for message in taken:
            job = self._opened("job", message.data, decode_job, max_age_s=STATE_TTL_S)
            if job is None:
                await self._outbox.add(Outgoing(ack=Ack(message.handle)))
            else:
                read = message.state if message.read_for == (job.nonce, job.run_id) else None
                jobs.append((message.handle, job, read))
        unread = [job for _, job, state in jobs if state is None]
        if unread:
            states = iter(await self._retrying("checking jobs", lambda: self._jobs_state(unread)))
        deliveries = []
        for handle, job, state in jobs:
            done, cancelled, took = state if state is not None else next(states)
            if done == self._signer.tag("done", job.nonce):
                self._drop("job", "replayed")
                await self._outbox.add(Outgoing(ack=Ack(handle)))
            elif len(took) > self.options.max_deliveries:
                await self._lost_too_often(job, handle, [worker.decode(errors="replace") for worker in took[:-1]])
            else:
                if cancelled == self._signer.tag("cancel", job.run_id):
                    self._cancelled(job.run_id)
                deliveries.append(Delivery(job, handle, deliveries=len(took)))
        return deliveries

    async def _lost_too_often(self, job: Job, handle: Any, workers: list[str]) -> None:
        cap = self.options.max_deliveries
        log.error("step %s was delivered %d times and lost its worker each time: failing it", job.id, len(workers))
        error = {
            "code": "worker_lost",
            "message": f"the job was delivered {len(workers)} times and its worker was lost each time "
            f"({', '.join(workers)}): the step may kill its worker (max_deliveries is {cap})",
            "details": {"deliveries": len(workers), "workers": workers},
        }
        await self.report(job.result("error", error=error, retryable=True, deliveries=len(workers)))
        await self._finished(job, handle)

    async def _finished(self, job: Job, handle: Any) -> None:
        await self._outbox.add(Outgoing(ack=Ack(handle, job.nonce, self._signer.tag("done", job.nonce))))

    async def _handed_back(self, deliveries: list[Delivery]) -> None:
        """Given back by a worker that stops: not a lost delivery, so it is not counted as one."""
        for delivery in deliveries:
            await self._state_remove(f"took.{delivery.job.nonce}", self.identity.encode())
        await self._give_back([(d, self._seal("job", canonical(d.job))) for d in deliveries])

    def _cancel_heard(self, data: bytes) -> None:
        """A cancel broadcast (signed, else dropped)."""
        run_id = self._opened("cancel", data, bytes.decode)
        if run_id is not None:
            self._cancelled(run_id)

    def _cancelled(self, run_id: str) -> None:
        self._cancels_heard[run_id] = None
        while len(self._cancels_heard) > CANCELS_KEPT:
            self._cancels_heard.popitem(last=False)
        for callback in self._cancel_callbacks:
            callback(run_id)

    # -- loops -------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._background.append(asyncio.ensure_future(coro))

    @property
    def answer_timeout_s(self) -> float | None:
        """How long one broker call may wait for its answer before the connection counts as
        dead (None: the client library's own timeouts bound each call)."""
        return None

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        """``operation`` until the broker answers it: a broker restart is waited out, streams
        and groups it lost are made again, any other broker error is logged and tried again.
        ``bounded``: each try waits at most :attr:`answer_timeout_s` (not for a subscription,
        which waits for as long as it is open)."""
        failures = 0
        while True:
            try:
                async with self._answered(bounded):
                    return await operation()
            except self.broker_errors as exc:
                stop_if_cancelled()  # a cancelled read can come back as a connection error
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("%s on %s failed (%s); retrying", what, self.url, exc or type(exc).__name__)
                if self._lost(exc):
                    await self._quietly("recreating the queue's streams", self._ensure())
                elif isinstance(exc, self.transient):
                    self._broker_down(exc)
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))

    @asynccontextmanager
    async def _answered(self, bounded: bool = True) -> AsyncIterator[None]:
        """A broker call's bound (:attr:`answer_timeout_s`), which ends it as :class:`NoAnswer`."""
        limit = self.answer_timeout_s if bounded else None
        try:
            async with asyncio.timeout(limit) as bound:
                yield
        except TimeoutError:
            if bound.expired():
                raise NoAnswer(f"no answer within {limit:g} s") from None
            raise

    async def _quietly(self, what: str, operation: Awaitable[Any]) -> None:
        """Best effort: what fails here is redelivered, or redone, by the at-least-once rules."""
        try:
            async with self._answered():
                await operation
        except (TimeoutError, *self.broker_errors) as exc:
            log.warning("%s on %s failed: %s", what, self.url, exc or type(exc).__name__)

    def _broker_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = datetime.now(UTC)
            log.warning("the %s broker at %s is unreachable: %s", self.kind, self.url, exc or type(exc).__name__)
        self._down_error = str(exc) or type(exc).__name__
        self._backlog = None

    async def _keep_held(self) -> None:
        while True:
            await asyncio.sleep(self.options.visibility_timeout / 3)
            if self._held:
                await self._quietly("extending running jobs", self._touch([d.tag for d in self._held.values()]))

    async def _watch(self) -> None:
        """Every :data:`WATCH_S`: is the broker there (health), did it lose its state (the
        engine rebuilds it and sends its awaited jobs again), was a running job's run cancelled
        while this process did not hear it (a worker stops the job)."""
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                async with asyncio.timeout(WATCH_S * 2):
                    lost = await self._check()
            except (TimeoutError, *self.broker_errors) as exc:
                if self._lost(exc):
                    await self._quietly("recreating the queue's streams", self._ensure())
                else:
                    self._broker_down(exc)
                continue
            if self._down_since is not None:
                log.warning("the %s broker at %s is reachable again", self.kind, self.url)
                self._down_since, self._down_error = None, ""
            if lost:  # not within the check's time limit: sending many jobs again may take a while
                await self._recover()

    async def _check(self) -> bool:
        """Whether the broker lost the engine's state (its ``epoch`` is gone)."""
        if self._epoch is not None:
            if (await self._state_get(["epoch"]))[0] is None:
                return True
            if time.monotonic() - self._epoch_marked > STATE_TTL_S / 2:  # before it expires like any record
                await self._mark_epoch()
        self._backlog = await self._count_backlog()
        runs = sorted({d.job.run_id for d in self._held.values()} - self._cancels_heard.keys())
        if runs:
            tags = await self._state_get([f"cancel.{run_id}" for run_id in runs])
            for run_id, tag in zip(runs, tags, strict=True):
                if tag == self._signer.tag("cancel", run_id):
                    self._cancelled(run_id)
        return False

    async def _recover(self) -> None:
        """Make the streams again and send every awaited job again; the ``epoch`` is marked
        last, so a recovery cut short by another outage is done again in full."""
        jobs = list(self._resend.values())
        log.warning(
            "the %s broker at %s lost the queue's state (restarted without persistence?): recreating it "
            "and sending again the %d job(s) this engine waits for",
            self.kind,
            self.url,
            len(jobs),
        )
        await self._retrying("recreating the queue's streams", self._ensure)
        for job in jobs:
            await self.put(job)
        await self._retrying("marking the broker", self._mark_epoch)

    async def _mark_epoch(self) -> None:
        await self._state_set({"epoch": self._epoch})
        self._epoch_marked = time.monotonic()
