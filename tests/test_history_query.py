"""SQL over run history: the documented views, the read-only guard, the row cap and the time
limit, through the engine (a real DuckDB file) and through ``POST /api/v3/query``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api

from clarion_jupyter import Agent, Engine
from clarion_jupyter.storage.query import QueryFailed, QueryRefused

pytestmark = pytest.mark.timeout(60)

ECHO = {
    "id": "hist",
    "name": "History",
    "steps": [
        {"id": "first", "task": "echo", "with": {"value": 1}},
        {"parallel": [{"id": "left", "task": "echo", "with": {"value": 2}}]},
        {"id": "bad", "task": "shell", "with": {"command": "exit 3"}, "continue_on_error": True},
    ],
}
CONTRACT_COLUMNS = {
    "runs": ["run_id", "workflow_id", "status", "inputs", "outputs", "error", "created_at", "started_at",
             "finished_at", "duration_ms", "cost_usd", "tokens"],
    "steps": ["run_id", "step_key", "step_id", "task", "status", "attempt", "started_at", "finished_at",
              "duration_ms", "error"],
    "events": ["run_id", "seq", "type", "step_id", "ts", "data"],
    "llm_calls": ["run_id", "step_key", "model", "prompt_tokens", "completion_tokens", "cost_usd", "ts", "cached"],
}  # fmt: skip
REFUSED = {
    "copy": "COPY (SELECT * FROM runs) TO 'out.csv'",
    "attach": "ATTACH 'other.duckdb'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "pragma": "PRAGMA database_list",
    "set": "SET threads = 1",
    "reset": "RESET threads",
    "insert": "INSERT INTO runs SELECT * FROM runs",
    "update": "UPDATE runs SET status = 'failed'",
    "delete": "DELETE FROM runs",
    "create": "CREATE TABLE stolen AS SELECT * FROM runs",
    "drop": "DROP TABLE runs",
    "writing_cte": "WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x",
    "two_statements": "SELECT 1; SELECT 2",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_parquet": "SELECT * FROM read_parquet('x.parquet')",
    "read_json": "SELECT * FROM read_json_auto('x.json')",
    "read_text": "SELECT * FROM read_text('/etc/hostname')",
    "glob": "SELECT * FROM runs WHERE run_id IN (SELECT file FROM glob('*'))",
    "file_as_table": "SELECT * FROM '/etc/passwd'",
    "query_function": "SELECT * FROM query('SELECT * FROM run_journal')",
    "settings_function": "SELECT * FROM duckdb_settings()",
    "getenv": "SELECT getenv('HOME')",
    "current_setting": "SELECT current_setting('threads')",
    "internal_table": "SELECT * FROM run_journal",
    "qualified_table": "SELECT * FROM main.runs",
    "show": "SHOW TABLES",
    "call": "CALL duckdb_settings()",
    "export": "EXPORT DATABASE 'dump'",
    "checkpoint": "CHECKPOINT",
    "explain": "EXPLAIN SELECT 1",
}


@asynccontextmanager
async def engine_at(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(tmp_path / "h.duckdb", workspace_root=tmp_path) as engine:
        yield engine


async def run(engine: Engine, workflow: dict[str, Any] = ECHO) -> str:
    run_id = await engine.submit(workflow)
    await engine.wait(run_id)
    return run_id


@pytest.mark.parametrize("view", list(CONTRACT_COLUMNS))
async def test_each_view_has_the_documented_columns(tmp_path: Path, view: str) -> None:
    async with engine_at(tmp_path) as engine:
        result = await engine.query(f"DESCRIBE {view}")
        assert [row[0] for row in result.rows] == CONTRACT_COLUMNS[view]


async def test_a_run_just_finished_is_in_the_runs_view(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        run_id = await run(engine)
        result = await engine.query("SELECT run_id, workflow_id, status, duration_ms FROM runs")
        assert result.columns == ["run_id", "workflow_id", "status", "duration_ms"]
        assert result.rows[0][:3] == [run_id, "hist", "succeeded"]
        assert result.rows[0][3] > 0


async def test_steps_view_names_each_steps_task_including_parallel_members(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        run_id = await run(engine)
        result = await engine.query(f"SELECT step_key, task, status FROM steps WHERE run_id = '{run_id}' ORDER BY 1")
        assert result.rows == [
            ["bad", "shell", "failed"],
            ["first", "echo", "succeeded"],
            ["left", "echo", "succeeded"],
        ]


async def test_failure_rate_per_step_is_one_group_by(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        for _ in range(3):
            await run(engine)
        result = await engine.query(
            "SELECT step_id, avg((status = 'failed')::INT) AS failure_rate FROM steps GROUP BY step_id ORDER BY step_id"
        )
        assert result.rows == [["bad", 1.0], ["first", 0.0], ["left", 0.0]]


async def test_json_columns_come_back_as_values_and_timestamps_as_iso(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await run(engine)
        result = await engine.query("SELECT data, ts FROM events WHERE type = 'step_completed' AND step_id = 'first'")
        data, ts = result.rows[0]
        assert data["output"] == {"value": 1}
        assert ts.endswith("Z") and "T" in ts


async def test_llm_calls_list_model_tokens_and_cost(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.agents.create(
            Agent(id="mock", name="Mock", model="openai/gpt-4o-mini", parameters={"mock_response": "hello there"})
        )
        workflow = {"id": "ask", "name": "Ask", "steps": [{"id": "q", "task": "llm_call", "with": {"agent": "mock", "prompt": "hi"}}]}  # fmt: skip
        run_id = await run(engine, workflow)
        result = await engine.query(
            "SELECT run_id, step_key, model, prompt_tokens, completion_tokens, cost_usd FROM llm_calls"
        )
        [[found_run, key, model, prompt_tokens, completion_tokens, cost]] = result.rows
        assert (found_run, key) == (run_id, "q")
        assert "gpt-4o-mini" in model
        assert prompt_tokens > 0 and completion_tokens > 0 and cost > 0


async def test_summarize_and_with_are_allowed(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await run(engine)
        summary = await engine.query("SUMMARIZE runs")
        assert "column_name" in summary.columns
        cte = await engine.query("WITH s AS (SELECT status FROM steps) SELECT count(*) FROM s")
        assert cte.rows == [[3]]


@pytest.mark.parametrize("sql", list(REFUSED.values()), ids=list(REFUSED))
async def test_forbidden_statements_are_refused(tmp_path: Path, sql: str) -> None:
    async with engine_at(tmp_path) as engine:
        with pytest.raises(QueryRefused) as refused:
            await engine.query(sql)
        assert refused.value.status == 400
        assert refused.value.details["views"] == sorted(CONTRACT_COLUMNS)


async def test_refusing_a_write_leaves_the_tables_unchanged(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await run(engine)
        with pytest.raises(QueryRefused):
            await engine.query("WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x")
        assert (await engine.query("SELECT count(*) FROM runs")).rows == [[1]]


async def test_rows_beyond_the_cap_are_cut_and_flagged(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        result = await engine.query("SELECT * FROM range(50)", max_rows=10)
        assert len(result.rows) == 10 and result.truncated
        assert not (await engine.query("SELECT * FROM range(10)", max_rows=10)).truncated


async def test_a_query_over_the_time_limit_is_interrupted(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        with pytest.raises(QueryFailed, match=r"longer than 0\.2 s"):
            await engine.query("SELECT count(*) FROM range(10000000000) a, range(1000000) b", timeout_s=0.2)


async def test_sql_errors_are_reported_not_raised_as_crashes(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        with pytest.raises(QueryFailed, match="nope"):
            await engine.query("SELECT nope FROM runs")
        with pytest.raises(QueryFailed, match="syntax error"):
            await engine.query("SELEC 1")


# -- over the REST API ------------------------------------------------------------


async def test_query_endpoint_answers_columns_rows_truncated(api: Api) -> None:
    reply = await api("POST", "query", body={"sql": "SELECT status, count(*) AS n FROM runs GROUP BY status"})
    assert reply.status == 200
    assert reply.body == {"columns": ["status", "n"], "rows": [], "truncated": False}


async def test_query_endpoint_refuses_with_a_json_error(api: Api) -> None:
    reply = await api("POST", "query", body={"sql": "SELECT * FROM read_csv('/etc/passwd')"})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "query_refused"
    assert "read_csv" in reply.body["error"]["message"]


async def test_query_endpoint_names_a_missing_field(api: Api) -> None:
    reply = await api("POST", "query", body={"query": "SELECT 1"})
    assert reply.status == 422
    assert {p.get("field") for p in reply.body["error"]["details"]} >= {"sql"}
