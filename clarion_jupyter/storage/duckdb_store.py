"""DuckDB implementations of the storage interfaces.

Batches are written column-wise (``INSERT ... SELECT unnest($1), unnest($2), ...``): DuckDB
binds one list per column in a few microseconds a row, where a multi-row ``VALUES`` costs
tens of microseconds a row in the parser.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb

from ..core.errors import Conflict, StorageUnavailable
from ..core.protocol import ACTIVE_RUN_STATUSES
from .database import Database
from .llm_cache import DuckDBLLMCache
from .protocols import ActiveRun, RunPage
from .query import MAX_BYTES, MAX_ROWS, TIMEOUT_S, HistorySandbox, QueryResult
from .records import Batch, Event, RunRecord, StepRecord, StoredDocument, utcnow
from .writer import is_permanent

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _naive(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.astimezone(UTC).replace(tzinfo=None)


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


_TO_SQL: dict[str, Callable[[Any], Any]] = {"JSON": _dumps, "TIMESTAMP": _naive}
_FROM_SQL: dict[str, Callable[[Any], Any]] = {"JSON": _loads, "TIMESTAMP": _aware}


@dataclass(frozen=True)
class _Table:
    """One definition of a table's columns, from which every statement, every journal row and
    every record conversion is derived, so no column order is written down twice. ``JSON``
    columns are VARCHAR holding JSON; record attributes have the columns' names."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    changing: tuple[str, ...] = ()
    """Columns a later state of the same key replaces; the others (identity, inputs) stay."""

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @cached_property
    def column_list(self) -> str:
        return ", ".join(self.names)

    @cached_property
    def changing_positions(self) -> frozenset[int]:
        return frozenset(self.names.index(c) for c in self.changing)

    def position(self, column: str) -> int:
        """Where ``column`` sits in a journaled row (a JSON array in this column order)."""
        return self.names.index(column)

    def row(self, record: object) -> tuple[Any, ...]:
        return tuple(_TO_SQL.get(t, _same)(getattr(record, n)) for n, t in self.columns)

    def values(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return {n: _FROM_SQL.get(t, _same)(v) for (n, t), v in zip(self.columns, row, strict=True)}

    def merge(self, first: tuple[Any, ...], latest: tuple[Any, ...]) -> tuple[Any, ...]:
        """A key's row: the changing columns from its latest state, the rest from its first."""
        changing = self.changing_positions
        return tuple(new if i in changing else old for i, (old, new) in enumerate(zip(first, latest, strict=True)))

    def _on_conflict(self) -> str:
        if not self.changing:
            return "ON CONFLICT DO NOTHING"
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.changing)
        return f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}"

    @cached_property
    def upsert(self) -> str:
        """Insert rows bound column by column; a key the table has gets its changing columns updated."""
        unnest = ", ".join(f"unnest(${i})" for i in range(1, len(self.columns) + 1))
        return f"INSERT INTO {self.name} ({self.column_list}) SELECT {unnest} {self._on_conflict()}"

    def recovery(self, kind: str) -> str:
        """Fold each key's journaled rows (``kind``) into the table, parsing their JSON: the changing
        columns from its newest row (journal ids only grow), the others from its first."""
        values = ", ".join(
            f"({'last' if n in self.changing else 'first'}->>{i})::{'VARCHAR' if t == 'JSON' else t}"
            for i, (n, t) in enumerate(self.columns)
        )
        group = ", ".join(f"row->>{self.position(k)}" for k in self.key)
        return (
            f"INSERT INTO {self.name} ({self.column_list}) SELECT {values} FROM (SELECT arg_min(row, id) AS first,"
            f" arg_max(row, id) AS last FROM run_journal WHERE kind = '{kind}' GROUP BY {group}) {self._on_conflict()}"
        )


def _same(value: Any) -> Any:
    return value


RUNS = _Table(
    "runs",
    (
        ("run_id", "VARCHAR"), ("workflow_id", "VARCHAR"), ("workflow_name", "VARCHAR"),
        ("workflow_digest", "VARCHAR"), ("inputs", "JSON"), ("status", "VARCHAR"), ("idempotency_key", "VARCHAR"),
        ("created_at", "TIMESTAMP"), ("started_at", "TIMESTAMP"), ("finished_at", "TIMESTAMP"),
        ("outputs", "JSON"), ("error", "JSON"), ("usage", "JSON"), ("parent_run_id", "VARCHAR"), ("changes", "JSON"),
        ("budget", "JSON"),
        ("cache", "BOOLEAN"),
    ),
    key=("run_id",),
    changing=("status", "started_at", "finished_at", "outputs", "error", "usage", "budget"),
)  # fmt: skip
STEPS = _Table(
    "step_runs",
    (
        ("run_id", "VARCHAR"), ("key", "VARCHAR"), ("step_id", "VARCHAR"), ("item_index", "INTEGER"),
        ("attempt", "INTEGER"), ("status", "VARCHAR"), ("started_at", "TIMESTAMP"),
        ("finished_at", "TIMESTAMP"), ("output", "JSON"), ("error", "JSON"), ("usage", "JSON"),
        ("approval", "JSON"), ("reused_from", "JSON"),
    ),
    key=("run_id", "key", "attempt"),
    changing=("status", "started_at", "finished_at", "output", "error", "usage", "approval"),
)  # fmt: skip
EVENTS = _Table(
    "events",
    (("run_id", "VARCHAR"), ("seq", "BIGINT"), ("type", "VARCHAR"), ("step_id", "VARCHAR"), ("ts", "TIMESTAMP"),
     ("data", "JSON")),
    key=("run_id", "seq"),
)  # fmt: skip
SNAPSHOTS = _Table("workflow_snapshots", (("digest", "VARCHAR"), ("doc", "VARCHAR")), key=("digest",))

_JOURNAL_INSERT = (
    "INSERT INTO run_journal (id, kind, run_id, row) SELECT unnest($1), unnest($2), unnest($3), unnest($4)"
)
_JOURNALED_EVENT = (
    "(row->>'seq')::BIGINT AS seq, row->>'type' AS type, row->>'step_id' AS step_id,"
    " replace(row->>'ts', 'Z', '')::TIMESTAMP AS ts, (row->'data')::VARCHAR AS data"
)
"""Journaled events are the API's JSON objects, so they are read by key."""
_RECOVER = (
    f"INSERT INTO workflow_snapshots SELECT row->>{SNAPSHOTS.position('digest')}, "
    f"any_value(row->>{SNAPSHOTS.position('doc')}) FROM run_journal WHERE kind = 'snapshot'"
    f" GROUP BY row->>{SNAPSHOTS.position('digest')} ON CONFLICT DO NOTHING",
    # seq is unique per run by construction; should a bug ever repeat one, the first stored
    # event is kept rather than the projection failing on it forever.
    f"INSERT INTO events ({EVENTS.column_list}) SELECT run_id, {_JOURNALED_EVENT}"
    " FROM run_journal WHERE kind = 'event' QUALIFY row_number() OVER (PARTITION BY run_id, seq ORDER BY id) = 1"
    " ON CONFLICT DO NOTHING",
    RUNS.recovery("run"),
    STEPS.recovery("step"),
    "DELETE FROM run_journal",
)
"""Fold the whole journal, parsing its JSON: after a crash, when nothing of it is in memory."""
_EVENT_INSERT = EVENTS.upsert.removesuffix(" ON CONFLICT DO NOTHING")
_PROJECT = (SNAPSHOTS.upsert, _EVENT_INSERT, RUNS.upsert, STEPS.upsert)
"""Fold what this process committed, from the rows it kept (a projection parsing JSON costs
several times more, and runs beside the commits)."""
_PROJECT_KEEPING_FIRST_EVENTS = (SNAPSHOTS.upsert, EVENTS.upsert, RUNS.upsert, STEPS.upsert)
"""The same, for when an event seq is already stored: checking every event for that costs
the plain INSERT 40% more, and seq is unique per run by construction."""
_CLEAR_JOURNAL = "DELETE FROM run_journal WHERE id <= $1"
_FIND_IDEMPOTENT = (
    "SELECT min(run_id) FROM (SELECT run_id FROM runs WHERE workflow_id = $1 AND idempotency_key = $2"
    f" UNION ALL SELECT row->>{RUNS.position('run_id')} FROM run_journal WHERE kind = 'run'"
    f" AND row->>{RUNS.position('workflow_id')} = $1 AND row->>{RUNS.position('idempotency_key')} = $2)"
)
_RUN_WITH_WORKFLOW = (
    f"SELECT {', '.join(f'r.{n}' for n in RUNS.names)}, w.doc"
    " FROM runs r JOIN workflow_snapshots w ON w.digest = r.workflow_digest"
)
_RUN_SUMMARY = f"SELECT {RUNS.column_list}, NULL FROM runs"
"""A run without its workflow snapshot, for lists."""
_STEPS_OF_RUN = f"SELECT {STEPS.column_list} FROM step_runs WHERE run_id = ?"
_EVENTS = (
    "SELECT seq, type, step_id, ts, data FROM events WHERE run_id = $1 AND seq > $2"
    f" UNION ALL SELECT * FROM (SELECT {_JOURNALED_EVENT} FROM run_journal WHERE kind = 'event' AND run_id = $1)"
    " WHERE seq > $2 ORDER BY seq"
)
_IMPORT_FINISHED = tuple(
    f"{table.upsert.split(' ON CONFLICT')[0]} ON CONFLICT DO NOTHING" for table in (SNAPSHOTS, RUNS, STEPS, EVENTS)
)
"""Finished runs imported from elsewhere: rows already stored stay as they are."""
_STORED_IDS = "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest($1::VARCHAR[]))"
_FINISHED_RUNS = "SELECT run_id FROM runs WHERE status NOT IN (SELECT unnest($1::VARCHAR[]))"
_DELETE_RUN_ROWS = tuple(
    f"DELETE FROM {table} WHERE run_id IN (SELECT unnest($1::VARCHAR[]))"
    for table in ("run_journal", EVENTS.name, STEPS.name, RUNS.name)
)
"""Every row a run has, in every table that holds one (snapshots are shared by digest and stay)."""
PROJECTION_INTERVAL_S = 1.0
"""How long journaled state may wait to reach the tables when nothing reads them."""


def _journal_row(row: tuple[Any, ...]) -> str:
    return json.dumps(row, separators=(",", ":"), default=datetime.isoformat)


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    *columns, doc = row
    return RunRecord(**RUNS.values(tuple(columns)), workflow=_loads(doc) or {})


def _step_from_row(row: tuple[Any, ...]) -> StepRecord:
    return StepRecord(**STEPS.values(row))


def _finished_columns(
    runs: list[RunRecord], steps: list[StepRecord], events: list[Event], skip: set[str]
) -> list[list[list[Any]]]:
    """Column lists for :data:`_IMPORT_FINISHED` (encoding thousands of runs is CPU work, so
    it runs on a thread, not on the event loop); rows of runs in ``skip`` are left out."""
    snapshots: dict[str, tuple[str, str | None]] = {}
    for run in runs:
        if run.workflow_digest not in snapshots:
            snapshots[run.workflow_digest] = (run.workflow_digest, _dumps(run.workflow))
    tables = [
        list(snapshots.values()),
        [RUNS.row(r) for r in runs],
        [STEPS.row(s) for s in steps if s.run_id not in skip],
        [EVENTS.row(e) for e in events if e.run_id not in skip],
    ]
    return [[list(column) for column in zip(*rows, strict=True)] if rows else [] for rows in tables]


@dataclass(slots=True)
class _Rows:
    """Table rows of committed batches not projected yet: one per key, with the changing
    columns of its newest state and the rest (identity, inputs) of its first."""

    snapshots: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    events: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    runs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    steps: dict[tuple[str, str, int], tuple[Any, ...]] = field(default_factory=dict)
    last_id: int = 0
    """The newest journal row these come from: a projection of them deletes the journal up to it."""

    def absorb(self, newer: _Rows) -> None:
        for digest_, row in newer.snapshots.items():
            self.snapshots.setdefault(digest_, row)
        for key, row in newer.events.items():
            self.events.setdefault(key, row)  # seq is unique per run; should a bug repeat one, the first wins
        for run_id, row in newer.runs.items():
            first = self.runs.get(run_id)
            self.runs[run_id] = row if first is None else RUNS.merge(first, row)
        for key, row in newer.steps.items():
            first = self.steps.get(key)
            self.steps[key] = row if first is None else STEPS.merge(first, row)
        self.last_id = max(self.last_id, newer.last_id)

    def tables(self) -> list[list[tuple[Any, ...]]]:
        """Rows for each statement of :data:`_PROJECT`, in order."""
        return [list(rows.values()) for rows in (self.snapshots, self.events, self.runs, self.steps)]


@dataclass(slots=True)
class _Prepared:
    columns: list[list[Any]]
    """The journal rows, column by column (``unnest`` binds a list per column)."""
    rows: _Rows


class DuckDBRunStore:
    """Runs, step attempts and events in DuckDB, committed as a journal and projected.

    Every statement costs about a millisecond whatever its size (an UPDATE twice that), and
    every call into DuckDB gives up and takes back the GIL, which the busy event loop holds.
    A group commit that inserted runs, steps and events and updated known rows took seven
    calls; it now takes one: a single INSERT into ``run_journal``, in its own implicit
    transaction. The journal is folded into the tables on a thread of its own, beside the
    commits: every :data:`PROJECTION_INTERVAL_S`, before any query of ``runs`` or
    ``step_runs`` (so reads see every committed state), and by :meth:`recover` after a
    crash. Event reads take the journal's events along instead of waiting for a projection.
    This is how Temporal separates a durable history from its visibility records, except
    that here reads wait for the projection instead of being eventually consistent.
    """

    def __init__(self, db: Database, projection_interval_s: float = PROJECTION_INTERVAL_S) -> None:
        self._db = db
        self._interval = projection_interval_s
        self._snapshots: set[str] = set()
        self._ids = itertools.count(1)
        self._recovered = False
        self._pending = _Rows()
        self._journaled = 0
        self._projected = 0
        self._projecting = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._background: asyncio.Task[None] | None = None
        self.projection_error: str | None = None

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
                await self._db.maintain(self._execute_all, _RECOVER)
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
            batch.prepared = self._prepare(batch)
        prepared: _Prepared = batch.prepared
        await self._db.write_one(_JOURNAL_INSERT, prepared.columns, submission=submission)
        # Only now do these rows exist: a batch that failed for good must not make later
        # batches skip its snapshots, nor be projected.
        self._snapshots |= prepared.rows.snapshots.keys()
        self._pending.absorb(prepared.rows)
        self._journaled += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._project_in_background)

    def _prepare(self, batch: Batch) -> _Prepared:
        """Journal rows for a batch, built on the caller's thread from records the engine
        goes on mutating (the writer thread only sees strings and tuples); a failed commit
        retries these rows. Journal ids grow in commit order for each run: a writer prepares
        a batch after its previous one committed, and a run's first batch (a submission)
        commits before the run makes any other."""
        journal: list[tuple[int, str, str | None, str]] = []
        rows = _Rows()
        for run in batch.runs.values():
            if run.workflow_digest not in self._snapshots and run.workflow_digest not in rows.snapshots:
                snapshot = rows.snapshots[run.workflow_digest] = (run.workflow_digest, _dumps(run.workflow))
                journal.append((next(self._ids), "snapshot", None, _journal_row(snapshot)))
            row = rows.runs[run.run_id] = RUNS.row(run)
            journal.append((next(self._ids), "run", run.run_id, _journal_row(row)))
        for step in batch.steps.values():
            row = rows.steps[(step.run_id, step.key, step.attempt)] = STEPS.row(step)
            journal.append((next(self._ids), "step", step.run_id, _journal_row(row)))
        for event in batch.events:
            rows.events.setdefault((event.run_id, event.seq), EVENTS.row(event))
            journal.append((next(self._ids), "event", event.run_id, event.to_json()))
        rows.last_id = journal[-1][0] if journal else 0
        return _Prepared(columns=[list(column) for column in zip(*journal, strict=True)], rows=rows)

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
            pending, self._pending = self._pending, _Rows()
            try:
                await self._db.maintain(self._project, pending)
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
            self._projected = target
            self.projection_error = None

    @staticmethod
    def _project(cursor: duckdb.DuckDBPyConnection, pending: _Rows) -> None:
        try:
            DuckDBRunStore._apply_projection(cursor, pending, _PROJECT)
        except duckdb.ConstraintException as exc:
            log.error("an event seq was stored twice (a bug); keeping the first: %s", exc)
            cursor.rollback()
            cursor.begin()
            DuckDBRunStore._apply_projection(cursor, pending, _PROJECT_KEEPING_FIRST_EVENTS)

    @staticmethod
    def _apply_projection(cursor: duckdb.DuckDBPyConnection, pending: _Rows, statements: tuple[str, ...]) -> None:
        for sql, rows in zip(statements, pending.tables(), strict=True):
            if rows:
                cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
        cursor.execute(_CLEAR_JOURNAL, [pending.last_id])

    @staticmethod
    def _execute_all(cursor: duckdb.DuckDBPyConnection, statements: tuple[str, ...]) -> None:
        for sql in statements:
            cursor.execute(sql)

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
        row = cursor.execute(f"{_RUN_WITH_WORKFLOW} WHERE r.run_id = ?", [run_id]).fetchone()
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
        return await self._db.read(self._list_runs, workflow_id, status, limit, cursor)

    @staticmethod
    def _list_runs(
        cur: duckdb.DuckDBPyConnection, workflow_id: str | None, status: str | None, limit: int, cursor: str | None
    ) -> RunPage:
        clauses, params = [], []
        for clause, value in (("workflow_id = ?", workflow_id), ("status = ?", status), ("run_id < ?", cursor)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = cur.execute(f"{_RUN_SUMMARY} {where} ORDER BY run_id DESC LIMIT ?", [*params, limit + 1]).fetchall()
        runs = [_run_from_row(r) for r in rows[:limit]]
        return RunPage(runs=runs, next_cursor=runs[-1].run_id if len(rows) > limit else None)

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
            Event(seq=seq, type=type_, run_id=run_id, step_id=step_id, ts=_aware(ts), data=_loads(data) or {})
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


class DuckDBDocumentStore:
    """Agents or workflows (``table``): JSON documents keyed by id."""

    def __init__(self, db: Database, table: str, with_source: bool = False) -> None:
        if table not in ("agents", "workflows"):
            raise ValueError(f"no document table {table!r}")
        self._db = db
        self._table = table
        self._columns = "id, doc, created_at, updated_at" + (", source" if with_source else "")

    def _from_row(self, row: tuple[Any, ...]) -> StoredDocument:
        return StoredDocument(
            id=row[0], doc=json.loads(row[1]), created_at=_aware(row[2]), updated_at=_aware(row[3]),
            source=row[4] if len(row) > 4 else None,
        )  # fmt: skip

    async def get(self, doc_id: str) -> StoredDocument | None:
        row = await self._db.read(
            lambda c: c.execute(f"SELECT {self._columns} FROM {self._table} WHERE id = ?", [doc_id]).fetchone()
        )
        return self._from_row(row) if row else None

    async def list(self) -> list[StoredDocument]:
        rows = await self._db.read(
            lambda c: c.execute(f"SELECT {self._columns} FROM {self._table} ORDER BY id").fetchall()
        )
        return [self._from_row(r) for r in rows]

    async def create(self, doc_id: str, doc: dict[str, Any], source: str | None = None) -> StoredDocument:
        return await self._db.write(self._upsert, doc_id, doc, source, False)

    async def replace(self, doc_id: str, doc: dict[str, Any], source: str | None = None) -> StoredDocument:
        return await self._db.write(self._upsert, doc_id, doc, source, True)

    def _upsert(
        self, cursor: duckdb.DuckDBPyConnection, doc_id: str, doc: dict[str, Any], source: str | None, replace: bool
    ) -> StoredDocument:
        now = utcnow()
        existing = cursor.execute(f"SELECT created_at FROM {self._table} WHERE id = ?", [doc_id]).fetchone()
        if existing and not replace:
            raise Conflict(f"{self._table[:-1]} '{doc_id}' already exists", details={"id": doc_id})
        created = _aware(existing[0]) if existing else now
        values: list[Any] = [doc_id, json.dumps(doc), _naive(created), _naive(now)]
        if "source" in self._columns:
            values.append(source)
        marks = ", ".join("?" * len(values))
        cursor.execute(f"INSERT OR REPLACE INTO {self._table} ({self._columns}) VALUES ({marks})", values)
        return StoredDocument(id=doc_id, doc=doc, created_at=created, updated_at=now, source=source)

    async def delete(self, doc_id: str) -> bool:
        def _delete(cursor: duckdb.DuckDBPyConnection) -> bool:
            return (
                cursor.execute(f"DELETE FROM {self._table} WHERE id = ? RETURNING id", [doc_id]).fetchone() is not None
            )

        return await self._db.write(_delete)

    # -- many documents at once (an import) -------------------------------------------

    async def replace_many(self, docs: dict[str, dict[str, Any]]) -> None:
        """Create or replace every document in one statement and one transaction (a
        thousand single replaces cost a thousand commits); ``created_at`` stays as it was."""
        if not docs:
            return
        ids, texts = list(docs), [json.dumps(doc) for doc in docs.values()]
        sql = (
            f"INSERT INTO {self._table} (id, doc, created_at, updated_at) SELECT unnest($1), unnest($2), $3, $3"
            " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at"
        )
        await self._db.write(lambda cursor: cursor.execute(sql, [ids, texts, _naive(utcnow())]))


class DuckDBStorage:
    """The embedded storage: one DuckDB file, opened read-write by this process alone."""

    kind = "duckdb"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = Database(self.path)
        self.runs = DuckDBRunStore(self._db)
        self.agents = DuckDBDocumentStore(self._db, "agents")
        self.workflows = DuckDBDocumentStore(self._db, "workflows", with_source=True)
        self.llm_cache = DuckDBLLMCache(self._db)
        self._sandbox: HistorySandbox | None = None
        self._sandbox_made = threading.Lock()

    async def open(self) -> None:
        try:
            await self._db.start()
            await self.runs.recover()
        except BaseException:
            await self._db.close()  # release the threads; the file was never opened
            raise

    async def close(self) -> None:
        await self.runs.close()
        await self._db.close()  # waits for running queries, whose streams read the database
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    async def query(
        self, sql: str, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_BYTES
    ) -> QueryResult:
        """The journal is projected first, so the views see every committed run; the statement
        runs in the sandbox, on the query threads."""
        await self.runs.project()
        return await self._db.query(self._run_query, sql, max_rows, max_bytes, timeout_s)

    def _run_query(self, sql: str, max_rows: int, max_bytes: int, timeout_s: float) -> QueryResult:
        """On a query thread: the sandbox is made on the first query (a CLI command or a kernel
        that never queries does not pay for it)."""
        with self._sandbox_made:
            if self._sandbox is None:
                self._sandbox = HistorySandbox(self._db.cursor)
        return self._sandbox.run(sql, max_rows, max_bytes, timeout_s)

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "unprojected_commits": self.runs.unprojected,
            "projection_error": self.runs.projection_error,
        }


def _last_seq(cursor: duckdb.DuckDBPyConnection, run_id: str) -> int:
    (seq,) = cursor.execute("SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run_id]).fetchone()
    return int(seq)
