"""Read-only SQL over the run history: the documented views, and the sandbox that runs it.

DuckDB makes run history cheap to aggregate (cost per model per day, failure rate per step),
so users get SQL rather than a fixed set of reports. What they may reach is exactly four
views, ``runs``, ``steps``, ``events`` and ``llm_calls``, and nothing else: no other table,
no files, no network, no extensions, no settings, no writes.

That holds by construction. The statement never runs on the engine's database: it runs in
a :class:`HistorySandbox`, an in-memory DuckDB of its own, opened with external access,
extension loading and Python's replacement scans off and its configuration locked, so DuckDB
itself refuses files, URLs, ``ATTACH``, ``INSTALL`` and ``SET``. The only data in it are the
four views, each a live Arrow stream of the engine's view query (nothing is copied into the
sandbox, and no copy is made per query). Before running, the sandbox plans the statement over
empty tables of the same shape and streams only the columns the plan reads (the sandbox's view
puts NULLs of their type in the others), so ``SELECT count(*) FROM events`` does not move every
event's data. JSON fields are read from the stored text with ``->>`` (a ``::JSON`` cast first
would parse every value twice).

In front of it stands a second wall, the guard, which asks DuckDB what a statement is
(``extract_statements`` for its type, ``json_serialize_sql`` for its syntax tree) instead of
matching text: one SELECT (which covers WITH, DESCRIBE and SUMMARIZE) whose tables are the
views or CTEs in scope where they are named, unqualified, whose table functions only
generate values, and which calls no function that reads the environment or settings.

What comes back is bounded three ways: rows (``max_rows``), bytes of the JSON answer
(``max_bytes``: rows are fetched a chunk at a time and encoded as they come, and fetching
stops at the cap) and time (a timer calls DuckDB's ``interrupt()``).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ..core.errors import BadRequest

VIEWS: dict[str, str] = {
    "runs": (
        "SELECT run_id, workflow_id, status, inputs::JSON AS inputs, outputs::JSON AS outputs,"
        " error::JSON AS error, created_at, started_at, finished_at,"
        " date_diff('microsecond', started_at, finished_at) / 1000.0 AS duration_ms,"
        " (usage->>'cost_usd')::DOUBLE AS cost_usd,"
        " (coalesce((usage->>'prompt_tokens')::BIGINT, 0)"
        " + coalesce((usage->>'completion_tokens')::BIGINT, 0)) AS tokens"
        " FROM {db}.runs"
    ),
    "steps": (
        "SELECT s.run_id, s.key AS step_key, s.step_id, t.task, s.status, s.attempt, s.started_at,"
        " s.finished_at, date_diff('microsecond', s.started_at, s.finished_at) / 1000.0 AS duration_ms,"
        " s.error::JSON AS error"
        " FROM {db}.step_runs s JOIN {db}.runs r USING (run_id)"
        " LEFT JOIN (SELECT digest, step->>'id' AS step_id, any_value(step->>'task') AS task FROM ("
        "   SELECT digest, unnest(json_extract(doc, '$.steps[*]')) AS step FROM {db}.workflow_snapshots"
        "   UNION ALL SELECT digest, unnest(json_extract(doc, '$.steps[*].parallel[*]')) FROM {db}.workflow_snapshots"
        " ) WHERE step->>'id' IS NOT NULL GROUP BY ALL) t"
        " ON t.digest = r.workflow_digest AND t.step_id = s.step_id"
    ),
    "events": "SELECT run_id, seq, type, step_id, ts, data::JSON AS data FROM {db}.events",
    "llm_calls": (
        "SELECT run_id, key AS step_key, output->>'model' AS model,"
        " (usage->>'prompt_tokens')::BIGINT AS prompt_tokens,"
        " (usage->>'completion_tokens')::BIGINT AS completion_tokens,"
        " (usage->>'cost_usd')::DOUBLE AS cost_usd, finished_at AS ts,"
        " coalesce((output->>'cached')::BOOLEAN, false) AS cached"
        " FROM {db}.step_runs WHERE usage IS NOT NULL"
    ),
}
"""The documented views (ARCHITECTURE.md, "SQL over history"), by name, as queries of the
engine's tables (``{db}``: its schema, named in full); each runs on the engine's database,
on a cursor of its own, when a statement in the sandbox reads the view."""

ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
"""Table functions that only generate values; every other one (read_csv, read_parquet,
read_json, glob, read_text, query, duckdb_settings, ...) reads files, the catalog or settings."""
FORBIDDEN_FUNCTIONS = frozenset({"getenv", "current_setting", "getvariable"})
"""Scalar functions that read the server's environment or configuration."""
_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})

MAX_ROWS = 10_000
MAX_BYTES = 20 * 1024 * 1024
"""The default cap on a query's answer, in bytes of its JSON (the ``max_query_bytes`` trait)."""
TIMEOUT_S = 10.0
SANDBOX_MEMORY_LIMIT = "1GB"
"""What DuckDB may hold for all queries at once; a query that needs more fails, the engine
(another DuckDB instance) is not affected."""
SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "python_enable_replacements": False,
    # Planning runs over empty tables: with statistics, DuckDB would prove filters empty and
    # drop the very scans whose columns the plan is asked for. The live streams have none anyway.
    "disabled_optimizers": "statistics_propagation",
    "threads": 1,
    "memory_limit": SANDBOX_MEMORY_LIMIT,
    "lock_configuration": True,
}
"""The sandbox's DuckDB: no files, no network, no extensions, no Python variables as tables,
one thread per query, bounded memory, and no way to change any of it (``lock_configuration``)."""
FETCH_ROWS = 1024
"""Most rows taken from DuckDB at once (fewer when rows are large: see :meth:`HistorySandbox._fetch`)."""
FETCH_BYTES = 1024 * 1024
"""About the most bytes of rows taken from DuckDB at once: turning them into Python values
holds the GIL for the whole call, which the event loop waits for (about 4 ms a megabyte)."""


class QueryRefused(BadRequest):
    """The statement is not one read-only query over the history views."""

    code = "query_refused"


class QueryFailed(BadRequest):
    """DuckDB could not run the query (a syntax error, an unknown column, the time limit)."""

    code = "query_failed"


@dataclass(slots=True)
class QueryResult:
    """A history query's answer: columns, rows, and whether a row or byte cap cut it."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    encoded_rows: list[bytes] = field(default_factory=list, repr=False)
    """Each row as JSON (ASCII: non-ASCII is escaped), encoded on the query's thread while it
    was fetched, a row at a time (that is how its size was measured)."""
    body: bytes = field(default=b"", repr=False)
    """:meth:`as_dict` as UTF-8 JSON, joined from the encoded rows on the query's thread once
    the rows are in: the API sends it as it is, so a 20 MB answer costs the event loop no work."""

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "truncated": self.truncated}

    def seal(self) -> QueryResult:
        """Build :attr:`body` (blocking: on the query's thread)."""
        head = json.dumps({"columns": self.columns, "truncated": self.truncated})[:-1]
        self.body = b"".join((head.encode(), b', "rows": [', b", ".join(self.encoded_rows), b"]}"))
        return self


def _refuse(message: str, **details: Any) -> QueryRefused:
    return QueryRefused(message, details={"views": sorted(VIEWS), **details})


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise :class:`QueryRefused` unless ``sql`` is one read-only statement over the views."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryFailed(f"not valid SQL: {exc}", details={"sql": sql}) from None
    if len(statements) != 1:
        raise _refuse(f"send exactly one statement, not {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise _refuse(f"only SELECT, WITH, DESCRIBE and SUMMARIZE are allowed, not {kind.name}", statement=kind.name)
    tree = json.loads(con.execute("SELECT json_serialize_sql($1)", [sql]).fetchone()[0])
    if tree.get("error"):
        raise QueryFailed(f"not valid SQL: {tree.get('error_message')}", details={"sql": sql})
    try:
        _check_tree(tree, frozenset())
    except RecursionError:
        raise _refuse("the query is nested too deeply") from None


def _check_tree(value: Any, scope: frozenset[str]) -> None:
    """Check every node of the syntax tree, knowing which CTE names are in ``scope`` there.

    A CTE is visible in the query that defines it and in the CTEs defined after it, never in
    its own body (``WITH agents AS (SELECT * FROM agents)`` reads the table, not itself) and
    never outside its query (a CTE in a subquery does not make a name valid elsewhere); a
    recursive CTE sees itself in its recursive term only."""
    if isinstance(value, list):
        for child in value:
            _check_tree(child, scope)
        return
    if not isinstance(value, dict):
        return
    _check_node(value, scope)
    inner, skip = scope, {"cte_map"}
    cte_map = value.get("cte_map")
    if isinstance(cte_map, dict):
        for entry in cte_map.get("map", []):
            _check_tree(entry.get("value"), inner)
            inner = inner | {str(entry.get("key", "")).lower()}
    if value.get("type") == "RECURSIVE_CTE_NODE":
        _check_tree(value.get("left"), inner)
        _check_tree(value.get("right"), inner | {str(value.get("cte_name", "")).lower()})
        skip |= {"left", "right"}
    for key, child in value.items():
        if key not in skip:
            _check_tree(child, inner)


def _check_node(node: dict[str, Any], ctes: frozenset[str]) -> None:
    kind = node.get("type")
    if "cte_map" in node and kind not in _QUERY_NODES:  # a query node that is not a query: a write
        raise _refuse(f"only reading is allowed: the query contains {str(kind).removesuffix('_QUERY_NODE')}")
    if kind == "BASE_TABLE":
        name = node["table_name"]
        path = (node.get("qualified_name") or {}).get("path") or []
        qualified = node.get("schema_name") or node.get("catalog_name") or len(path) > 1
        if qualified or (name.lower() not in VIEWS and name.lower() not in ctes):
            shown = ".".join(path) if len(path) > 1 else name
            raise _refuse(f"unknown table '{shown}': query the views {', '.join(VIEWS)}", table=shown)
    elif kind == "TABLE_FUNCTION":
        function = node.get("function") or {}
        name = str(function.get("function_name", "")).lower()
        if name not in ALLOWED_TABLE_FUNCTIONS:
            raise _refuse(f"table function '{name}' is not allowed (no access to files, the catalog or settings)",
                          function=name)  # fmt: skip
    elif kind == "SHOW_REF" and node.get("show_type") not in ("DESCRIBE", "SUMMARY"):
        raise _refuse("SHOW is not allowed: DESCRIBE one of the views instead")
    elif node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in FORBIDDEN_FUNCTIONS:
        raise _refuse(f"function '{node['function_name']}' is not allowed (no access to the server's settings)",
                      function=node["function_name"])  # fmt: skip


@dataclass(frozen=True, slots=True)
class _View:
    """A view's shape, as the engine's query of it has it: ``(column, DuckDB type)`` pairs."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def table(self) -> str:
        """The sandbox's empty table of this shape, that statements are planned over."""
        return f"__{self.name}"

    @property
    def stream(self) -> str:
        """The name the live stream is registered under, on a query's own cursor."""
        return f"__live_{self.name}"

    def over(self, source: str, read: set[str] | None = None) -> str:
        """The view in the sandbox: ``source``'s columns with their types (JSON travels as text);
        with ``read``, ``source`` holds only those, and the others are NULLs of their type."""
        columns = ", ".join(
            (f'"{c}"::JSON AS "{c}"' if t == "JSON" else f'"{c}"')
            if read is None or c in read
            else f'NULL::{t} AS "{c}"'
            for c, t in self.columns
        )
        return f"CREATE TEMP VIEW {self.name} AS SELECT {columns} FROM {source}"

    def engine_query(self, db: str, read: set[str]) -> str:
        """The engine's query of the view (its tables in schema ``db``), for the columns in
        ``read`` only: every column streamed costs the engine a conversion to Arrow and the
        sandbox a scan, NULL or not (with none read, as for ``count(*)``, one constant)."""
        columns = ", ".join(f'"{c}"' for c, _ in self.columns if c in read) or "NULL::BOOLEAN AS __row"
        return f"SELECT {columns} FROM ({VIEWS[self.name].format(db=db)})"


def _close_all(cursors: list[duckdb.DuckDBPyConnection]) -> None:
    for cursor in cursors:
        cursor.close()


def _arrow_type(duckdb_type: str) -> str:
    return "VARCHAR" if duckdb_type == "JSON" else duckdb_type


class _LiveView:
    """One view as an Arrow stream (DuckDB's PyCapsule interface): each scan of it in the
    sandbox runs the engine's query of the view on a new engine cursor, kept open (in
    ``opened``) until the query is done with it."""

    def __init__(self, cursor: Callable[[], duckdb.DuckDBPyConnection], sql: str, opened: list[Any]) -> None:
        self._cursor = cursor
        self._sql = sql
        self._opened = opened

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        cursor = self._cursor()
        self._opened.append(cursor)
        return cursor.sql(self._sql).__arrow_c_stream__(requested_schema)


class HistorySandbox:
    """The DuckDB that history queries run in: in memory, locked down (:data:`SANDBOX_CONFIG`),
    holding nothing but the four views, streamed live from the engine's database.

    ``cursor`` opens a new cursor on the engine's database (the caller closes it). Blocking:
    build it and call :meth:`run` on the query threads."""

    def __init__(self, cursor: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self._engine_cursor = cursor
        engine = cursor()
        try:
            (catalog,) = engine.execute("SELECT current_database()").fetchone()
            self._db = '"' + catalog.replace('"', '""') + '".main'
            self._views = [
                _View(
                    name,
                    tuple((c, t) for c, t, *_ in engine.execute(f"DESCRIBE {body.format(db=self._db)}").fetchall()),
                )
                for name, body in VIEWS.items()
            ]
        finally:
            engine.close()
        self._con = duckdb.connect(":memory:", config=SANDBOX_CONFIG)
        self._lock = threading.Lock()
        for view in self._views:
            columns = ", ".join(f'"{c}" {_arrow_type(t)}' for c, t in view.columns)
            self._con.execute(f"CREATE TABLE {view.table} ({columns})")
        # Whether this DuckDB's plans say what they scan in the shape _columns_read reads; if
        # not, every view is streamed whole (slower, and still right).
        probe = self._cursor()
        try:
            self._plans_understood = self._columns_read(probe, "SELECT status FROM runs") == {"runs": {"status"}}
        finally:
            probe.close()

    def close(self) -> None:
        self._con.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._con.cursor()

    def run(self, sql: str, max_rows: int, max_bytes: int, timeout_s: float) -> QueryResult:
        """Check ``sql``, plan it, and run it over the live views: at most ``max_rows`` rows and
        ``max_bytes`` of JSON come back (``truncated`` says more matched), and a query still
        running after ``timeout_s`` is interrupted."""
        with ExitStack() as stack:
            opened: list[duckdb.DuckDBPyConnection] = []
            stack.callback(_close_all, opened)  # after the query's cursor, below
            planner = self._cursor()
            stack.callback(planner.close)
            check_query(planner, sql)
            read = self._columns_read(planner, sql) if self._plans_understood else self._everything()
            con = self._cursor()
            stack.callback(con.close)
            for view in self._views:
                if view.name in read:
                    live = _LiveView(self._engine_cursor, view.engine_query(self._db, read[view.name]), opened)
                    con.register(view.stream, live)
                    con.execute(view.over(view.stream, read[view.name]))
                else:  # not scanned by the plan: its empty table binds the same and costs the engine nothing
                    con.execute(view.over(view.table))
            timer = threading.Timer(timeout_s, con.interrupt)
            timer.start()
            try:
                con.execute(sql)
                return self._fetch(con, max_rows, max_bytes).seal()
            except duckdb.InterruptException:
                raise QueryFailed(f"the query took longer than {timeout_s:g} s and was stopped",
                                  details={"timeout_s": timeout_s}) from None  # fmt: skip
            except duckdb.Error as exc:
                raise QueryFailed(str(exc).splitlines()[0], details={"sql": sql}) from None
            finally:
                timer.cancel()
        raise AssertionError("unreachable")

    def _everything(self) -> dict[str, set[str]]:
        return {view.name: {c for c, _ in view.columns} for view in self._views}

    def _columns_read(self, planner: duckdb.DuckDBPyConnection, sql: str) -> dict[str, set[str]]:
        """Which columns of each view the statement reads, from DuckDB's own plan of it over
        the empty tables (the same optimizer plans it over the streams); a view the plan does
        not scan is left out. Planning also binds the statement, so an unknown column is
        reported here, before anything is streamed."""
        for view in self._views:
            planner.execute(view.over(view.table))
        try:
            plan = planner.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()
        except duckdb.Error as exc:
            raise QueryFailed(str(exc).splitlines()[0], details={"sql": sql}) from None
        read: dict[str, set[str]] = {}
        by_table = {f"memory.main.{view.table}": view for view in self._views}
        for node in _nodes([json.loads(text) for _, text in plan]):
            info = node.get("extra_info")
            view = by_table.get(info.get("Table", "")) if isinstance(info, dict) else None
            if view is None:
                continue
            projected = info.get("Projections") or []
            names = {projected} if isinstance(projected, str) else set(projected)
            filters = " ".join(
                info["Filters"] if isinstance(info.get("Filters"), list) else [info.get("Filters") or ""]
            )
            names |= {c for c, _ in view.columns if re.search(rf"\b{re.escape(c)}\b", filters)}
            read.setdefault(view.name, set()).update(names)
        return read

    @staticmethod
    def _fetch(con: duckdb.DuckDBPyConnection, max_rows: int, max_bytes: int) -> QueryResult:
        """Rows a chunk at a time, each encoded as it comes, until the rows or bytes run out.
        The first chunk is one row; later ones as many as :data:`FETCH_BYTES` and the bytes
        left allow at the size of the rows so far, so a result of huge values is taken a row at
        a time and stops at the cap."""
        description = con.description or []
        json_columns = [str(d[1]) == "JSON" for d in description]
        result = QueryResult([d[0] for d in description], [], False)
        size = 0
        while True:
            row_bytes = max(1, size // len(result.rows)) if result.rows else max_bytes
            fitting = min(max_bytes - size, FETCH_BYTES) // row_bytes
            wanted = max(1, min(FETCH_ROWS, max_rows + 1 - len(result.rows), fitting))
            chunk = con.fetchmany(wanted)
            if not chunk:
                return result
            for row in chunk:
                values = [_json_value(v, is_json) for v, is_json in zip(row, json_columns, strict=True)]
                text = json.dumps(values, default=str).encode()
                if len(result.rows) == max_rows or size + len(text) + 2 > max_bytes:
                    result.truncated = True
                    return result
                size += len(text) + 2
                result.rows.append(values)
                result.encoded_rows.append(text)


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every object of a JSON tree, depth first."""
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _nodes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _nodes(child)


def _json_value(value: Any, is_json: bool = False) -> Any:
    """A DuckDB value as JSON: timestamps as ISO 8601, decimals as numbers, JSON columns parsed."""
    if value is None:
        return None
    if is_json and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z") if value.tzinfo else value.isoformat() + "Z"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value
