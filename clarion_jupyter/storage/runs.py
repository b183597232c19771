"""Runs, step attempts and events in DuckDB: :class:`DuckDBRunStore`."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import duckdb

from ..core.errors import StorageUnavailable
from ..core.ids import run_id_floor, run_id_ms
from ..core.protocol import ACTIVE_RUN_STATUSES
from . import journal
from .database import Database
from .protocols import ActiveRun, RunPage
from .records import Batch, Event, RunRecord, StepRecord
from .tables import EVENTS, RUNS, SNAPSHOTS, STEPS, aware, dumps, loads
from .writer import is_permanent

log = logging.getLogger(__name__)

_FIND_IDEMPOTENT = (
    "SELECT min(run_id) FROM (SELECT run_id FROM runs WHERE workflow_id = $1 AND idempotency_key = $2"
    f" UNION ALL SELECT row->>{RUNS.position('run_id')} FROM run_journal WHERE kind = 'run'"
    f" AND row->>{RUNS.position('workflow_id')} = $1 AND row->>{RUNS.position('idempotency_key')} = $2)"
)
_RUN_WITH_WORKFLOW = (
    f"SELECT {', '.join(f'r.{n}' for n in RUNS.names)}, w.doc"
    " FROM runs r JOIN workflow_snapshots w ON w.digest = r.workflow_digest"
)
_ONE_RUN_WITH_WORKFLOW = (
    f"WITH r AS MATERIALIZED (SELECT * FROM runs WHERE run_id = ?) {_RUN_WITH_WORKFLOW.replace('runs r', 'r', 1)}"
)
"""One run by id: through the primary key's index (joined directly, the runs are scanned)."""
_RUN_SUMMARY = f"SELECT {RUNS.column_list}, NULL FROM runs"
"""A run without its workflow snapshot, for lists."""
_STEPS_OF_RUN = f"SELECT {STEPS.column_list} FROM step_runs WHERE run_id = ?"
_EVENTS = (
    "SELECT seq, type, step_id, ts, data FROM events WHERE run_id = $1 AND seq > $2"
    f" UNION ALL SELECT * FROM (SELECT {journal.JOURNALED_EVENT} FROM run_journal WHERE kind = 'event' AND run_id = $1)"
    " WHERE seq > $2 ORDER BY seq"
)
_IMPORT_FINISHED = tuple(table.insert_new for table in (SNAPSHOTS, RUNS, STEPS, EVENTS))
"""Finished runs imported from elsewhere: rows already stored stay as they are."""
_STORED_IDS = "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest($1::VARCHAR[]))"
_FINISHED_RUNS = "SELECT run_id FROM runs WHERE status NOT IN (SELECT unnest($1::VARCHAR[]))"
_DELETE_RUN_ROWS = tuple(
    f"DELETE FROM {table} WHERE run_id IN (SELECT unnest($1::VARCHAR[]))"
    for table in ("run_journal", EVENTS.name, STEPS.name, RUNS.name)
)
"""Every row a run has, in every table that holds one (snapshots are shared by digest and stay)."""
LIST_FIRST_WINDOW_MS = 60_000
"""How far before its cursor (or now) a page of the run list is looked for, the first time."""
LIST_WINDOW_GROWTH = 32
LIST_LONGEST_WINDOW_MS = 366 * 86_400_000
"""Windows grow until they pass this; then the page is looked for everywhere."""
LIST_SHORTEST_WINDOW_MS = 1_000
LIST_FILTERS_KEPT = 256
"""Filters whose last page's span is remembered (the least recently listed are forgotten)."""
PROJECTION_INTERVAL_S = 1.0
"""How long journaled state may wait to reach the tables when nothing reads them."""


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    *columns, doc = row
    return RunRecord(**RUNS.values(tuple(columns)), workflow=loads(doc) or {})


def _step_from_row(row: tuple[Any, ...]) -> StepRecord:
    return StepRecord(**STEPS.values(row))


def _last_seq(cursor: duckdb.DuckDBPyConnection, run_id: str) -> int:
    (seq,) = cursor.execute("SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run_id]).fetchone()
    return int(seq)


def _finished_columns(
    runs: list[RunRecord], steps: list[StepRecord], events: list[Event], skip: set[str]
) -> list[list[list[Any]]]:
    """Column lists for :data:`_IMPORT_FINISHED` (encoding thousands of runs is CPU work, so
    it runs on a thread, not on the event loop); rows of runs in ``skip`` are left out."""
    snapshots: dict[str, tuple[str, str | None]] = {}
    for run in runs:
        if run.workflow_digest not in snapshots:
            snapshots[run.workflow_digest] = (run.workflow_digest, dumps(run.workflow))
    tables = [
        list(snapshots.values()),
        [RUNS.row(r) for r in runs],
        [STEPS.row(s) for s in steps if s.run_id not in skip],
        [EVENTS.row(e) for e in events if e.run_id not in skip],
    ]
    return [[list(column) for column in zip(*rows, strict=True)] if rows else [] for rows in tables]


@dataclass(slots=True)
class _Learned:
    span_ms: int
    """How long a stretch of time the filter's last page covered."""
    floor_ms: int | None
    """The time of the run just below its last first page (None: not seen yet)."""


class _ListWindows:
    """How far back a page of the run list is looked for first, for each filter. A first page
    (no cursor): from the run just below the last first page, so the window holds that page and
    what came since, however long ago the newest run came. A page below a cursor: twice the
    stretch of time the filter's last page covered (runs come at much the same rate from one page
    to the next). Either way, a page mostly takes one look."""

    def __init__(self) -> None:
        self._by_filter: dict[tuple[str | None, str | None], _Learned] = {}

    def first(self, key: tuple[str | None, str | None], upper_ms: int, cursor: str | None) -> int:
        learned = self._by_filter.get(key)
        if learned is None:
            return LIST_FIRST_WINDOW_MS
        if cursor is None and learned.floor_ms is not None:
            return max(LIST_SHORTEST_WINDOW_MS, upper_ms - learned.floor_ms)
        return max(LIST_SHORTEST_WINDOW_MS, 2 * learned.span_ms)

    def learned(self, key: tuple[str | None, str | None], cursor: str | None, page: tuple[int, int] | None) -> None:
        """``page``: the times of the page's newest run and of the run just below it."""
        if page is None:
            return
        newest, beyond = page
        old = self._by_filter.pop(key, None)
        floor = beyond if cursor is None else old.floor_ms if old else None
        self._by_filter[key] = _Learned(newest - beyond, floor)
        if len(self._by_filter) > LIST_FILTERS_KEPT:
            del self._by_filter[next(iter(self._by_filter))]


class DuckDBRunStore:
    """Runs, step attempts and events in DuckDB, committed as a journal and projected.

    Every statement costs about a millisecond whatever its size (an UPDATE twice that), and
    every call into DuckDB gives up and takes back the GIL, which the busy event loop holds.
    A group commit that inserted runs, steps and events and updated known rows took seven
    calls; it now takes one: a single INSERT into ``run_journal``, in its own implicit
    transaction (:mod:`.journal`). The journal is folded into the tables on a thread of its
    own, beside the commits: every :data:`PROJECTION_INTERVAL_S`, before any query of ``runs``
    or ``step_runs`` (so reads see every committed state), and by :meth:`recover` after a
    crash. Event reads take the journal's events along instead of waiting for a projection.
    This is how Temporal separates a durable history from its visibility records, except
    that here reads wait for the projection instead of being eventually consistent.
    """

    def __init__(self, db: Database, projection_interval_s: float = PROJECTION_INTERVAL_S) -> None:
        self._db = db
        self._interval = projection_interval_s
        self._snapshots = journal.RecentKeys[str](journal.MAX_KNOWN_SNAPSHOTS)
        self._projected_runs = journal.RecentKeys[str](journal.MAX_PROJECTED_KEYS)
        self._projected_steps = journal.RecentKeys[tuple[str, str, int]](journal.MAX_PROJECTED_KEYS)
        self._ids = itertools.count(1)
        self._recovered = False
        self._pending = journal.PendingRows()
        self._journaled = 0
        self._projected = 0
        self._projecting = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._background: asyncio.Task[None] | None = None
        self.projection_error: str | None = None
        self._windows = _ListWindows()

    @property
    def unprojected(self) -> int:
        """Commits whose state is only in the journal so far."""
        return self._journaled - self._projected

    async def recover(self) -> None:
        """Fold what an earlier process left in the journal into the tables. Runs once,
        before this store's first write or read (journal ids start again at 1 in each
        process, so what is left must be gone before anything new is journaled)."""
        if self._recovered:
            return
        async with self._projecting:
            if not self._recovered:
                await self._db.maintain(journal.recover)
                self._recovered = True

    async def close(self) -> None:
        """Fold the rest of the journal in, so that the file closes with its tables current
        (if that fails, the journal keeps it all and the next start folds it in)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._background is not None:
            await asyncio.gather(self._background, return_exceptions=True)
        await self._project_logged()

    async def write(self, batch: Batch, *, submission: bool = False) -> None:
        await self.recover()
        if batch.prepared is None:
            # Journal ids grow in commit order for each run: a writer prepares a batch after its
            # previous one committed, and a run's first batch (a submission) commits before the
            # run makes any other. A failed commit retries these rows.
            batch.prepared = journal.prepare(batch, self._snapshots, self._ids)
        prepared: journal.PreparedBatch = batch.prepared
        await self._db.write_one(journal.JOURNAL_INSERT, prepared.columns, submission=submission)
        # Only now do these rows exist: a batch that failed for good must not make later
        # batches skip its snapshots, nor be projected.
        self._snapshots.add(prepared.rows.snapshots)
        self._pending.absorb(prepared.rows)
        self._journaled += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._project_in_background)

    async def project(self) -> None:
        """Bring the tables up to every batch committed so far."""
        await self.recover()
        target = self._journaled
        if self._projected >= target:
            return
        async with self._projecting:
            if self._projected >= target:
                return  # a projection that started after our batch committed covered it
            target = self._journaled
            pending, self._pending = self._pending, journal.PendingRows()
            pending.stored_runs = self._projected_runs.among(pending.runs)
            pending.stored_steps = self._projected_steps.among(pending.steps)
            try:
                await self._db.maintain(journal.project, pending)
            except Exception as exc:
                pending.absorb(self._pending)  # what committed meanwhile is newer
                self._pending = pending
                self.projection_error = f"{type(exc).__name__}: {exc}"
                if is_permanent(exc):
                    raise
                raise StorageUnavailable(
                    f"the run history cannot be brought up to date right now ({self.projection_error}): the "
                    "journal keeps every committed state; free disk space where the database lives and it catches up",
                    details={"reason": self.projection_error},
                ) from exc
            self._projected_runs.add(pending.runs)
            self._projected_steps.add(pending.steps)
            self._projected = target
            self.projection_error = None

    def _project_in_background(self) -> None:
        self._timer = None
        self._background = asyncio.ensure_future(self._project_logged())

    async def _project_logged(self) -> None:
        try:
            await self.project()
        except Exception:
            log.exception("projecting the run journal failed; the journal keeps everything and it is retried")

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        await self.project()
        return await self._db.read(self._get_run, run_id)

    @staticmethod
    def _get_run(cursor: duckdb.DuckDBPyConnection, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        row = cursor.execute(_ONE_RUN_WITH_WORKFLOW, [run_id]).fetchone()
        if row is None:
            return None
        steps = cursor.execute(
            f"{_STEPS_OF_RUN} ORDER BY started_at NULLS LAST, key, attempt",
            [run_id],
        ).fetchall()
        return _run_from_row(row), [_step_from_row(s) for s in steps]

    async def list_runs(
        self, workflow_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        await self.project()
        key = (workflow_id, status)
        upper = run_id_ms(cursor) if cursor is not None else time.time_ns() // 1_000_000
        window = self._windows.first(key, upper or 0, cursor)
        page, times = await self._db.read(self._list_runs, workflow_id, status, limit, cursor, upper, window)
        self._windows.learned(key, cursor, times)
        return page

    @staticmethod
    def _list_runs(
        cur: duckdb.DuckDBPyConnection,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
        upper: int | None,
        window: int,
    ) -> tuple[RunPage, tuple[int, int] | None]:
        """The page is looked for in the ``window`` ms before ``upper`` (the cursor's time, or now)
        first, then in windows :data:`LIST_WINDOW_GROWTH` times longer, and at last everywhere;
        answered with the times of its newest run and of the run just below it. Run ids begin
        with their time, so a window is a range of ids, and DuckDB reads only the runs in it: an
        ``ORDER BY run_id DESC LIMIT`` alone reads every column of every run of the newest row
        group below the cursor (up to 122,880 of them)."""
        clauses, params = [], []
        for clause, value in (("workflow_id = ?", workflow_id), ("status = ?", status), ("run_id < ?", cursor)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        while True:
            bounded = upper is not None and window <= LIST_LONGEST_WINDOW_MS
            where = [*clauses, "run_id >= ?"] if bounded else clauses
            sql = f"{_RUN_SUMMARY} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY run_id DESC LIMIT ?"
            floor = [run_id_floor(upper - window)] if bounded else []
            rows = cur.execute(sql, [*params, *floor, limit + 1]).fetchall()
            if len(rows) > limit or not bounded:
                break
            window *= LIST_WINDOW_GROWTH
        runs = [_run_from_row(r) for r in rows[:limit]]
        if len(rows) <= limit:
            return RunPage(runs=runs, next_cursor=None), None
        newest, beyond = run_id_ms(rows[0][0]), run_id_ms(rows[limit][0])
        times = (newest, beyond) if newest is not None and beyond is not None else None
        return RunPage(runs=runs, next_cursor=runs[-1].run_id), times

    async def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        return await self._db.read(self._events, run_id, since, limit)

    @staticmethod
    def _events(cursor: duckdb.DuckDBPyConnection, run_id: str, since: int, limit: int | None) -> list[Event]:
        sql = _EVENTS
        params: list[Any] = [run_id, since]
        if limit is not None:
            sql += " LIMIT $3"
            params.append(limit)
        return [
            Event(seq=seq, type=type_, run_id=run_id, step_id=step_id, ts=aware(ts), data=loads(data) or {})
            for seq, type_, step_id, ts, data in cursor.execute(sql, params).fetchall()
        ]

    async def find_idempotent(self, workflow_id: str, key: str) -> str | None:
        return await self._db.read(self._find_idempotent, workflow_id, key)

    @staticmethod
    def _find_idempotent(cursor: duckdb.DuckDBPyConnection, workflow_id: str, key: str) -> str | None:
        """Also looks in the journal: an idempotent submit should not wait for a projection."""
        row = cursor.execute(_FIND_IDEMPOTENT, [workflow_id, key]).fetchone()
        return row[0]

    async def active_runs(self) -> list[ActiveRun]:
        await self.project()
        return await self._db.read(self._active_runs)

    @staticmethod
    def _active_runs(cursor: duckdb.DuckDBPyConnection) -> list[ActiveRun]:
        rows = cursor.execute(
            f"{_RUN_WITH_WORKFLOW} WHERE r.status IN {ACTIVE_RUN_STATUSES} ORDER BY r.run_id"
        ).fetchall()
        active = []
        for row in rows:
            run = _run_from_row(row)
            steps = cursor.execute(f"{_STEPS_OF_RUN} ORDER BY key, attempt", [run.run_id]).fetchall()
            active.append(
                ActiveRun(run=run, steps=[_step_from_row(s) for s in steps], last_seq=_last_seq(cursor, run.run_id))
            )
        return active

    async def last_seq(self, run_id: str) -> int:
        await self.project()
        return await self._db.read(_last_seq, run_id)

    async def count_active(self, workflow_id: str) -> int:
        await self.project()
        return await self._db.read(self._count_active, workflow_id)

    @staticmethod
    def _count_active(cursor: duckdb.DuckDBPyConnection, workflow_id: str) -> int:
        (count,) = cursor.execute(
            f"SELECT count(*) FROM runs WHERE workflow_id = ? AND status IN {ACTIVE_RUN_STATUSES}", [workflow_id]
        ).fetchone()
        return count

    # -- finished runs imported from elsewhere (Clarion v2 history) -------------------
    # They never change again and no executor journals them, so they go straight into the
    # tables, one statement per table for the whole import, in one transaction.

    async def import_finished(self, runs: list[RunRecord], steps: list[StepRecord], events: list[Event]) -> int:
        stored = await self.existing_runs([r.run_id for r in runs])
        new = [r for r in runs if r.run_id not in stored]
        if not new:
            return 0
        columns = await asyncio.to_thread(_finished_columns, new, steps, events, stored)
        await self._db.write(self._insert_finished, columns)
        return len(new)

    @staticmethod
    def _insert_finished(cursor: duckdb.DuckDBPyConnection, columns: list[list[list[Any]]]) -> None:
        for sql, table in zip(_IMPORT_FINISHED, columns, strict=True):
            if table:
                cursor.execute(sql, table)

    async def delete_finished(
        self, *, run_id: str | None = None, workflow_id: str | None = None, status: str | None = None
    ) -> list[str]:
        """Delete the finished runs matching every filter given, with all their rows, in one
        transaction; answers their ids. A run still active is never matched. Serialised with
        the projection (which writes the same tables) and folded first, so no row of a
        deleted run is left in the journal to come back."""
        await self.project()
        async with self._projecting:
            return await self._db.maintain(self._delete_finished, run_id, workflow_id, status)

    @staticmethod
    def _delete_finished(
        cursor: duckdb.DuckDBPyConnection, run_id: str | None, workflow_id: str | None, status: str | None
    ) -> list[str]:
        sql, params = _FINISHED_RUNS, [list(ACTIVE_RUN_STATUSES)]
        for column, value in (("run_id", run_id), ("workflow_id", workflow_id), ("status", status)):
            if value is not None:
                params.append(value)
                sql += f" AND {column} = ${len(params)}"
        run_ids = [row[0] for row in cursor.execute(sql, params).fetchall()]
        if run_ids:
            for statement in _DELETE_RUN_ROWS:
                cursor.execute(statement, [run_ids])
        return run_ids

    async def existing_runs(self, run_ids: list[str]) -> set[str]:
        await self.project()
        rows = await self._db.read(lambda c: c.execute(_STORED_IDS, [run_ids]).fetchall())
        return {row[0] for row in rows}

    async def run_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        await self.project()
        sql = "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT ?"
        return [row[0] for row in await self._db.read(lambda c: c.execute(sql, [prefix, limit]).fetchall())]
