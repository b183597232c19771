"""The engine's tables, each defined once: columns, keys, and what a later state replaces.

Every statement, every journal row and every record conversion is derived from these
definitions, so no column order is written down twice. Batches are written column-wise
(``INSERT ... SELECT unnest($1), unnest($2), ...``): DuckDB binds one list per column in a
few microseconds a row, where a multi-row ``VALUES`` costs tens of microseconds a row in the
parser. (The tables themselves are created by ``migrations/NNNN_name.sql``.)

A journal row is a record's columns as one JSON array, its ``JSON`` columns as JSON values:
one encoding per record on the event loop, where a string of JSON text per column inside a
row encoded again cost three to seven. DuckDB reads the columns back out of that text (in C,
on a storage thread) for the projection and the recovery alike, with :meth:`Table.selected`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from operator import attrgetter
from typing import Any

from .records import json_text


def dumps(value: Any) -> str | None:
    """A value as the text of a ``JSON`` column (compact; ``None`` stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def loads(value: str | None) -> Any:
    """The value a ``JSON`` column holds."""
    return None if value is None else json.loads(value)


def naive(ts: datetime | None) -> datetime | None:
    """A timestamp as a ``TIMESTAMP`` column holds it: UTC, without a zone."""
    return None if ts is None else ts.astimezone(UTC).replace(tzinfo=None)


def aware(ts: datetime | None) -> datetime | None:
    """A ``TIMESTAMP`` column's value as the records carry it: in UTC, with the zone."""
    return None if ts is None else ts.replace(tzinfo=UTC)


_TO_SQL: dict[str, Callable[[Any], Any]] = {"JSON": dumps, "TIMESTAMP": naive}
_FROM_SQL: dict[str, Callable[[Any], Any]] = {"JSON": loads, "TIMESTAMP": aware}


@dataclass(frozen=True)
class Table:
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

    def position(self, column: str) -> int:
        """Where ``column`` sits in a journaled row (a JSON array in this column order)."""
        return self.names.index(column)

    @cached_property
    def _get(self) -> Callable[[object], tuple[Any, ...]]:
        return attrgetter(*self.names)

    @cached_property
    def _converted(self) -> tuple[tuple[int, Callable[[Any], Any], Callable[[Any], Any]], ...]:
        """The columns whose values differ between a record and a row: position, to SQL, from SQL."""
        return tuple((i, _TO_SQL[t], _FROM_SQL[t]) for i, (_, t) in enumerate(self.columns) if t in _TO_SQL)

    def row(self, record: object) -> list[Any]:
        """A record as the values bound for its columns (imports bind these directly)."""
        row = list(self._get(record))
        for i, to_sql, _ in self._converted:
            row[i] = to_sql(row[i])
        return row

    def values(self, row: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """A stored row as a record's keyword arguments."""
        values = list(row)
        for i, _, from_sql in self._converted:
            values[i] = from_sql(values[i])
        return dict(zip(self.names, values, strict=True))

    @cached_property
    def _timestamps(self) -> tuple[int, ...]:
        return tuple(i for i, (_, t) in enumerate(self.columns) if t == "TIMESTAMP")

    def journal_row(self, record: object) -> str:
        """A record's journal row (see the module docstring). Its timestamps are in UTC, as
        the engine makes them; one that is not is converted (a ``TIMESTAMP`` cast drops an
        offset rather than applying it)."""
        values = self._get(record)
        for i in self._timestamps:
            ts = values[i]
            if ts is not None and ts.tzinfo is not UTC:
                values = (*values[:i], naive(ts), *values[i + 1 :])
        return json_text(values)

    def selected(self, first: str, last: str) -> str:
        """The select list reading this table's columns out of journal rows: the changing
        columns from the row named ``last`` (the key's newest state), the others from ``first``.
        JSON ``null`` is no column's value (a ``None`` is NULL), so it reads as NULL."""
        return ", ".join(
            f"nullif(({last if n in self.changing else first}->{i})::VARCHAR, 'null')"
            if t == "JSON"
            else f"({last if n in self.changing else first}->>{i})::{t}"
            for i, (n, t) in enumerate(self.columns)
        )

    def _on_conflict(self) -> str:
        if not self.changing:
            return "ON CONFLICT DO NOTHING"
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.changing)
        return f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}"

    @cached_property
    def insert(self) -> str:
        """Insert rows bound column by column (one list per column), with no conflict clause."""
        unnest = ", ".join(f"unnest(${i})" for i in range(1, len(self.columns) + 1))
        return f"INSERT INTO {self.name} ({self.column_list}) SELECT {unnest}"

    @cached_property
    def upsert(self) -> str:
        """Insert rows bound column by column; a key the table has gets its changing columns updated."""
        return f"{self.insert} {self._on_conflict()}"

    @cached_property
    def insert_new(self) -> str:
        """Insert rows bound column by column; rows whose key the table has stay as they are."""
        return f"{self.insert} ON CONFLICT DO NOTHING"

    @cached_property
    def projection_of_new_keys(self) -> str:
        """Write keys the table does not have yet from journal rows bound as two lists, each
        key's first and newest row. It has no conflict clause: every row DuckDB (2.0) writes
        through ``ON CONFLICT`` leaves a few hundred bytes of its heap behind for good, even when
        nothing conflicts (``bench/duckdb_heap.py``); a plain INSERT leaves nothing."""
        return (
            f"INSERT INTO {self.name} ({self.column_list}) SELECT {self.selected('first', 'last')}"
            " FROM (SELECT unnest($1) AS first, unnest($2) AS last)"
        )

    @cached_property
    def projection(self) -> str:
        """The same for keys the table may have: those get their changing columns updated."""
        return f"{self.projection_of_new_keys} {self._on_conflict()}"

    def recovery(self, kind: str) -> str:
        """Fold each key's journaled rows (``kind``) into the table: the changing columns from its
        newest row (journal ids only grow), the others from its first."""
        group = ", ".join(f"row->>{self.position(k)}" for k in self.key)
        return (
            f"INSERT INTO {self.name} ({self.column_list}) SELECT {self.selected('first', 'last')} FROM (SELECT"
            f" arg_min(row, id) AS first, arg_max(row, id) AS last FROM run_journal WHERE kind = '{kind}'"
            f" GROUP BY {group}) {self._on_conflict()}"
        )


RUNS = Table(
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
STEPS = Table(
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
EVENTS = Table(
    "events",
    (("run_id", "VARCHAR"), ("seq", "BIGINT"), ("type", "VARCHAR"), ("step_id", "VARCHAR"), ("ts", "TIMESTAMP"),
     ("data", "JSON")),
    key=("run_id", "seq"),
)  # fmt: skip
SNAPSHOTS = Table("workflow_snapshots", (("digest", "VARCHAR"), ("doc", "JSON")), key=("digest",))
