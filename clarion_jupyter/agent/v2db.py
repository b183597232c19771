"""Reading Clarion v2's SQLite file, ``clarion.db``, read-only and with the standard library.

v2 at its latest kept everything in one file, through four tables of JSON rows:
``agents (id, agent_data)``, ``llm_configs (id, config_data)`` (with the ``apiKey``),
``projects (id, project_data)`` and ``runs (id, project_id, run_data)``, each with SQLite's
``created_at`` (``YYYY-MM-DD HH:MM:SS``, UTC). Older files lack the later tables; a
missing table reads as empty. The file is opened read-only (never locked for writing, so
a v2 that is still running is not disturbed), or deserialised from uploaded bytes.

An uploaded file is the sender's to shape, and SQLite computes what its schema says when a
row is read: a 12 KB file whose ``agent_data`` is a generated column of
``printf('%.*c', 100000000, 'x')`` once cost 116 s of CPU and 880 MB. So a file is read with
limits: a table whose columns are not v2's (a generated or hidden column, another type, a
column v2 never had, a virtual table) is refused before any row is read; every value's
length is checked in SQL before the value itself is read (:data:`MAX_VALUE_CHARS`); one
import has a time budget (SQLite's progress handler stops it); and imports run on a thread
of their own (:data:`IMPORT_THREAD`), so uploads cannot take the threads file steps use.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .importer import ImportProblem, ProviderConfig, provider_config

SQLITE_MAGIC = b"SQLite format 3\x00"
V2_SCHEMA: dict[str, dict[str, str]] = {
    "agents": {"id": "TEXT", "agent_data": "TEXT", "created_at": "DATETIME", "updated_at": "DATETIME"},
    "llm_configs": {"id": "TEXT", "config_data": "TEXT", "created_at": "DATETIME", "updated_at": "DATETIME"},
    "projects": {"id": "TEXT", "project_data": "TEXT", "created_at": "DATETIME", "updated_at": "DATETIME"},
    "runs": {"id": "TEXT", "project_id": "TEXT", "run_data": "TEXT", "created_at": "DATETIME"},
}
"""v2's tables as its migrations (``db/migrations/001``-``004``) create them: column → declared type."""
V2_TABLES = tuple(V2_SCHEMA)
_OPTIONAL_COLUMNS = frozenset({"created_at", "updated_at"})
"""Columns an older file may lack (it is then read in id order)."""
MAX_VALUE_CHARS = 8 * 1024 * 1024
"""The longest value (a JSON document, an id) read from a v2 file; a longer one is reported, not read."""
TIME_BUDGET_S = 15.0
"""How long reading one v2 file may take; v2's real files take well under a second."""
_PROGRESS_STEPS = 1000
"""SQLite virtual-machine steps between two looks at the clock."""
IMPORT_THREAD = ThreadPoolExecutor(1, thread_name_prefix="clarion-v2-import")
"""Where v2 imports run, one at a time: not on the default executor, which file steps use."""
_RUN_DATA_TRIMMED = (
    "CASE WHEN json_valid(run_data) THEN json_remove(run_data, '$.rawRequest.system_instruction',"
    " '$.rawRequest.output_schema') ELSE run_data END"
)
"""A run as v3 uses it: SQLite drops the request's copy of the agent's prompt and schema
(most of each row) before Python parses what is left."""


class _TooLong(ValueError):
    """A value over :data:`MAX_VALUE_CHARS`, or a blob: reported for its row."""


@dataclass(frozen=True, slots=True)
class V2Run:
    """One row of v2's ``runs`` table, read within the limits, before it is converted."""

    id: str
    project_id: str
    data: dict[str, Any]
    created_at: str | None


@dataclass(slots=True)
class V2Database:
    """What a v2 ``clarion.db`` held, read with v2's exact schema, capped values and a time budget."""

    name: str
    """How reports name the file (its file name, or ``upload``)."""
    agent_texts: list[tuple[str, str]] = field(default_factory=list)
    """``(agent_data, source)`` per row, for the document importer."""
    provider_configs: list[ProviderConfig] = field(default_factory=list)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[V2Run] = field(default_factory=list)
    errors: list[ImportProblem] = field(default_factory=list)
    warnings: list[ImportProblem] = field(default_factory=list)
    """Rows of the history (projects, runs) that could not be read: the agents still import."""


def is_sqlite(head: bytes) -> bool:
    return head.startswith(SQLITE_MAGIC)


def is_sqlite_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return is_sqlite(f.read(len(SQLITE_MAGIC)))
    except OSError:
        return False


def read_v2_database(source: Path | bytes, name: str | None = None, time_budget_s: float = TIME_BUDGET_S) -> V2Database:
    """Every row of a v2 ``clarion.db`` (a path or the file's bytes); bad rows are reported,
    and so is a file whose schema is not v2's or that takes longer than ``time_budget_s``."""
    db = V2Database(name=name or (source.name if isinstance(source, Path) else "upload"))
    try:
        with _connect(source) as con:
            deadline = time.monotonic() + time_budget_s
            con.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables & set(V2_TABLES):
                db.errors.append(ImportProblem(db.name, "not a Clarion v2 database: no agents, llm_configs or runs"))
                return db
            problems = [
                f"table {t} {problem}" for t in V2_TABLES if t in tables and (problem := _schema_problem(con, t))
            ]
            if problems:
                db.errors.append(ImportProblem(db.name, f"not v2's schema, nothing was read: {'; '.join(problems)}"))
                return db
            _read_rows(con, tables, db)
    except sqlite3.OperationalError as exc:
        if "interrupted" not in str(exc):
            db.errors.append(ImportProblem(db.name, _unreadable(exc)))
            return db
        db = V2Database(name=db.name)  # nothing of a file that was stopped halfway
        db.errors.append(
            ImportProblem(db.name, f"reading the file took longer than {time_budget_s:g} s and was stopped")
        )
    except sqlite3.Error as exc:
        db.errors.append(ImportProblem(db.name, _unreadable(exc)))
    return db


def _unreadable(exc: sqlite3.Error) -> str:
    return f"cannot read the SQLite file: {exc}"


def _schema_problem(con: sqlite3.Connection, table: str) -> str | None:
    """Why ``table`` is not the table v2's migrations create, or None. Only such a table is
    read: SQLite computes generated columns, and virtual tables run their module, on read."""
    (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone()
    if str(sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
        return "is a virtual table"
    expected = V2_SCHEMA[table]
    columns = con.execute("SELECT name, type, hidden FROM pragma_table_xinfo(?)", [table]).fetchall()
    for column, declared, hidden in columns:
        if hidden:
            return f"has a generated column {column}"
        if column not in expected:
            return f"has a column {column} that v2 never had"
        if str(declared).upper() != expected[column]:
            return f"declares {column} as {declared or 'no type'}, where v2 has {expected[column]}"
    missing = set(expected) - _OPTIONAL_COLUMNS - {column for column, *_ in columns}
    return f"lacks {', '.join(sorted(missing))}" if missing else None


def _capped(column: str, value: str | None = None) -> str:
    """``value`` (default: ``column``) when ``column`` is text (or a number) of at most
    :data:`MAX_VALUE_CHARS` (its length is asked before it is read), else NULL; then its type
    and length, to report."""
    return (
        f"CASE WHEN typeof({column}) IN ('text', 'integer', 'real') AND length({column}) <= {MAX_VALUE_CHARS}"
        f" THEN {value or column} END,"
        f" typeof({column}), length({column})"
    )


def _value(row: tuple[Any, ...], at: int) -> Any:
    """The value :func:`_capped` put at ``at``; :class:`_TooLong` when it was left unread."""
    value, kind, length = row[at : at + 3]
    if value is None and kind != "null":
        raise _TooLong(f"a {kind} of length {length}: only text of up to {MAX_VALUE_CHARS} characters is read")
    return value


@contextmanager
def _connect(source: Path | bytes) -> Iterator[sqlite3.Connection]:
    if isinstance(source, Path):
        uri = f"{source.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as con:
            yield con
        return
    with closing(sqlite3.connect(":memory:")) as con:
        con.deserialize(source)
        yield con


def _rows(
    con: sqlite3.Connection, table: str, columns: list[tuple[str, str | None]], problems: list[ImportProblem], name: str
) -> Iterator[list[Any]]:
    """The id and the ``(column, value expression)`` values of each row of ``table``, each read
    only after its length was checked; a row with a value over the cap is reported in ``problems``."""
    present = {row[1] for row in con.execute("SELECT * FROM pragma_table_info(?)", [table])}
    order = "created_at, id" if "created_at" in present else "id"
    selected = ", ".join(_capped(c, v) if c in present else "NULL, 'null', 0" for c, v in columns)
    for row in con.execute(f"SELECT {_capped('id')}, {selected} FROM {table} ORDER BY {order}"):
        row_id = row[0] if row[0] is not None else f"(an id of {row[2]} characters)"
        try:
            yield [row_id] + [_value(row, 3 * i) for i in range(1, len(columns) + 1)]
        except _TooLong as exc:
            problems.append(ImportProblem(f"{name} {table}/{row_id}", f"not read: {exc}"))


def _read_rows(con: sqlite3.Connection, tables: set[str], db: V2Database) -> None:
    if "agents" in tables:
        for row_id, data in _rows(con, "agents", [("agent_data", None)], db.errors, db.name):
            db.agent_texts.append((data, f"{db.name} agents/{row_id}"))
    if "llm_configs" in tables:
        for row_id, data in _rows(con, "llm_configs", [("config_data", None)], db.errors, db.name):
            config = provider_config(_json(data, f"{db.name} llm_configs/{row_id}", db.errors))
            if config is not None:
                db.provider_configs.append(config)
    if "projects" in tables:
        for row_id, data in _rows(con, "projects", [("project_data", None)], db.warnings, db.name):
            project = _json(data, f"{db.name} projects/{row_id}", db.warnings)
            if isinstance(project, dict):
                db.projects[row_id] = project
    if "runs" in tables:
        columns = [("project_id", None), ("run_data", _RUN_DATA_TRIMMED), ("created_at", None)]
        for row_id, project_id, data, created_at in _rows(con, "runs", columns, db.warnings, db.name):
            run = _json(data, f"{db.name} runs/{row_id}", db.warnings)
            if isinstance(run, dict):
                db.runs.append(V2Run(str(row_id), str(project_id or ""), run, created_at))


def _json(text: Any, where: str, problems: list[ImportProblem]) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        problems.append(ImportProblem(where, f"not valid JSON: {exc}"))
    except RecursionError:
        problems.append(ImportProblem(where, "the JSON is nested too deeply"))
    return None
