"""Read-only SQL over the run history: the documented views and the guard in front of them.

DuckDB makes run history cheap to aggregate (cost per model per day, failure rate per step),
so users get SQL rather than a fixed set of reports. What they may reach is exactly four
views, ``runs``, ``steps``, ``events`` and ``llm_calls`` (temporary views on a connection
of their own, so they shadow the tables of the same name and the stores never see them),
and nothing else: no files, no extensions, no settings, no writes.

The guard asks DuckDB itself what a statement is (``extract_statements`` for its type, and
``json_serialize_sql`` for its syntax tree) instead of matching text, so a forbidden call
hidden in a subquery, a CTE or a string-named table (``FROM 'data.csv'``) is found all the
same. It allows one SELECT (which covers WITH, DESCRIBE and SUMMARIZE), whose tables are
the views or its own CTEs, unqualified, whose table functions are generators only, and which
calls no function that reads the environment or settings. A row cap and a time limit (a
timer that calls DuckDB's ``interrupt()``) bound what a query may cost the server.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from ..core.errors import BadRequest

VIEWS: dict[str, str] = {
    "runs": (
        "SELECT run_id, workflow_id, status, inputs::JSON AS inputs, outputs::JSON AS outputs,"
        " error::JSON AS error, created_at, started_at, finished_at,"
        " date_diff('microsecond', started_at, finished_at) / 1000.0 AS duration_ms,"
        " (usage::JSON->>'cost_usd')::DOUBLE AS cost_usd,"
        " (coalesce((usage::JSON->>'prompt_tokens')::BIGINT, 0)"
        " + coalesce((usage::JSON->>'completion_tokens')::BIGINT, 0)) AS tokens"
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
        "SELECT run_id, key AS step_key, output::JSON->>'model' AS model,"
        " (usage::JSON->>'prompt_tokens')::BIGINT AS prompt_tokens,"
        " (usage::JSON->>'completion_tokens')::BIGINT AS completion_tokens,"
        " (usage::JSON->>'cost_usd')::DOUBLE AS cost_usd, finished_at AS ts"
        " FROM {db}.step_runs WHERE usage IS NOT NULL"
    ),
}
"""The documented views (ARCHITECTURE.md, "SQL over history"), by name; ``{db}`` is the
database's own schema, named in full because the views shadow its tables."""

ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
"""Table functions that only generate values; every other one (read_csv, read_parquet,
read_json, glob, read_text, query, duckdb_settings, ...) reads files, the catalog or settings."""
FORBIDDEN_FUNCTIONS = frozenset({"getenv", "current_setting", "getvariable"})
"""Scalar functions that read the server's environment or configuration."""
_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})

MAX_ROWS = 10_000
TIMEOUT_S = 10.0


class QueryRefused(BadRequest):
    """The statement is not one read-only query over the history views."""

    code = "query_refused"


class QueryFailed(BadRequest):
    """DuckDB could not run the query (a syntax error, an unknown column, the time limit)."""

    code = "query_failed"


@dataclass(slots=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "truncated": self.truncated}


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
    ctes = {name for node in _nodes(tree) for name in _cte_names(node)}
    for node in _nodes(tree):
        _check_node(node, ctes)


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every object of the syntax tree, depth first."""
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _nodes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _nodes(child)


def _cte_names(node: dict[str, Any]) -> list[str]:
    cte_map = node.get("cte_map")
    return [entry["key"].lower() for entry in cte_map.get("map", [])] if isinstance(cte_map, dict) else []


def _check_node(node: dict[str, Any], ctes: set[str]) -> None:
    kind = node.get("type")
    if "cte_map" in node and kind not in _QUERY_NODES:  # a query node that is not a query: a write
        raise _refuse(f"only reading is allowed: the query contains {str(kind).removesuffix('_QUERY_NODE')}")
    if kind == "BASE_TABLE":
        name = node["table_name"]
        qualified = node.get("schema_name") or node.get("catalog_name")
        if qualified or (name.lower() not in VIEWS and name.lower() not in ctes):
            shown = ".".join(p for p in (node.get("catalog_name"), node.get("schema_name"), name) if p)
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


def run_query(
    cursor: duckdb.DuckDBPyConnection, sql: str, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S
) -> QueryResult:
    """Check and run ``sql`` on a connection of its own (with the views); blocking, so callers
    run it on a reader thread. At most ``max_rows`` rows come back (``truncated`` says more
    matched), and a query still running after ``timeout_s`` is interrupted."""
    con = cursor.cursor()
    try:
        check_query(con, sql)
        (catalog,) = con.execute("SELECT current_database()").fetchone()
        db = '"' + catalog.replace('"', '""') + '".main'
        for name, body in VIEWS.items():
            con.execute(f"CREATE TEMP VIEW {name} AS {body.format(db=db)}")
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            con.execute(sql)
            rows = con.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise QueryFailed(f"the query took longer than {timeout_s:g} s and was stopped",
                              details={"timeout_s": timeout_s}) from None  # fmt: skip
        except duckdb.Error as exc:
            raise QueryFailed(str(exc).splitlines()[0], details={"sql": sql}) from None
        finally:
            timer.cancel()
        description = con.description or []
    finally:
        con.close()
    json_columns = [str(d[1]) == "JSON" for d in description]
    decoded = [
        [_json_value(v, is_json) for v, is_json in zip(row, json_columns, strict=True)] for row in rows[:max_rows]
    ]
    return QueryResult([d[0] for d in description], decoded, len(rows) > max_rows)


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
