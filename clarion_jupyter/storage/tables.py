"""The engine's tables, each defined once: columns, keys, and what a later state replaces.

Every statement, every journal row and every record conversion is derived from these
definitions, so no column order is written down twice. Batches are written column-wise
(``INSERT ... SELECT unnest($1), unnest($2), ...``): DuckDB binds one list per column in a
few microseconds a row, where a multi-row ``VALUES`` costs tens of microseconds a row in the
parser. (The tables themselves are created by ``migrations/NNNN_name.sql``.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any


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


def _same(value: Any) -> Any:
    return value


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
SNAPSHOTS = Table("workflow_snapshots", (("digest", "VARCHAR"), ("doc", "VARCHAR")), key=("digest",))
