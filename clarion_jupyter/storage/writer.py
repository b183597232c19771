"""Group commit: one writer task turns many transitions into one DuckDB transaction.

A commit flushes to disk and costs milliseconds, so the engine never waits for one per
transition. It hands records and events to :class:`GroupCommitWriter` and carries on; the
writer commits whatever has accumulated while the previous commit ran, and only then
hands the events of that batch to ``on_committed`` (which announces them). Nothing is
announced before it is durable.

A commit that fails for a passing reason (a full disk, a lock) is retried for as long as it
lasts: the batch stays in the writer, nothing of it is announced, and :attr:`unavailable`
holds the reason until a commit succeeds again (the engine then refuses new runs with
``storage_unavailable`` and its health says ``degraded``). A ``submissions`` writer does not
retry: a new run that cannot be stored is refused at once (its waiters get
:class:`StorageUnavailable`), never accepted and then lost. One the database refuses for what it holds (a bug: values are checked JSON inside
the steps) is retried a few times, then split by run, so that every other run's work is
stored and announced; the runs whose own records are refused are handed to
``on_unstorable``, which ends them ``failed`` with the storage error (the engine does; it is
also in health), and their refused transitions are never announced.

Every batch passes here on its way to disk and to listeners, so this is also where secret
values are masked in what the engine itself built (run inputs and outputs, approval
previews, errors, event data), besides what the workers already masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb

from ..core.errors import StorageUnavailable
from ..core.secrets import SecretMasker
from .protocols import RunStore
from .records import Batch, Event, RunRecord, StepRecord

log = logging.getLogger(__name__)
R = TypeVar("R", RunRecord, StepRecord, Event)
PERMANENT_ATTEMPTS = 3
MAX_RETRY_DELAY_S = 1.0
"""The longest wait between two tries of a failed commit: space coming back is noticed within it."""
COMMIT_PACE_S = 0.05
"""The shortest time between the starts of two commits while transitions keep coming (see
``GroupCommitWriter._paced``): live events of a busy engine are at most that much later. A
commit between busy spells costs DuckDB 1.5 to 2 ms of CPU however small it is (half a
millisecond back to back, with warm caches): at 50 ms that is a few percent of a core."""
STOP_WHILE_DOWN_S = 2.0
"""How long a stop waits for a database that cannot write (a full disk) before it gives up on
what is pending: those transitions were never announced, and their runs resume at the next
start from their last stored state."""
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
    """Collects transitions and events and commits them together every few milliseconds: durability at a DuckDB commit's cost per batch, not per transition, and nothing is announced before it is stored."""

    def __init__(
        self,
        store: RunStore,
        on_committed: Callable[[list[Event]], None],
        on_stored: Callable[[list[RunRecord], list[StepRecord], list[Event]], None] | None = None,
        *,
        on_unstorable: Callable[[str, str], None] = lambda _run_id, _error: None,
        submissions: bool = False,
        masker: SecretMasker | None = None,
    ) -> None:
        """``on_stored`` gets copies of the records each commit made durable, and its events,
        before they are announced (so a reader of that state never runs behind them).
        A ``submissions`` writer carries only new runs, and commits beside the main one."""
        self._store = store
        self._submissions = submissions
        self._on_committed = on_committed
        self._on_stored = on_stored
        self._on_unstorable = on_unstorable
        self._masker = masker or SecretMasker()
        self._pending = Batch()
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        """Something waits for the pending batch (a run's end, a flush, the close): no pacing."""
        self._last_commit = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight: list[str] = []
        self._added = 0
        self._committed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0
        self.unstorable_runs: list[str] = []
        """Runs whose transitions the database refused (each ended ``failed``), newest last."""
        self.last_error: str | None = None
        self.unavailable: str | None = None
        """Why the last commit failed, while no commit has succeeded since (a full disk)."""
        self.not_stored: list[str] = []
        """The runs whose transitions a stop could not store (they resume at the next start)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="clarion-group-commit")

    async def close(self, timeout: float = 30.0) -> None:
        """Commit everything still pending, then stop; give up after ``timeout`` seconds of a
        database that will not take it (a full disk), rather than hang the host's shutdown."""
        self._closing = True
        self._hurry.set()
        self._wake.set()
        if self._task is None:
            return
        if self.unavailable is not None:
            timeout = min(timeout, STOP_WHILE_DOWN_S)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self.not_stored = sorted({*self._in_flight, *self._pending.split_by_run()})
            log.critical(
                "stopped with %d transitions of %d run(s) not stored (%s); none of them was announced, and "
                "the runs resume from their last stored state at the next start: %s",
                self._added - self._committed, len(self.not_stored), ", ".join(self.not_stored), self.last_error,
            )  # fmt: skip

    def add_run(self, record: RunRecord) -> None:
        self._pending.runs[record.run_id] = record
        self._touch()

    def add_step(self, record: StepRecord) -> None:
        self._pending.steps[(record.run_id, record.key, record.attempt)] = record
        self._touch()

    def add_event(self, event: Event) -> None:
        self._pending.events.append(event)
        if event.terminal:
            self._hurry.set()
        self._touch()

    def _touch(self) -> None:
        self._added += 1
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything added so far is committed."""
        target = self._added
        if self._committed >= target:
            return
        self._hurry.set()
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    async def _paced(self) -> None:
        """Under a steady stream of transitions, commit at most every :data:`COMMIT_PACE_S`:
        a commit costs DuckDB milliseconds of CPU however small it is, and an engine
        waiting on many slow steps (LLM calls) otherwise commits once per answer. A run's end,
        a :meth:`flush` and a close commit at once, as does anything after a quiet spell."""
        left = self._last_commit + COMMIT_PACE_S - time.monotonic()
        if left > 0 and not self._submissions and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._hurry.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._paced()
            self._wake.clear()
            self._hurry.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            self._last_commit = time.monotonic()
            batch, self._pending = _masked(self._pending, self._masker), Batch()
            target = self._added
            self._in_flight = list(batch.run_ids())
            if self._submissions:
                stored = await self._submit(batch, target)
            else:
                stored = await self._commit_or_isolate(batch)
            self._in_flight = []
            for committed, snapshot in stored:
                self.batches += 1
                if self._on_stored is not None:
                    self._on_stored(*snapshot, committed.events)
                self._on_committed(committed.events)
            self._committed = target
            self._release(target)
            if self._pending or self._closing:
                self._wake.set()

    async def _commit_or_isolate(self, batch: Batch) -> list[tuple[Batch, tuple[list[RunRecord], list[StepRecord]]]]:
        """The batches stored, each with copies of its records as stored (the engine goes on
        changing its own): the whole batch, or, when the database refuses it for good, each
        run's part that it takes."""
        snapshot = batch.snapshot()
        error = await self._commit(batch)
        if error is None:
            return [(batch, snapshot)]
        parts = batch.split_by_run()
        if len(parts) == 1:
            self._unstorable(next(iter(parts)), error)
            return []
        stored = []
        for run_id, part in parts.items():
            part_snapshot = part.snapshot()
            part_error = await self._commit(part)
            if part_error is None:
                stored.append((part, part_snapshot))
            else:
                self._unstorable(run_id, part_error)
        return stored

    async def _submit(self, batch: Batch, target: int) -> list[tuple[Batch, tuple[list[RunRecord], list[StepRecord]]]]:
        """New runs are committed once: when that fails, whoever waits for them is refused
        (they were never stored nor announced, so nothing is lost), and the next ones try again."""
        snapshot = batch.snapshot()
        try:
            await self._store.write(batch, submission=True)
        except Exception as exc:
            if is_permanent(exc):
                return await self._commit_or_isolate(batch)
            self.last_error = self.unavailable = f"{type(exc).__name__}: {exc}"
            log.error("new runs %s could not be stored and were refused: %s", ", ".join(batch.runs), exc)
            self._fail_waiters(target, self.unavailable)
            return []
        self.unavailable = None
        return [(batch, snapshot)]

    def _fail_waiters(self, target: int, error: str) -> None:
        still = []
        for waited, future in self._waiters:
            if waited <= target:
                if not future.done():
                    future.set_exception(refusal(error))
            else:
                still.append((waited, future))
        self._waiters = still

    def _unstorable(self, run_id: str, error: str) -> None:
        log.critical("the transitions of run %s could not be stored and were not announced: %s", run_id, error)
        self.unstorable_runs = [*self.unstorable_runs[-99:], run_id]
        self._on_unstorable(run_id, error)

    async def _commit(self, batch: Batch) -> str | None:
        """Commit, retrying transient failures (a full disk, a lock) for as long as they last;
        None once stored, or the error of a batch the database refuses for what it holds."""
        delay, attempt = 0.05, 0
        while True:
            attempt += 1
            try:
                await self._store.write(batch)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if is_permanent(exc) and attempt >= PERMANENT_ATTEMPTS:
                    return self.last_error
                if not is_permanent(exc):
                    self.unavailable = self.last_error
                log.error("commit of %d events failed; retrying in %.2f s: %s", len(batch.events), delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
            else:
                if self.unavailable is not None:
                    log.warning("storage is back: the batch of %d events was stored", len(batch.events))
                self.unavailable = None
                return None

    def _release(self, committed: int) -> None:
        still = []
        for target, future in self._waiters:
            if target <= committed:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still


def refusal(reason: str) -> StorageUnavailable:
    """The error that refuses new work while the database cannot write."""
    return StorageUnavailable(
        f"the Clarion database cannot store anything right now ({reason}); nothing new is accepted until it "
        "can: free disk space where the database lives, and Clarion recovers by itself",
        details={"reason": reason},
    )


def _masked(batch: Batch, masker: SecretMasker) -> Batch:
    """The batch with secret values masked, in copies of the records they were in (the
    engine's own records keep theirs); the records that hold none are the engine's own."""
    mask = masker.masking()
    if mask is None:
        return batch
    return Batch(
        runs={key: _masked_record(run, mask, "inputs", "outputs", "error") for key, run in batch.runs.items()},
        steps={key: _masked_record(step, mask, "output", "error", "approval") for key, step in batch.steps.items()},
        events=[_masked_record(event, mask, "data") for event in batch.events],
    )


def _masked_record(record: R, mask: Callable[[Any], Any], *names: str) -> R:
    """``record`` when masking changes none of its fields (nearly always, and then its encoded
    event stays cached), else a copy with them masked."""
    changed = {name: masked for name in names if (masked := mask(value := getattr(record, name))) is not value}
    return dataclasses.replace(record, **changed) if changed else record
