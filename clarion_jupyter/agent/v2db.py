"""Reading Clarion v2's SQLite file, ``clarion.db``, read-only and with the standard library.

v2 at its latest kept everything in one file, through four tables of JSON rows:
``agents (id, agent_data)``, ``llm_configs (id, config_data)`` (with the ``apiKey``),
``projects (id, project_data)`` and ``runs (id, project_id, run_data)``, each with SQLite's
``created_at`` (``YYYY-MM-DD HH:MM:SS``, UTC). Older files lack the later tables; a
missing table reads as empty. The file is opened read-only (never locked for writing, so
a v2 that is still running is not disturbed), or deserialised from uploaded bytes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .importer import ImportProblem, ProviderConfig, provider_config

SQLITE_MAGIC = b"SQLite format 3\x00"
_RUN_DATA = (
    "CASE WHEN json_valid(run_data) THEN json_remove(run_data, '$.rawRequest.system_instruction',"
    " '$.rawRequest.output_schema') ELSE run_data END"
)
"""A run as v3 uses it: SQLite drops the request's copy of the agent's prompt and schema
(most of each row) before Python parses what is left."""
V2_TABLES = ("agents", "llm_configs", "projects", "runs")


@dataclass(frozen=True, slots=True)
class V2Run:
    id: str
    project_id: str
    data: dict[str, Any]
    created_at: str | None


@dataclass(slots=True)
class V2Database:
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


def read_v2_database(source: Path | bytes, name: str | None = None) -> V2Database:
    """Every row of a v2 ``clarion.db`` (a path or the file's bytes); bad rows are reported."""
    db = V2Database(name=name or (source.name if isinstance(source, Path) else "upload"))
    try:
        with _connect(source) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables & set(V2_TABLES):
                db.errors.append(ImportProblem(db.name, "not a Clarion v2 database: no agents, llm_configs or runs"))
                return db
            _read_rows(con, tables, db)
    except sqlite3.Error as exc:
        db.errors.append(ImportProblem(db.name, f"cannot read the SQLite file: {exc}"))
    return db


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


def _read_rows(con: sqlite3.Connection, tables: set[str], db: V2Database) -> None:
    if "agents" in tables:
        for row_id, data in con.execute("SELECT id, agent_data FROM agents ORDER BY created_at, id"):
            db.agent_texts.append((data, f"{db.name} agents/{row_id}"))
    if "llm_configs" in tables:
        for row_id, data in con.execute("SELECT id, config_data FROM llm_configs ORDER BY created_at, id"):
            config = provider_config(_json(data, f"{db.name} llm_configs/{row_id}", db.errors))
            if config is not None:
                db.provider_configs.append(config)
    if "projects" in tables:
        for row_id, data in con.execute("SELECT id, project_data FROM projects"):
            project = _json(data, f"{db.name} projects/{row_id}", db.warnings)
            if isinstance(project, dict):
                db.projects[row_id] = project
    if "runs" in tables:
        columns = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        created = "created_at" if "created_at" in columns else "NULL"
        for row_id, project_id, data, created_at in con.execute(
            f"SELECT id, project_id, {_RUN_DATA}, {created} FROM runs ORDER BY {created}, id"
        ):
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
