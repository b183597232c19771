"""The run journal: how a committed batch becomes journal rows, and how the journal is folded
into the tables (``runs``, ``step_runs``, ``events``, ``workflow_snapshots``).

A group commit is a single INSERT into ``run_journal`` (one call into DuckDB, where inserting
into four tables and updating known rows took seven). The rows it journaled are also kept in
memory by key (:class:`PendingRows`), and a projection binds those instead of reading the
journal back; after a crash, when nothing of it is in memory, :func:`recover` folds the whole
journal. Both read the columns out of the rows with the same expressions
(:meth:`~.tables.Table.selected`), in DuckDB, off the event loop.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import duckdb

from .records import Batch, json_text
from .tables import EVENTS, RUNS, SNAPSHOTS, STEPS

log = logging.getLogger(__name__)

JOURNAL_INSERT = "INSERT INTO run_journal (id, kind, run_id, row) SELECT unnest($1), unnest($2), unnest($3), unnest($4)"
JOURNALED_EVENT = (
    "(row->>'seq')::BIGINT AS seq, row->>'type' AS type, row->>'step_id' AS step_id,"
    " replace(row->>'ts', 'Z', '')::TIMESTAMP AS ts, (row->'data')::VARCHAR AS data"
)
"""The columns of a journaled event: journaled events are the API's JSON objects, so they are read by key."""
_EVENT_PROJECTION = f"INSERT INTO events ({EVENTS.column_list}) SELECT row->>'run_id', {JOURNALED_EVENT} FROM (SELECT unnest($1) AS row)"
_RECOVER = (
    SNAPSHOTS.recovery("snapshot"),
    # seq is unique per run by construction; should a bug ever repeat one, the first stored
    # event is kept rather than the projection failing on it forever.
    f"INSERT INTO events ({EVENTS.column_list}) SELECT run_id, {JOURNALED_EVENT}"
    " FROM run_journal WHERE kind = 'event' QUALIFY row_number() OVER (PARTITION BY run_id, seq ORDER BY id) = 1"
    " ON CONFLICT DO NOTHING",
    RUNS.recovery("run"),
    STEPS.recovery("step"),
    "DELETE FROM run_journal",
)
"""Fold the whole journal: after a crash, when nothing of it is in memory."""
_PROJECT = (
    SNAPSHOTS.projection,
    _EVENT_PROJECTION,
    RUNS.projection_of_new_keys,
    RUNS.projection,
    STEPS.projection_of_new_keys,
    STEPS.projection,
)
"""Fold what this process committed, from the journal rows it kept (bound, rather than read
back from ``run_journal``: no scan of the journal beside the commits): runs and step attempts
not projected before are inserted, the others upserted."""
_PROJECT_AS_UPDATES = (
    SNAPSHOTS.projection,
    f"{_EVENT_PROJECTION} ON CONFLICT DO NOTHING",
    RUNS.projection,
    RUNS.projection,
    STEPS.projection,
    STEPS.projection,
)
"""The same, for when a row taken for new is stored already: a run resumed after a restart,
one projected so long ago that :class:`RecentKeys` forgot it, or an event seq stored twice (a
bug: seq is unique per run by construction, and checking every event for it costs the plain
INSERT 40% more)."""
_CLEAR_JOURNAL = "DELETE FROM run_journal WHERE id <= $1"

K = TypeVar("K")

FirstAndLast = list[str]
"""A key's journal rows not projected yet: its first and its newest (the same row when it has one)."""


@dataclass(slots=True)
class PendingRows:
    """Journal rows of committed batches not projected yet, by key: for runs and step attempts
    the first and the newest (the projection takes the changing columns from the newest, the
    rest, identity and inputs, from the first), for events and snapshots their one row."""

    snapshots: dict[str, str] = field(default_factory=dict)
    events: dict[tuple[str, int], str] = field(default_factory=dict)
    runs: dict[str, FirstAndLast] = field(default_factory=dict)
    steps: dict[tuple[str, str, int], FirstAndLast] = field(default_factory=dict)
    last_id: int = 0
    """The newest journal row these come from: a projection of them deletes the journal up to it."""
    stored_runs: Container[str] = frozenset()
    stored_steps: Container[tuple[str, str, int]] = frozenset()
    """Keys the tables may hold already (projected before): their rows are upserted, the others inserted."""

    def absorb(self, newer: PendingRows) -> None:
        for digest_, row in newer.snapshots.items():
            self.snapshots.setdefault(digest_, row)
        for key, row in newer.events.items():
            self.events.setdefault(key, row)  # seq is unique per run; should a bug repeat one, the first wins
        _absorb_states(self.runs, newer.runs)
        _absorb_states(self.steps, newer.steps)
        self.last_id = max(self.last_id, newer.last_id)

    def bindings(self) -> list[list[list[str]]]:
        """The lists each statement of :data:`_PROJECT` binds, in order (empty: nothing to write)."""
        return [
            [list(self.snapshots.values())] * 2 if self.snapshots else [],
            [list(self.events.values())] if self.events else [],
            *_new_and_stored(self.runs, self.stored_runs),
            *_new_and_stored(self.steps, self.stored_steps),
        ]


def _new_and_stored(rows: dict[Any, FirstAndLast], stored: Container[Any]) -> list[list[list[str]]]:
    """The first and newest rows of the keys not in ``stored``, then of those in it, bound column by column."""
    parts: tuple[list[FirstAndLast], list[FirstAndLast]] = ([], [])
    for key, first_and_last in rows.items():
        parts[key in stored].append(first_and_last)
    return [[list(column) for column in zip(*part, strict=True)] for part in parts]


def _absorb_states(pending: dict[Any, FirstAndLast], newer: dict[Any, FirstAndLast]) -> None:
    for key, (_, last) in newer.items():
        known = pending.get(key)
        if known is None:
            pending[key] = newer[key]
        else:
            known[1] = last


@dataclass(slots=True)
class PreparedBatch:
    """A batch as its commit binds it, kept on the batch so a retried commit reuses it."""

    columns: list[list[Any]]
    """The journal rows, column by column (``unnest`` binds a list per column)."""
    rows: PendingRows


MAX_KNOWN_SNAPSHOTS = 4096
"""Workflow snapshots this process remembers journaling. Ad-hoc runs of a cell being edited
make a new snapshot each; a digest forgotten is journaled again with its next run, which the
projection ignores (snapshots are stored by digest, the first kept)."""
MAX_PROJECTED_KEYS = 16384
"""Runs, and step attempts, this process remembers projecting: their next rows are upserts.
One forgotten while it still changes (a run waiting for approval all day) costs its next
projection a retry as updates (:data:`_PROJECT_AS_UPDATES`)."""


class RecentKeys(Generic[K]):
    """The ``maxsize`` keys used last: what the store remembers having written, bounded so
    that a server up for weeks does not grow with its history."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._keys: OrderedDict[K, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        if key not in self._keys:
            return False
        self._keys.move_to_end(key)  # type: ignore[arg-type]
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self._maxsize:
            self._keys.popitem(last=False)

    def among(self, keys: Iterable[K]) -> frozenset[K]:
        """Which of ``keys`` are remembered (a copy, for a thread to read while this changes)."""
        return frozenset(key for key in keys if key in self)


def prepare(batch: Batch, stored_snapshots: Container[str], ids: Iterator[int]) -> PreparedBatch:
    """Journal rows for a batch, numbered from ``ids``, with a snapshot row for each workflow
    digest not in ``stored_snapshots``. Built on the caller's thread from records the engine
    goes on mutating (the writer thread only sees strings)."""
    journal: list[tuple[int, str, str | None, str]] = []
    rows = PendingRows()
    for run in batch.runs.values():
        if run.workflow_digest not in stored_snapshots and run.workflow_digest not in rows.snapshots:
            snapshot = rows.snapshots[run.workflow_digest] = json_text((run.workflow_digest, run.workflow))
            journal.append((next(ids), "snapshot", None, snapshot))
        row = RUNS.journal_row(run)
        rows.runs[run.run_id] = [row, row]
        journal.append((next(ids), "run", run.run_id, row))
    for step in batch.steps.values():
        row = STEPS.journal_row(step)
        rows.steps[(step.run_id, step.key, step.attempt)] = [row, row]
        journal.append((next(ids), "step", step.run_id, row))
    for event in batch.events:
        row = event.to_json()
        rows.events.setdefault((event.run_id, event.seq), row)
        journal.append((next(ids), "event", event.run_id, row))
    rows.last_id = journal[-1][0] if journal else 0
    return PreparedBatch(columns=[list(column) for column in zip(*journal, strict=True)], rows=rows)


def project(cursor: duckdb.DuckDBPyConnection, pending: PendingRows) -> None:
    """Write ``pending`` into the tables and delete the journal rows it came from (in the
    caller's transaction)."""
    try:
        _apply(cursor, pending, _PROJECT)
    except duckdb.ConstraintException as exc:
        log.info("a row the projection took for new was stored already; projecting them all as updates: %s", exc)
        cursor.rollback()
        cursor.begin()
        _apply(cursor, pending, _PROJECT_AS_UPDATES)


def _apply(cursor: duckdb.DuckDBPyConnection, pending: PendingRows, statements: tuple[str, ...]) -> None:
    for sql, bound in zip(statements, pending.bindings(), strict=True):
        if bound:
            cursor.execute(sql, bound)
    cursor.execute(_CLEAR_JOURNAL, [pending.last_id])


def recover(cursor: duckdb.DuckDBPyConnection) -> None:
    """Fold everything an earlier process left in the journal into the tables."""
    for sql in _RECOVER:
        cursor.execute(sql)
