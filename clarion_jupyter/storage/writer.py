"""Group commit: one writer task turns many transitions into one DuckDB transaction.

A commit flushes to disk and costs milliseconds, so the engine never waits for one per
transition. It hands records and events to :class:`GroupCommitWriter` and carries on; the
writer commits whatever has accumulated while the previous commit ran, and only then
hands the events of that batch to ``on_committed`` (which announces them). Nothing is
announced before it is durable.

A commit that fails for a passing reason (a full disk, a lock) is retried for as long as it
lasts. One the database refuses for what it holds (a bug: values are checked JSON inside
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
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import duckdb

from ..core.secrets import SecretMasker
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
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._added = 0
        self._committed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0
        self.unstorable_runs: list[str] = []
        """Runs whose transitions the database refused (each ended ``failed``), newest last."""
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
            batch, self._pending = _masked(self._pending, self._masker), Batch()
            target = self._added
            for committed, snapshot in await self._commit_or_isolate(batch):
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
                await self._store.write(batch, submission=self._submissions)
                return None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if is_permanent(exc) and attempt >= PERMANENT_ATTEMPTS:
                    return self.last_error
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


def _masked(batch: Batch, masker: SecretMasker) -> Batch:
    """The batch with secret values masked, as copies (the engine's own records keep theirs)."""
    mask = masker.masking()
    if mask is None:
        return batch
    replace: Callable[..., Any] = dataclasses.replace
    return Batch(
        runs={
            key: replace(run, inputs=mask(run.inputs), outputs=mask(run.outputs), error=mask(run.error))
            for key, run in batch.runs.items()
        },
        steps={
            key: replace(step, output=mask(step.output), error=mask(step.error), approval=mask(step.approval))
            for key, step in batch.steps.items()
        },
        events=[replace(event, data=mask(event.data)) for event in batch.events],
    )
