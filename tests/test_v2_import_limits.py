"""A crafted clarion.db (security issue #15, part 7): 12 KB whose generated columns cost
minutes of CPU and most of a gigabyte when read. Reading v2 files is bounded: v2's schema
only, every value's length checked before it is read, a time budget, and a thread of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from test_v2_import import EDITOR, GO_REVIEWER, clarion_db, v3

from clarion_jupyter.agent import v2db
from clarion_jupyter.agent.v2db import read_v2_database
from clarion_jupyter.testing.clarion_v2 import V2_MIGRATIONS, go_json, v2_agent, write_clarion_db

pytestmark = pytest.mark.timeout(120)

BOMB = "printf('%.*c', 100000000, 'x')"
"""100 MB made from nothing, each time the column is read."""


def crafted(tmp_path: Path, table_sql: str, rows: list[str]) -> Path:
    """A clarion.db with v2's tables, except one created by ``table_sql``, and ``rows`` inserted."""
    path = tmp_path / "crafted.db"
    name = table_sql.split("TABLE ")[1].split()[0]
    with closing(sqlite3.connect(path)) as con, con:
        for statement in V2_MIGRATIONS:
            if f"EXISTS {name} " not in statement:
                con.execute(statement)
        con.execute(table_sql)
        for row in rows:
            con.execute(row)
    return path


GENERATED_AGENT = (
    f"CREATE TABLE agents (id TEXT PRIMARY KEY, agent_data TEXT GENERATED ALWAYS AS ({BOMB}) VIRTUAL,"
    " created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)"
)
GENERATED_RUN = (
    "CREATE TABLE runs (id TEXT PRIMARY KEY, project_id TEXT NOT NULL,"
    f" run_data TEXT GENERATED ALWAYS AS ({BOMB}) VIRTUAL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP)"
)


async def test_a_generated_agent_data_column_is_refused_at_once(tmp_path: Path) -> None:
    path = crafted(tmp_path, GENERATED_AGENT, [f"INSERT INTO agents (id) VALUES ('a{i}')" for i in range(10)])
    assert path.stat().st_size < 64 * 1024
    async with v3(tmp_path) as engine:
        start = time.perf_counter()
        report = await engine.import_v2(path.read_bytes())
        took = time.perf_counter() - start
    assert took < 2.0
    assert report.changes == []
    assert "table agents has a generated column agent_data" in report.errors[0].message


async def test_a_generated_run_data_column_is_refused_and_no_run_is_read(tmp_path: Path) -> None:
    path = crafted(
        tmp_path, GENERATED_RUN, [f"INSERT INTO runs (id, project_id) VALUES ('r{i}', 'p')" for i in range(10)]
    )
    async with v3(tmp_path) as engine:
        start = time.perf_counter()
        report = await engine.import_v2(path)
        took = time.perf_counter() - start
    assert took < 2.0
    assert report.runs.found == 0
    assert "table runs has a generated column run_data" in report.errors[0].message


@pytest.mark.parametrize(
    ("table_sql", "problem"),
    [
        ("CREATE TABLE agents (id TEXT PRIMARY KEY, agent_data TEXT GENERATED ALWAYS AS ('{}') STORED)",
         "has a generated column agent_data"),
        ("CREATE TABLE agents (id TEXT PRIMARY KEY, agent_data BLOB NOT NULL)",
         "declares agent_data as BLOB, where v2 has TEXT"),
        ("CREATE TABLE agents (id TEXT PRIMARY KEY, agent_data TEXT, extra TEXT)", "has a column extra that v2 never had"),
        ("CREATE TABLE agents (id TEXT PRIMARY KEY)", "lacks agent_data"),
        ("CREATE VIRTUAL TABLE agents USING fts5(id, agent_data)", "is a virtual table"),
    ],
)  # fmt: skip
def test_a_table_that_is_not_v2s_is_not_read(tmp_path: Path, table_sql: str, problem: str) -> None:
    db = read_v2_database(crafted(tmp_path, table_sql, []))
    assert db.agent_texts == []
    assert [e.message for e in db.errors] == [f"not v2's schema, nothing was read: table agents {problem}"]


def test_the_file_v2_writes_passes_the_schema_check(tmp_path: Path) -> None:
    db = read_v2_database(clarion_db(tmp_path))
    assert db.errors == []
    assert len(db.agent_texts) == 2 and len(db.runs) == 2


async def test_a_value_over_the_cap_is_reported_unread_and_the_rest_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = v2_agent("huge", "Huge", system_prompt="x" * 5000)
    monkeypatch.setattr(v2db, "MAX_VALUE_CHARS", 4000)
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(clarion_db(tmp_path, agents=[EDITOR, huge, GO_REVIEWER]))
    assert [c.id for c in report.changes] == ["basic_editor", "go_reviewer"]
    [error] = report.errors
    assert error.source == "clarion.db agents/huge"
    assert error.message.startswith(f"not read: a text of length {len(go_json(huge))}")


def many_agents(tmp_path: Path) -> Path:
    """A 6 MB clarion.db of 1,500 agents: about a second of reading."""
    agents = [v2_agent(f"a{i}", f"Agent {i}", system_prompt="x" * 2000) for i in range(1500)]
    return write_clarion_db(tmp_path / "many.db", agents=agents)


def test_reading_past_the_time_budget_stops_with_an_error(tmp_path: Path) -> None:
    db = read_v2_database(many_agents(tmp_path), time_budget_s=0.01)
    assert db.agent_texts == [] and db.runs == []
    assert [e.message for e in db.errors] == ["reading the file took longer than 0.01 s and was stopped"]


async def test_imports_at_once_leave_the_default_threads_to_file_steps(tmp_path: Path) -> None:
    """Eight uploads of a 6 MB file (each about a second of reading) take one import thread;
    the threads file steps use (asyncio's default executor) stay free."""
    body = many_agents(tmp_path).read_bytes()
    async with v3(tmp_path) as engine:
        imports = [asyncio.ensure_future(engine.import_v2(body, dry_run=True)) for _ in range(8)]
        await asyncio.sleep(0.3)
        start = time.perf_counter()
        await asyncio.to_thread(time.sleep, 0)
        waited = time.perf_counter() - start
        assert not all(i.done() for i in imports)
        reports = await asyncio.gather(*imports)
    assert waited < 0.5
    assert all(len(r.changes) == 1500 for r in reports)


async def test_the_crafted_upload_is_answered_quickly_over_the_api(api, tmp_path: Path) -> None:
    path = crafted(tmp_path, GENERATED_AGENT, [f"INSERT INTO agents (id) VALUES ('a{i}')" for i in range(10)])
    start = time.perf_counter()
    reply = await api(
        "POST", "agents", "import", body=path.read_bytes(), headers={"Content-Type": "application/octet-stream"}
    )
    assert time.perf_counter() - start < 3.0
    assert reply.status in (200, 201, 422)
    assert "generated column agent_data" in str(reply.body)
    assert GO_REVIEWER["Profile"]["ID"] not in str(reply.body)
