"""Group commit: one writer task turns many transitions into one DuckDB transaction.

A commit flushes to disk and costs milliseconds, so the engine never waits for one per
transition. It hands records and events to :class:`GroupCommitWriter` and carries on; the
writer commits whatever has accumulated while the previous commit ran, and only then
hands the events of that batch to ``on_committed`` (which announces them). Nothing is
announced before it is durable, and nothing is dropped: a failing commit is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import duckdb

from .protocols import RunStore
from .records import Batch, Event, RunRecord, StepRecord

log = logging.getLogger(__name__)
PERMANENT_ATTEMPTS = 3
_PERMANENT = (
    duckdb.ConstraintException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.ParserException,
    TypeError,
    ValueError,
)


def is_permanent(exc: BaseException) -> bool:
    """Errors about the batch's content, which no retry can fix (unlike I/O or lock errors)."""
    return isinstance(exc, _PERMANENT)


class GroupCommitWriter:
    def __init__(
        self,
        store: RunStore,
        on_committed: Callable[[list[Event]], None],
        on_stored: Callable[[list[RunRecord], list[StepRecord]], None] | None = None,
        *,
        submissions: bool = False,
    ) -> None:
        """``on_stored`` gets copies of the records each commit made durable, before the
        batch's events are announced (so a reader of that state never runs behind them).
        A ``submissions`` writer carries only new runs, and commits beside the main one."""
        self._store = store
        self._submissions = submissions
        self._on_committed = on_committed
        self._on_stored = on_stored
        self._pending = Batch()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._added = 0
        self._committed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0
        self.dropped_batches = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="clarion-group-commit")

    async def close(self, timeout: float = 30.0) -> None:
        """Commit everything still pending, then stop; give up after ``timeout`` seconds of a
        database that will not take it (a full disk), rather than hang the host's shutdown."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            log.critical("stopped with %d transitions not stored: %s", self._added - self._committed, self.last_error)

    def add_run(self, record: RunRecord) -> None:
        self._pending.runs[record.run_id] = record
        self._touch()

    def add_step(self, record: StepRecord) -> None:
        self._pending.steps[(record.run_id, record.key, record.attempt)] = record
        self._touch()

    def add_event(self, event: Event) -> None:
        self._pending.events.append(event)
        self._touch()

    def _touch(self) -> None:
        self._added += 1
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything added so far is committed."""
        target = self._added
        if self._committed >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            batch, self._pending = self._pending, Batch()
            target = self._added
            snapshot = batch.snapshot() if self._on_stored is not None else None
            if await self._commit(batch):
                self.batches += 1
                if snapshot is not None:
                    self._on_stored(*snapshot)
                self._on_committed(batch.events)
            self._committed = target
            self._release(target)
            if self._pending or self._closing:
                self._wake.set()

    async def _commit(self, batch: Batch) -> bool:
        """Commit, retrying transient failures (a full disk, a lock) for as long as they last.

        A batch that the database refuses for what it contains is a bug, and retrying it
        forever would stall every run: after a few attempts it is set aside, loudly, and
        its events are not announced (they were never stored).
        """
        delay, attempt = 0.05, 0
        while True:
            attempt += 1
            try:
                await self._store.write(batch, submission=self._submissions)
                return True
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if is_permanent(exc) and attempt >= PERMANENT_ATTEMPTS:
                    self.dropped_batches += 1
                    log.critical("a batch of %d events could not be stored and was dropped: %s", len(batch.events), exc)
                    return False
                log.exception("commit of %d events failed; retrying in %.2f s", len(batch.events), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _release(self, committed: int) -> None:
        still = []
        for target, future in self._waiters:
            if target <= committed:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still
