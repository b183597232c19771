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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from ..core.errors import Conflict
from .database import Database
from .protocols import ActiveRun, RunPage
from .records import Batch, Event, RunRecord, StepRecord, StoredDocument, utcnow

log = logging.getLogger(__name__)
log = logging.getLogger(__name__)
ACTIVE_STATUSES = ("queued", "running")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _naive(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.astimezone(UTC).replace(tzinfo=None)


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


_RUN_COLUMNS = (
    "run_id, workflow_id, workflow_name, workflow_digest, inputs, status, idempotency_key,"
    " created_at, started_at, finished_at, outputs, error, usage"
)
_RUN_TYPES = ("VARCHAR",) * 7 + ("TIMESTAMP",) * 3 + ("VARCHAR",) * 3
_STEP_COLUMNS = "run_id, key, step_id, item_index, attempt, status, started_at, finished_at, output, error, usage"
_STEP_TYPES = ("VARCHAR",) * 3 + ("INTEGER",) * 2 + ("VARCHAR",) + ("TIMESTAMP",) * 2 + ("VARCHAR",) * 3
_JOURNAL_INSERT = (
    "INSERT INTO run_journal (id, kind, run_id, row) SELECT unnest($1), unnest($2), unnest($3), unnest($4)"
)
_JOURNALED_EVENT = (
    "(row->>'seq')::BIGINT AS seq, row->>'type' AS type, row->>'step_id' AS step_id,"
    " replace(row->>'ts', 'Z', '')::TIMESTAMP AS ts, (row->'data')::VARCHAR AS data"
)


def _unnest(n: int) -> str:
    return ", ".join(f"unnest(${i})" for i in range(1, n + 1))


def _update_changing(key: str, changing: str) -> str:
    """A row the table already has gets only its ``changing`` columns updated."""
    return f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in changing.split(", "))


def _upsert(table: str, columns: str, key: str, changing: str) -> str:
    """Insert rows bound column by column."""
    return (
        f"INSERT INTO {table} ({columns}) SELECT {_unnest(len(columns.split(', ')))} {_update_changing(key, changing)}"
    )


def _recovery(table: str, columns: str, types: tuple[str, ...], kind: str, key: str, changing: str) -> str:
    """SQL that folds each ``key``'s journaled rows into ``table``: the ``changing`` columns from its
    newest row (journal ids only grow), the others (identity, inputs) from its first."""
    names = columns.split(", ")
    mutable = changing.split(", ")
    values = ", ".join(
        f"({'last' if name in mutable else 'first'}->>{i})::{t}"
        for i, (name, t) in enumerate(zip(names, types, strict=True))
    )
    group = ", ".join(f"row->>{names.index(name)}" for name in key.split(", "))
    return (
        f"INSERT INTO {table} ({columns}) SELECT {values} FROM (SELECT arg_min(row, id) AS first,"
        f" arg_max(row, id) AS last FROM run_journal WHERE kind = '{kind}' GROUP BY {group})"
        f" {_update_changing(key, changing)}"
    )


_CHANGING = "status, started_at, finished_at, {}, error, usage"
_RECOVER = (
    "INSERT INTO workflow_snapshots SELECT row->>0, any_value(row->>1) FROM run_journal WHERE kind = 'snapshot'"
    " GROUP BY row->>0 ON CONFLICT DO NOTHING",
    # seq is unique per run by construction; should a bug ever repeat one, the first stored
    # event is kept rather than the projection failing on it forever.
    f"INSERT INTO events (run_id, seq, type, step_id, ts, data) SELECT run_id, {_JOURNALED_EVENT}"
    " FROM run_journal WHERE kind = 'event' QUALIFY row_number() OVER (PARTITION BY run_id, seq ORDER BY id) = 1"
    " ON CONFLICT DO NOTHING",
    _recovery("runs", _RUN_COLUMNS, _RUN_TYPES, "run", "run_id", _CHANGING.format("outputs")),
    _recovery("step_runs", _STEP_COLUMNS, _STEP_TYPES, "step", "run_id, key, attempt", _CHANGING.format("output")),
    "DELETE FROM run_journal",
)
"""Fold the whole journal, parsing its JSON: after a crash, when nothing of it is in memory."""
_EVENT_INSERT = f"INSERT INTO events (run_id, seq, type, step_id, ts, data) SELECT {_unnest(6)}"
_PROJECT = (
    "INSERT INTO workflow_snapshots SELECT unnest($1), unnest($2) ON CONFLICT DO NOTHING",
    _EVENT_INSERT,
    _upsert("runs", _RUN_COLUMNS, "run_id", _CHANGING.format("outputs")),
    _upsert("step_runs", _STEP_COLUMNS, "run_id, key, attempt", _CHANGING.format("output")),
)
"""Fold what this process committed, from the rows it kept (a projection parsing JSON costs
several times more, and runs beside the commits)."""
_PROJECT_KEEPING_FIRST_EVENTS = (_PROJECT[0], f"{_EVENT_INSERT} ON CONFLICT DO NOTHING", *_PROJECT[2:])
"""The same, for when an event seq is already stored: checking every event for that costs
the plain INSERT 40% more, and seq is unique per run by construction."""
_CLEAR_JOURNAL = "DELETE FROM run_journal WHERE id <= $1"
_RUN_CHANGING = frozenset(_RUN_COLUMNS.split(", ").index(c) for c in _CHANGING.format("outputs").split(", "))
_STEP_CHANGING = frozenset(_STEP_COLUMNS.split(", ").index(c) for c in _CHANGING.format("output").split(", "))
_FIND_IDEMPOTENT = (
    "SELECT min(run_id) FROM (SELECT run_id FROM runs WHERE workflow_id = $1 AND idempotency_key = $2"
    " UNION ALL SELECT row->>0 FROM run_journal WHERE kind = 'run' AND row->>1 = $1 AND row->>6 = $2)"
)
_RUN_SUMMARY = (
    "run_id, workflow_id, workflow_name, inputs, status, idempotency_key,"
    " created_at, started_at, finished_at, outputs, error, usage"
)
_RUN_WITH_WORKFLOW = (
    "SELECT r.run_id, r.workflow_id, r.workflow_name, r.inputs, r.status, r.idempotency_key, r.created_at,"
    " r.started_at, r.finished_at, r.outputs, r.error, r.usage, r.workflow_digest, w.doc"
    " FROM runs r JOIN workflow_snapshots w ON w.digest = r.workflow_digest"
)
_EVENTS = (
    "SELECT seq, type, step_id, ts, data FROM events WHERE run_id = $1 AND seq > $2"
    f" UNION ALL SELECT * FROM (SELECT {_JOURNALED_EVENT} FROM run_journal WHERE kind = 'event' AND run_id = $1)"
    " WHERE seq > $2 ORDER BY seq"
)
_IMPORT_FINISHED = (
    "INSERT INTO workflow_snapshots SELECT unnest($1), unnest($2) ON CONFLICT DO NOTHING",
    f"INSERT INTO runs ({_RUN_COLUMNS}) SELECT {_unnest(13)} ON CONFLICT DO NOTHING",
    f"INSERT INTO step_runs ({_STEP_COLUMNS}) SELECT {_unnest(11)} ON CONFLICT DO NOTHING",
    f"{_EVENT_INSERT} ON CONFLICT DO NOTHING",
)
_STORED_IDS = "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest($1::VARCHAR[]))"
PROJECTION_INTERVAL_S = 1.0
"""How long journaled state may wait to reach the tables when nothing reads them."""


def _journal_row(row: tuple[Any, ...]) -> str:
    return json.dumps(row, separators=(",", ":"), default=datetime.isoformat)


def _run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.run_id, r.workflow_id, r.workflow_name, r.workflow_digest, _dumps(r.inputs), r.status,
        r.idempotency_key, _naive(r.created_at), _naive(r.started_at), _naive(r.finished_at),
        _dumps(r.outputs), _dumps(r.error), _dumps(r.usage),
    )  # fmt: skip


def _step_row(s: StepRecord) -> tuple[Any, ...]:
    return (
        s.run_id, s.key, s.step_id, s.item_index, s.attempt, s.status, _naive(s.started_at),
        _naive(s.finished_at), _dumps(s.output), _dumps(s.error), _dumps(s.usage),
    )  # fmt: skip


def _event_row(e: Event) -> tuple[Any, ...]:
    return (e.run_id, e.seq, e.type, e.step_id, _naive(e.ts), _dumps(e.data))


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    (run_id, workflow_id, workflow_name, inputs, status, key, created, started, finished, outputs, error, usage,
     *snapshot) = row  # fmt: skip
    digest, doc = snapshot if snapshot else ("", None)
    return RunRecord(
        run_id=run_id, workflow_id=workflow_id, workflow_name=workflow_name, workflow=_loads(doc) or {},
        inputs=_loads(inputs) or {}, status=status, idempotency_key=key, created_at=_aware(created),
        started_at=_aware(started), finished_at=_aware(finished), outputs=_loads(outputs),
        error=_loads(error), usage=_loads(usage), workflow_digest=digest,
    )  # fmt: skip


def _step_from_row(row: tuple[Any, ...]) -> StepRecord:
    run_id, key, step_id, item, attempt, status, started, finished, output, error, usage = row
    return StepRecord(
        run_id=run_id, key=key, step_id=step_id, item_index=item, attempt=attempt, status=status,
        started_at=_aware(started), finished_at=_aware(finished), output=_loads(output),
        error=_loads(error), usage=_loads(usage),
    )  # fmt: skip


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
        [_run_row(r) for r in runs],
        [_step_row(s) for s in steps if s.run_id not in skip],
        [_event_row(e) for e in events if e.run_id not in skip],
    ]
    return [[list(column) for column in zip(*rows, strict=True)] if rows else [] for rows in tables]


def _fold(first: tuple[Any, ...], latest: tuple[Any, ...], changing: frozenset[int]) -> tuple[Any, ...]:
    return tuple(new if i in changing else old for i, (old, new) in enumerate(zip(first, latest, strict=True)))


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
            self.runs[run_id] = row if first is None else _fold(first, row, _RUN_CHANGING)
        for key, row in newer.steps.items():
            first = self.steps.get(key)
            self.steps[key] = row if first is None else _fold(first, row, _STEP_CHANGING)
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
            row = rows.runs[run.run_id] = _run_row(run)
            journal.append((next(self._ids), "run", run.run_id, _journal_row(row)))
        for step in batch.steps.values():
            row = rows.steps[(step.run_id, step.key, step.attempt)] = _step_row(step)
            journal.append((next(self._ids), "step", step.run_id, _journal_row(row)))
        for event in batch.events:
            rows.events.setdefault((event.run_id, event.seq), _event_row(event))
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
                raise
            self._projected = target
            self.projection_error = None

    @staticmethod
    def _project(cursor: duckdb.DuckDBPyConnection, pending: _Rows) -> None:
        try:
            DuckDBRunStore._fold(cursor, pending, _PROJECT)
        except duckdb.ConstraintException as exc:
            log.error("an event seq was stored twice (a bug); keeping the first: %s", exc)
            cursor.rollback()
            cursor.begin()
            DuckDBRunStore._fold(cursor, pending, _PROJECT_KEEPING_FIRST_EVENTS)

    @staticmethod
    def _fold(cursor: duckdb.DuckDBPyConnection, pending: _Rows, statements: tuple[str, ...]) -> None:
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
            f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = ? ORDER BY started_at NULLS LAST, key, attempt",
            [run_id],
        ).fetchall()
        return _run_from_row(row), [_step_from_row(s) for s in steps]

    async def list_runs(
        self, workflow_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        await self.project()
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
        rows = cur.execute(
            f"SELECT {_RUN_SUMMARY} FROM runs {where} ORDER BY run_id DESC LIMIT ?", [*params, limit + 1]
        ).fetchall()
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
        rows = cursor.execute(f"{_RUN_WITH_WORKFLOW} WHERE r.status IN {ACTIVE_STATUSES} ORDER BY r.run_id").fetchall()
        active = []
        for row in rows:
            run = _run_from_row(row)
            steps = cursor.execute(
                f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = ? ORDER BY key, attempt", [run.run_id]
            ).fetchall()
            (last_seq,) = cursor.execute(
                "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run.run_id]
            ).fetchone()
            active.append(ActiveRun(run=run, steps=[_step_from_row(s) for s in steps], last_seq=last_seq))
        return active

    async def count_active(self, workflow_id: str) -> int:
        await self.project()
        return await self._db.read(self._count_active, workflow_id)

    @staticmethod
    def _count_active(cursor: duckdb.DuckDBPyConnection, workflow_id: str) -> int:
        (count,) = cursor.execute(
            f"SELECT count(*) FROM runs WHERE workflow_id = ? AND status IN {ACTIVE_STATUSES}", [workflow_id]
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

    async def existing_runs(self, run_ids: list[str]) -> set[str]:
        await self.project()
        rows = await self._db.read(lambda c: c.execute(_STORED_IDS, [run_ids]).fetchall())
        return {row[0] for row in rows}


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
