"""The run journal: how a committed batch becomes journal rows, and how the journal is folded
into the tables (``runs``, ``step_runs``, ``events``, ``workflow_snapshots``).

A group commit is a single INSERT into ``run_journal`` (one call into DuckDB, where inserting
into four tables and updating known rows took seven). The rows it journaled are also kept in
memory, one per key (:class:`PendingRows`), and a projection writes those into the tables
without parsing any JSON; after a crash, when nothing of it is in memory, :func:`recover`
folds the whole journal by parsing it.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from .records import Batch
from .tables import EVENTS, RUNS, SNAPSHOTS, STEPS, dumps

log = logging.getLogger(__name__)

JOURNAL_INSERT = "INSERT INTO run_journal (id, kind, run_id, row) SELECT unnest($1), unnest($2), unnest($3), unnest($4)"
JOURNALED_EVENT = (
    "(row->>'seq')::BIGINT AS seq, row->>'type' AS type, row->>'step_id' AS step_id,"
    " replace(row->>'ts', 'Z', '')::TIMESTAMP AS ts, (row->'data')::VARCHAR AS data"
)
"""The columns of a journaled event: journaled events are the API's JSON objects, so they are read by key."""
_RECOVER = (
    f"INSERT INTO workflow_snapshots SELECT row->>{SNAPSHOTS.position('digest')}, "
    f"any_value(row->>{SNAPSHOTS.position('doc')}) FROM run_journal WHERE kind = 'snapshot'"
    f" GROUP BY row->>{SNAPSHOTS.position('digest')} ON CONFLICT DO NOTHING",
    # seq is unique per run by construction; should a bug ever repeat one, the first stored
    # event is kept rather than the projection failing on it forever.
    f"INSERT INTO events ({EVENTS.column_list}) SELECT run_id, {JOURNALED_EVENT}"
    " FROM run_journal WHERE kind = 'event' QUALIFY row_number() OVER (PARTITION BY run_id, seq ORDER BY id) = 1"
    " ON CONFLICT DO NOTHING",
    RUNS.recovery("run"),
    STEPS.recovery("step"),
    "DELETE FROM run_journal",
)
"""Fold the whole journal, parsing its JSON: after a crash, when nothing of it is in memory."""
_PROJECT = (SNAPSHOTS.upsert, EVENTS.insert, RUNS.upsert, STEPS.upsert)
"""Fold what this process committed, from the rows it kept (a projection parsing JSON costs
several times more, and runs beside the commits)."""
_PROJECT_KEEPING_FIRST_EVENTS = (SNAPSHOTS.upsert, EVENTS.insert_new, RUNS.upsert, STEPS.upsert)
"""The same, for when an event seq is already stored: checking every event for that costs
the plain INSERT 40% more, and seq is unique per run by construction."""
_CLEAR_JOURNAL = "DELETE FROM run_journal WHERE id <= $1"


def _journal_row(row: tuple[Any, ...]) -> str:
    return json.dumps(row, separators=(",", ":"), default=datetime.isoformat)


@dataclass(slots=True)
class PendingRows:
    """Table rows of committed batches not projected yet: one per key, with the changing
    columns of its newest state and the rest (identity, inputs) of its first."""

    snapshots: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    events: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    runs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    steps: dict[tuple[str, str, int], tuple[Any, ...]] = field(default_factory=dict)
    last_id: int = 0
    """The newest journal row these come from: a projection of them deletes the journal up to it."""

    def absorb(self, newer: PendingRows) -> None:
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
class PreparedBatch:
    """A batch as its commit binds it, kept on the batch so a retried commit reuses it."""

    columns: list[list[Any]]
    """The journal rows, column by column (``unnest`` binds a list per column)."""
    rows: PendingRows


MAX_KNOWN_SNAPSHOTS = 4096


class KnownSnapshots:
    """The workflow snapshots this process journaled, so that each is journaled once: the
    :data:`MAX_KNOWN_SNAPSHOTS` used last. Ad-hoc runs of a cell being edited make a new snapshot
    each; a digest forgotten is journaled again with its next run, which the projection ignores
    (snapshots are stored by digest, the first kept)."""

    def __init__(self, maxsize: int | None = None) -> None:
        self._maxsize = MAX_KNOWN_SNAPSHOTS if maxsize is None else maxsize
        self._digests: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, digest: object) -> bool:
        if digest not in self._digests:
            return False
        self._digests.move_to_end(digest)
        return True

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self._digests[digest] = None
            self._digests.move_to_end(digest)
        while len(self._digests) > self._maxsize:
            self._digests.popitem(last=False)


def prepare(batch: Batch, stored_snapshots: Container[str], ids: Iterator[int]) -> PreparedBatch:
    """Journal rows for a batch, numbered from ``ids``, with a snapshot row for each workflow
    digest not in ``stored_snapshots``. Built on the caller's thread from records the engine
    goes on mutating (the writer thread only sees strings and tuples)."""
    journal: list[tuple[int, str, str | None, str]] = []
    rows = PendingRows()
    for run in batch.runs.values():
        if run.workflow_digest not in stored_snapshots and run.workflow_digest not in rows.snapshots:
            snapshot = rows.snapshots[run.workflow_digest] = (run.workflow_digest, dumps(run.workflow))
            journal.append((next(ids), "snapshot", None, _journal_row(snapshot)))
        row = rows.runs[run.run_id] = RUNS.row(run)
        journal.append((next(ids), "run", run.run_id, _journal_row(row)))
    for step in batch.steps.values():
        row = rows.steps[(step.run_id, step.key, step.attempt)] = STEPS.row(step)
        journal.append((next(ids), "step", step.run_id, _journal_row(row)))
    for event in batch.events:
        rows.events.setdefault((event.run_id, event.seq), EVENTS.row(event))
        journal.append((next(ids), "event", event.run_id, event.to_json()))
    rows.last_id = journal[-1][0] if journal else 0
    return PreparedBatch(columns=[list(column) for column in zip(*journal, strict=True)], rows=rows)


def project(cursor: duckdb.DuckDBPyConnection, pending: PendingRows) -> None:
    """Write ``pending`` into the tables and delete the journal rows it came from (in the
    caller's transaction)."""
    try:
        _apply(cursor, pending, _PROJECT)
    except duckdb.ConstraintException as exc:
        log.error("an event seq was stored twice (a bug); keeping the first: %s", exc)
        cursor.rollback()
        cursor.begin()
        _apply(cursor, pending, _PROJECT_KEEPING_FIRST_EVENTS)


def _apply(cursor: duckdb.DuckDBPyConnection, pending: PendingRows, statements: tuple[str, ...]) -> None:
    for sql, rows in zip(statements, pending.tables(), strict=True):
        if rows:
            cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
    cursor.execute(_CLEAR_JOURNAL, [pending.last_id])


def recover(cursor: duckdb.DuckDBPyConnection) -> None:
    """Fold everything an earlier process left in the journal into the tables."""
    for sql in _RECOVER:
        cursor.execute(sql)
