"""RedisQueue: step jobs in a Redis Stream read by a consumer group of workers.

Keys, under the URL's ``prefix`` (``redis://host:6379/0?prefix=clarion``):

- ``{prefix}:jobs``: the job stream; group ``workers`` (XREADGROUP), every worker process one
  consumer. An entry is the signed job and, unsigned, its nonce and run, so the script that
  takes jobs for a worker reads their state records in the same step (:data:`TAKE`); a worker
  waits for jobs with a blocking XREADGROUP pipelined with that script, which Redis runs the
  moment the read wakes: a job reaches one worker, checked, in one round trip. A job stays
  in the group's pending list until acked (XACK, then XDEL: the stream
  holds only jobs waiting or running, so its length is the backlog that ``put`` bounds). A
  worker keeps its running jobs' idle time low (XCLAIM to itself); a job idle longer than
  the visibility timeout belonged to a dead worker, and the next worker looking takes it
  over (XAUTOCLAIM).
- ``{prefix}:results``: results and progress; group ``engine``, one consumer, also ``engine``,
  so a restarted engine first reads what it had been given but not acked.
- ``{prefix}:cancel``: a pub/sub channel; every worker hears which run was cancelled.
- ``{prefix}:state:{name}``: the state records (strings, and lists for ``took.*``), with a TTL.

Redis restarted without persistence comes back empty: the first command that meets
``NOGROUP`` makes the groups again (``XGROUP CREATE ... MKSTREAM``), and the engine, missing
its ``epoch``, sends again the jobs it waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from .batching import stop_if_cancelled
from .broker import (
    CONNECT_TIMEOUT_S,
    RESULT_BATCH,
    STATE_TTL_S,
    Ack,
    BrokerQueue,
    JobState,
    Raw,
    Sealed,
    TakeJobs,
    Taken,
)
from .queue import Delivery, Job

WORKERS, ENGINE = "workers", "engine"
OFFER = """
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local added = 0
while added < room and added < (#ARGV - 1) / 3 do
  local at = added * 3 + 2
  added = added + 1
  redis.call('XADD', KEYS[1], '*', 'job', ARGV[at], 'nonce', ARGV[at + 1], 'run', ARGV[at + 2])
end
return added
"""
"""Check the bound and add as many jobs as it leaves room for, in order, in one step, so
concurrent producers cannot overshoot it together (``ARGV``: the bound, then each job's
message, nonce and run)."""
TAKE = """
local group, consumer, state, me, ttl, after = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local entries = {}
if after == '' then
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
  entries = reply and reply[1][2] or {}
else
  for _, pending in ipairs(redis.call('XPENDING', KEYS[1], group, '(' .. after, '+', ARGV[3], consumer)) do
    entries[#entries + 1] = redis.call('XRANGE', KEYS[1], pending[1], pending[1])[1] or {pending[1], false}
  end
end
local taken = {}
for _, entry in ipairs(entries) do
  local fields = {}
  for i = 1, #(entry[2] or {}), 2 do
    fields[entry[2][i]] = entry[2][i + 1]
  end
  local nonce, run = fields['nonce'], fields['run']
  if nonce and run then
    local took = state .. 'took.' .. nonce
    redis.call('RPUSH', took, me)
    redis.call('EXPIRE', took, ttl)
    taken[#taken + 1] = {entry[1], fields['job'] or false, nonce, run, redis.call('GET', state .. 'done.' .. nonce),
      redis.call('GET', state .. 'cancel.' .. run), redis.call('LRANGE', took, 0, -1)}
  else
    taken[#taken + 1] = {entry[1], fields['job'] or false}
  end
end
return taken
"""
"""New jobs for a worker and, for each entry naming its nonce and run, its ``done`` and
``cancel`` records and the workers it went to, this one added (``ARGV``: group, consumer,
count, the state records' prefix, this worker, their TTL, and ``after``). Without ``after``
it reads the new jobs itself; with it, it takes the entries after ``after`` in this worker's
pending list: those the blocking XREADGROUP just before it in the same pipeline handed over."""
CHECK_IN = """
local found = {}
for i = 1, #KEYS, 3 do
  found[#found + 1] = redis.call('GET', KEYS[i])
  found[#found + 1] = redis.call('GET', KEYS[i + 1])
  redis.call('RPUSH', KEYS[i + 2], ARGV[1])
  redis.call('EXPIRE', KEYS[i + 2], ARGV[2])
  found[#found + 1] = redis.call('LRANGE', KEYS[i + 2], 0, -1)
end
return found
"""
"""For each job taken without its state (reclaimed, or an entry not naming its nonce and run;
keys: its ``done``, ``cancel`` and ``took`` records): the first two, and the workers it went
to after this one is added (``ARGV``: this worker, the records' TTL)."""
SEND = """
local ttl, group = ARGV[1], ARGV[2]
local results, acks = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, results do
  redis.call('XADD', KEYS[1], '*', 'result', ARGV[4 + i])
end
local tags = 4 + results + acks
for i = 3, #KEYS, 2 do
  redis.call('SET', KEYS[i], ARGV[tags + (i - 1) / 2], 'EX', ttl)
  redis.call('DEL', KEYS[i + 1])
end
if acks > 0 then
  redis.call('XACK', KEYS[2], group, unpack(ARGV, 5 + results, 4 + results + acks))
  redis.call('XDEL', KEYS[2], unpack(ARGV, 5 + results, 4 + results + acks))
end
return results
"""
"""A worker's batch in one step: its results first (keys: the results and jobs streams), then
the ``done`` record of each finished job (and its ``took`` record deleted: the key pairs that
follow), then the acks; ``ARGV``: TTL, group, how many results and acks, the results, the
acked entries' ids, the ``done`` tags. A worker cut off before it never acks a job without
having sent its result."""
ANSWER_TIMEOUT_S = 5.0
"""How much longer than its blocking wait a call may go unanswered before its connection counts as dead."""
MAX_CONNECTIONS = 512
"""Connections a queue opens at most (a worker slot's blocking read holds one); beyond it a
command waits for a free one rather than failing. A URL's ``max_connections`` overrides it."""


class RedisQueue(BrokerQueue):
    """Step jobs through Redis Streams and consumer groups, for ``clarion worker`` processes anywhere."""

    kind = "redis"
    transient = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)
    broker_errors = (redis.exceptions.RedisError, ConnectionError)
    client_params = True

    def __init__(self, url: str, max_pending: int | None = None) -> None:
        super().__init__(url, max_pending)
        prefix = self.options.prefix
        self._jobs, self._results, self._channel = f"{prefix}:jobs", f"{prefix}:results", f"{prefix}:cancel"
        self._consumer = self.identity
        self._state = f"{prefix}:state:"
        self._visibility_ms = int(self.options.visibility_timeout * 1000)
        self._block_ms = max(min(1000, self._visibility_ms // 2), 1)
        """How long a read waits for a new job: idle slots look for abandoned jobs this often."""
        self._reclaim_due = 0.0
        self._checked: tuple[int, int] | None = None
        """The newest job entry this worker took: those after it in its pending list are new to it."""
        self._results_from = "0"
        """The engine reads its own unacked results first (from before a restart), then new ones (``>``)."""
        self._consumed = False
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None

    @property
    def answer_timeout_s(self) -> float:
        """A blocking read's wait, and :data:`ANSWER_TIMEOUT_S` more."""
        return self._block_ms / 1000 + ANSWER_TIMEOUT_S

    async def _connect(self) -> None:
        # No socket timeout of redis-py's own (5 s by default; a URL may still set one): with
        # one, redis-py sends each command under asyncio.wait_for, which on Python 3.11 is a
        # task per command (two more loop turns, a quarter of a step's round trip) and can lose
        # a cancel. Each call is bounded by answer_timeout_s instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.client_url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            socket_timeout=None,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        await self._redis.ping()
        await self._ensure()
        self._offer_script = self._redis.register_script(OFFER)
        self._check_in_script = self._redis.register_script(CHECK_IN)
        self._take_script = self._redis.register_script(TAKE)
        self._send_script = self._redis.register_script(SEND)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._channel)
        self._spawn(self._listen())

    async def _ensure(self) -> None:
        self._checked = None  # a stream made anew numbers its entries anew
        for stream, group in ((self._jobs, WORKERS), (self._results, ENGINE)):
            try:
                await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @staticmethod
    def _lost(exc: BaseException) -> bool:
        return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("NOGROUP")

    async def _disconnect(self) -> None:
        if self._redis is None:
            return
        if self._consumed:
            await self._forget_consumer()
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self._redis.aclose()
        self._redis = None

    async def _forget_consumer(self) -> None:
        """Leave the group once nothing is pending for this worker (deleting it earlier would lose those jobs)."""
        if not await self._redis.xpending_range(self._jobs, WORKERS, "-", "+", 1, consumername=self._consumer):
            await self._redis.xgroup_delconsumer(self._jobs, WORKERS, self._consumer)

    async def _listen(self) -> None:
        async def listen() -> None:
            async for message in self._pubsub.listen():
                if message["type"] == "message":
                    self._cancel_heard(message["data"])

        while True:
            await self._retrying("listening for cancels", listen, bounded=False)

    @asynccontextmanager
    async def _job_source(self) -> AsyncIterator[TakeJobs]:
        self._consumed = True
        yield self._next_jobs

    async def _next_jobs(self, count: int) -> list[Taken]:
        loop_time = asyncio.get_running_loop().time()
        if loop_time >= self._reclaim_due:
            self._reclaim_due = loop_time + self.options.visibility_timeout / 2
            _next, claimed, _deleted = await self._redis.xautoclaim(
                self._jobs, WORKERS, self._consumer, min_idle_time=self._visibility_ms, count=count
            )
            if claimed:
                self._reclaim_due = loop_time  # a dead worker may have left more
                return self._newest([Taken(*_raw(entry, b"job")) for entry in claimed])
        args = [WORKERS, self._consumer, count, self._state, self.identity, int(STATE_TTL_S)]
        if self._checked is None:
            entries = await self._take_script(keys=[self._jobs], args=[*args, ""])
        else:
            entries = await self._woken_take([*args, "-".join(map(str, self._checked))])
        return self._newest([_taken(entry) for entry in entries])

    def _newest(self, taken: list[Taken]) -> list[Taken]:
        """Remember the newest entry taken (an entry delivered later is newer than any before)."""
        self._checked = max([self._checked or (0, 0), *(_entry_id(message.handle) for message in taken)])
        return taken

    async def _woken_take(self, args: list[Any]) -> Any:
        """:data:`TAKE` of what a blocking read hands this worker (or nothing, once the wait ends):
        the read and the script go in one pipeline, and Redis runs the script as soon as the read
        returns, without a round trip back to this worker in between. Each new job wakes one
        waiting worker, as a blocking XREADGROUP is served."""
        for _attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xreadgroup(WORKERS, self._consumer, {self._jobs: ">"}, count=args[2], block=self._block_ms)
                pipe.evalsha(self._take_script.sha, 1, self._jobs, *args)
                try:
                    _handed, taken = await pipe.execute()
                    return taken
                except redis.exceptions.NoScriptError:  # a restarted Redis forgot the script
                    stop_if_cancelled()
                    await self._redis.script_load(TAKE)
        return await self._take_script(keys=[self._jobs], args=args)

    async def _offer(self, sealed: list[Sealed]) -> list[bool]:
        args: list[Any] = [self.max_pending]
        for job, data in sealed:
            args += [data, job.nonce, job.run_id]
        added = int(await self._offer_script(keys=[self._jobs], args=args))
        return [index < added for index in range(len(sealed))]

    async def _jobs_state(self, jobs: list[Job]) -> list[JobState]:
        records = [f"{self._state}{name}" for job in jobs for name in _job_records(job)]
        found = await self._check_in_script(keys=records, args=[self.identity, int(STATE_TTL_S)])
        return [(found[i], found[i + 1], found[i + 2]) for i in range(0, len(found), 3)]

    async def _send(self, results: list[bytes], acks: list[Ack]) -> None:
        records = [ack for ack in acks if ack.nonce is not None]
        keys = [self._results, self._jobs]
        keys += [f"{self._state}{kind}.{ack.nonce}" for ack in records for kind in ("done", "took")]
        args = [int(STATE_TTL_S), WORKERS, len(results), len(acks), *results]
        args += [ack.handle for ack in acks] + [ack.tag for ack in records]
        await self._send_script(keys=keys, args=args)

    async def _give_back(self, deliveries: list[tuple[Delivery, bytes]]) -> None:
        ids = [d.tag for d, _ in deliveries]
        async with self._redis.pipeline(transaction=True) as pipe:
            for delivery, data in deliveries:
                pipe.xadd(self._jobs, {"job": data, "nonce": delivery.job.nonce, "run": delivery.job.run_id})
            await pipe.xack(self._jobs, WORKERS, *ids).xdel(self._jobs, *ids).execute()

    async def _touch(self, handles: list[Any]) -> None:
        await self._redis.xclaim(self._jobs, WORKERS, self._consumer, min_idle_time=0, message_ids=handles, justid=True)

    async def _take_results(self, acked: list[Any]) -> list[Raw]:
        new = self._results_from == ">"
        async with self._redis.pipeline(transaction=False) as pipe:
            # The acks go after the read: Redis runs them as the read returns, so their replies
            # come with its own (one wake of this loop per batch, not two); until then they wait.
            pipe.xreadgroup(
                ENGINE,
                ENGINE,
                {self._results: self._results_from},
                count=RESULT_BATCH,
                block=self._block_ms if new else None,
            )
            if acked:
                pipe.xack(self._results, ENGINE, *acked).xdel(self._results, *acked)
            reply, *_ = await pipe.execute()
        entries = reply[0][1] if reply else []
        if not new and not entries:
            self._results_from = ">"
        return [_raw(entry, b"result") for entry in entries]

    async def _publish_cancel(self, data: bytes) -> None:
        await self._redis.publish(self._channel, data)

    async def _count_backlog(self) -> int:
        return await self._redis.xlen(self._jobs)

    async def _scan(self) -> tuple[list[bytes], list[bytes]]:
        jobs, results = await asyncio.gather(self._redis.xrange(self._jobs), self._redis.xrange(self._results))
        return [_raw(e, b"job")[1] for e in jobs], [_raw(e, b"result")[1] for e in results]

    async def _state_get(self, names: list[str]) -> list[bytes | None]:
        return await self._redis.mget([self._state + name for name in names])

    async def _state_set(self, values: dict[str, bytes], delete: tuple[str, ...] = ()) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, value in values.items():
                pipe.set(self._state + name, value, ex=int(STATE_TTL_S))
            if delete:
                pipe.delete(*[self._state + name for name in delete])
            await pipe.execute()

    async def _state_remove(self, name: str, value: bytes) -> None:
        await self._redis.lrem(self._state + name, 1, value)


def _job_records(job: Job) -> tuple[str, str, str]:
    return f"done.{job.nonce}", f"cancel.{job.run_id}", f"took.{job.nonce}"


def _entry_id(handle: bytes) -> tuple[int, int]:
    milliseconds, sequence = handle.split(b"-")
    return int(milliseconds), int(sequence)


def _taken(entry: list[Any]) -> Taken:
    """An entry as :data:`TAKE` gives it: with its state when it named its nonce and run."""
    if len(entry) == 2:
        return Taken(entry[0], entry[1] or None)
    entry_id, data, nonce, run, done, cancelled, took = entry
    return Taken(
        entry_id,
        data or None,
        (done or None, cancelled or None, took),
        (nonce.decode(errors="replace"), run.decode(errors="replace")),
    )


def _raw(entry: tuple[bytes, dict[bytes, bytes] | None], field: bytes) -> Raw:
    """A stream entry as (id, body); an entry deleted after it was delivered has no fields."""
    entry_id, fields = entry
    return entry_id, (fields or {}).get(field)
