"""The history SQL door against the attacks of security issue #15: CTE shadowing, string-named
tables reading files, URLs, results of hundreds of megabytes, and slow queries holding up the
engine's reads. Each attack is tried with the guard in front (it is refused) and, where it
matters, with the guard taken away (the sandbox's DuckDB refuses it by itself)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import duckdb
import pytest
from conftest_server import Api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion_jupyter import Agent, Engine
from clarion_jupyter.storage import query as history
from clarion_jupyter.storage.query import VIEWS, QueryFailed, QueryRefused, check_query

pytestmark = pytest.mark.timeout(120)

INTERNAL_TABLES = ["agents", "run_journal", "step_runs", "workflows", "workflow_snapshots"]
MARKER = "MARKER-7f3a"
"""Stored in every internal table (an agent's prompt, a workflow's name, a run's input): no
answer may ever contain it."""
TOKEN = "0123456789abcdef-jupyter-token"
WORKFLOW = {"id": "w", "name": MARKER, "steps": [{"id": "s", "task": "echo", "with": {"value": 1}}]}


@asynccontextmanager
async def engine_with_secrets(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine whose internal tables all hold :data:`MARKER`, with one finished run."""
    async with Engine(tmp_path / "h.duckdb", workspace_root=tmp_path) as engine:
        await engine.agents.create(Agent(id="a", name="A", model="openai/gpt-4o", system_prompt=MARKER))
        await engine.workflows.create(WORKFLOW)
        await engine.wait(await engine.submit(WORKFLOW))
        yield engine


def runtime_file(tmp_path: Path) -> Path:
    path = tmp_path / "jpserver-4242.json"
    path.write_text(json.dumps({"token": TOKEN, "port": 8888}))
    return path


def without_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the second wall away, to show what the sandbox does on its own."""
    monkeypatch.setattr(history, "check_query", lambda con, sql: None)


# -- the bypasses of the issue, with the guard -------------------------------------------


@pytest.mark.parametrize("table", INTERNAL_TABLES)
async def test_a_cte_named_like_a_table_does_not_reach_that_table(tmp_path: Path, table: str) -> None:
    async with engine_with_secrets(tmp_path) as engine:
        with pytest.raises(QueryRefused, match=f"unknown table '{table}'"):
            await engine.query(f"WITH {table} AS (SELECT * FROM {table}) SELECT * FROM {table}")


async def test_a_cte_in_a_subquery_does_not_let_a_file_be_read_elsewhere(tmp_path: Path) -> None:
    path = runtime_file(tmp_path)
    async with engine_with_secrets(tmp_path) as engine:
        with pytest.raises(QueryRefused) as refused:
            await engine.query(f"SELECT * FROM (WITH \"{path}\" AS (SELECT 1) SELECT 1) x, '{path}'")
        assert TOKEN not in json.dumps(refused.value.as_dict())


@pytest.mark.parametrize("guarded", [True, False], ids=["guard", "sandbox_alone"])
async def test_errors_do_not_tell_whether_a_path_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guarded: bool
) -> None:
    existing, missing = runtime_file(tmp_path), tmp_path / "jpserver-9999.json"
    if not guarded:
        without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        messages = []
        for path in (existing, missing):
            with pytest.raises((QueryRefused, QueryFailed)) as refused:
                await engine.query(f"SELECT * FROM read_json('{path}')")
            messages.append(refused.value.message.replace(str(path), "PATH"))
    assert messages[0] == messages[1]


async def test_a_url_named_table_is_refused(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/data.csv"
    async with engine_with_secrets(tmp_path) as engine:
        with pytest.raises(QueryRefused, match="unknown table"):
            await engine.query(f"SELECT * FROM (WITH \"{url}\" AS (SELECT 1) SELECT 1) x, '{url}'")


async def test_a_cte_still_names_its_own_query_and_those_after_it(tmp_path: Path) -> None:
    async with engine_with_secrets(tmp_path) as engine:
        result = await engine.query(
            "WITH a AS (SELECT status FROM runs), b AS (SELECT * FROM a) SELECT (SELECT count(*) FROM b), count(*) FROM a"
        )
        assert result.rows == [[1, 1]]


async def test_a_recursive_cte_reads_itself(tmp_path: Path) -> None:
    async with engine_with_secrets(tmp_path) as engine:
        result = await engine.query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT sum(i) FROM n"
        )
        assert result.rows == [[15]]


# -- the sandbox on its own (the guard taken away) -------------------------------------


@pytest.mark.parametrize("table", INTERNAL_TABLES)
async def test_without_the_guard_internal_tables_do_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str
) -> None:
    without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        with pytest.raises(QueryFailed, match="does not exist"):
            await engine.query(f"SELECT * FROM {table}")


async def test_without_the_guard_the_engine_database_is_not_reachable_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        databases = await engine.query("SELECT database_name FROM duckdb_databases() WHERE NOT internal")
        assert databases.rows == [["memory"]]
        with pytest.raises(QueryFailed):
            await engine.query("SELECT * FROM h.main.agents")


async def test_without_the_guard_files_are_refused_by_duckdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = runtime_file(tmp_path)
    without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        for sql in (f"SELECT * FROM '{path}'", f"SELECT * FROM read_text('{path}')", f"SELECT * FROM read_json('{path}')",
                    f"SELECT * FROM glob('{tmp_path}/*')"):  # fmt: skip
            with pytest.raises(QueryFailed) as failed:
                await engine.query(sql)
            assert TOKEN not in json.dumps(failed.value.as_dict())
            assert "disabled by configuration" in failed.value.message


async def test_without_the_guard_a_url_installs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        for sql in (
            "SELECT * FROM 'http://127.0.0.1:9/data.csv'",
            "SELECT * FROM read_csv('https://127.0.0.1:9/x.csv')",
        ):
            with pytest.raises(QueryFailed, match="disabled by configuration"):
                await engine.query(sql)


async def test_without_the_guard_python_variables_are_not_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        with pytest.raises(QueryFailed, match="does not exist"):
            await engine.query("SELECT * FROM sql")  # a local variable of the function that runs it


@pytest.mark.parametrize(
    "sql",
    ["SET enable_external_access = true", "RESET lock_configuration", "INSTALL httpfs", "LOAD httpfs",
     "ATTACH 'other.duckdb'", "COPY (SELECT 1) TO 'out.csv'", "EXPORT DATABASE 'dump'", "PRAGMA enable_profiling"],
)  # fmt: skip
async def test_without_the_guard_settings_files_and_extensions_stay_shut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sql: str
) -> None:
    """The statement-type guard is the first to refuse these (tests/test_history_query.py); here
    DuckDB refuses them too."""
    without_guard(monkeypatch)
    async with engine_with_secrets(tmp_path) as engine:
        with pytest.raises(QueryFailed):
            await engine.query(sql)
        setting = await engine.query("SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access'")
        assert setting.rows == [["false"]]
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "dump").exists()


# -- the guard's CTE scoping, as a property ---------------------------------------------

SECRET_FILE = "'SECRET_FILE'"
"""Stands for the path of a file holding the marker, filled in when a statement is tried."""
NAMES = st.sampled_from(["agents", "run_journal", "workflows", "runs", "steps", "x", SECRET_FILE])


def _ident(name: str) -> str:
    return name if not name.startswith("'") else f'"{name[1:-1]}"'


def queries(depth: int = 3) -> st.SearchStrategy[str]:
    """SELECTs over arbitrary nestings of CTEs, subqueries, aliases and unions, whose table
    and CTE names collide on purpose with the internal tables, the views and a file."""
    leaf = NAMES.map(lambda name: f"SELECT * FROM {name}")
    if depth == 0:
        return leaf
    inner = queries(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(NAMES, inner, inner).map(lambda t: f"WITH {_ident(t[0])} AS ({t[1]}) {t[2]}"),
        st.tuples(NAMES, NAMES, inner, inner).map(
            lambda t: f"WITH {_ident(t[0])} AS ({t[2]}), {_ident(t[1])} AS ({t[3]}) SELECT * FROM {t[1]}"
        ),
        st.tuples(inner, st.sampled_from(["a", "agents", "runs"])).map(lambda t: f"SELECT * FROM ({t[0]}) AS {t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"SELECT * FROM ({t[0]}) l, ({t[1]}) r"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]} UNION ALL BY NAME {t[1]}"),
        st.tuples(inner, NAMES).map(lambda t: f"SELECT * FROM {t[1]} WHERE EXISTS ({t[0]})"),
    )


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "secret.csv"
    path.write_text(f"secret\n{MARKER}\n")
    return path


@pytest.fixture(scope="module")
def raw_database() -> duckdb.DuckDBPyConnection:
    """An unprotected DuckDB holding the internal tables (with the marker), the views as tables,
    and what the guard must know: whatever it lets through, DuckDB runs here without any
    other protection, so an accepted statement that reached a table or the file would show
    the marker."""
    con = duckdb.connect()
    for table in ("agents", "run_journal", "workflows"):
        con.execute(f"CREATE TABLE {table} AS SELECT '{MARKER}' AS secret")
    for view in VIEWS:
        con.execute(f"CREATE TABLE {view} AS SELECT 'public' AS secret")
    return con


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=queries())
def test_whatever_the_guard_accepts_reads_no_internal_table_nor_file(
    raw_database: duckdb.DuckDBPyConnection, secret_file: Path, sql: str
) -> None:
    sql = sql.replace(SECRET_FILE, f"'{secret_file}'").replace('"SECRET_FILE"', f'"{secret_file}"')
    try:
        check_query(raw_database, sql)
    except (QueryRefused, QueryFailed):
        return
    try:
        rows = raw_database.execute(sql).fetchall()
    except duckdb.Error:
        return  # DuckDB itself rejects it (e.g. a CTE that refers to itself without RECURSIVE)
    assert MARKER not in json.dumps(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=queries(depth=2))
def test_whatever_the_sandbox_runs_without_the_guard_shows_no_secret(
    tmp_path_factory: pytest.TempPathFactory, secret_file: Path, sql: str
) -> None:
    """The same nestings, with no guard at all, through a real engine's sandbox."""
    tmp_path = tmp_path_factory.mktemp("sandbox")
    sql = sql.replace(SECRET_FILE, f"'{secret_file}'").replace('"SECRET_FILE"', f'"{secret_file}"')

    async def attempt() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(history, "check_query", lambda con, sql: None)
            async with engine_with_secrets(tmp_path) as engine:
                try:
                    result = await engine.query(sql)
                except QueryFailed:
                    return
                assert MARKER not in result.body.decode()

    asyncio.run(attempt())


# -- what the sandbox streams -------------------------------------------------------------

SAME_ANSWERS = [
    "SELECT count(*) FROM events",
    "SELECT run_id FROM runs WHERE status = 'succeeded' AND inputs IS NOT NULL",
    "SELECT r FROM runs r",
    "SELECT to_json(e) FROM events e ORDER BY seq",
    "SELECT * FROM runs NATURAL JOIN (SELECT run_id, status, step_key FROM steps)",
    "SELECT count(*) FROM runs WHERE outputs IS NULL",
    "SELECT step_key, task, data FROM steps JOIN events USING (run_id) WHERE events.step_id = steps.step_id ORDER BY seq",
    "SUMMARIZE events",
    "SELECT columns('.*_at') FROM runs",
]


@pytest.mark.parametrize("sql", SAME_ANSWERS)
async def test_streaming_only_the_columns_read_answers_as_the_views_do(tmp_path: Path, sql: str) -> None:
    """Columns a plan does not read arrive as NULLs: a query must not be able to tell."""
    async with engine_with_secrets(tmp_path) as engine:
        sandboxed = (await engine.query(sql)).rows
    con = duckdb.connect(str(tmp_path / "h.duckdb"))
    for name, body in VIEWS.items():
        con.execute(f"CREATE TEMP VIEW {name} AS {body.format(db='h.main')}")
    cursor = con.execute(sql)
    json_columns = [str(d[1]) == "JSON" for d in cursor.description]
    direct = [[history._json_value(v, j) for v, j in zip(row, json_columns, strict=True)] for row in cursor.fetchall()]
    con.close()
    assert sandboxed == direct and sandboxed


@pytest.mark.parametrize(
    ("sql", "streamed"),
    [
        ("SELECT status, count(*) FROM runs GROUP BY status", {"runs": ["status"]}),
        ("SELECT workflow_id, sum(cost_usd) FROM runs WHERE status = 'failed' GROUP BY ALL",
         {"runs": ["workflow_id", "status", "cost_usd"]}),
        ("SELECT count(*) FROM events", {"events": ["__row"]}),
    ],
)  # fmt: skip
async def test_only_the_columns_a_plan_reads_are_streamed_from_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sql: str, streamed: dict[str, list[str]]
) -> None:
    """Every streamed column costs the engine an Arrow conversion and the sandbox a scan, NULL or
    not (a GROUP BY over a million runs took twice as long with the others as NULLs)."""
    queries: list[str] = []
    made = history._LiveView.__init__

    def recording(self: history._LiveView, cursor: object, sql: str, opened: list[object]) -> None:
        queries.append(sql)
        made(self, cursor, sql, opened)

    monkeypatch.setattr(history._LiveView, "__init__", recording)
    async with engine_with_secrets(tmp_path) as engine:
        await engine.query(sql)
        cursor = engine.storage._db.cursor()
        try:
            columns = [[c for c, *_ in cursor.execute(f"DESCRIBE {query}").fetchall()] for query in queries]
        finally:
            cursor.close()
    assert dict(zip(streamed, columns, strict=True)) == streamed


async def test_a_plan_whose_shape_is_not_understood_streams_every_view_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another DuckDB version may describe its plans differently: the answers stay right."""
    monkeypatch.setattr(history.HistorySandbox, "_columns_read", lambda self, planner, sql: {})
    async with engine_with_secrets(tmp_path) as engine:
        result = await engine.query("SELECT count(*), count(inputs) FROM runs WHERE status = 'succeeded'")
    assert result.rows == [[1, 1]]


# -- bounded answers -------------------------------------------------------------------------


async def test_a_300_mb_result_stops_at_the_byte_cap(tmp_path: Path) -> None:
    async with engine_with_secrets(tmp_path) as engine:
        result = await engine.query("SELECT repeat('x', 1000000) AS v FROM range(300)", max_bytes=20 * 1024 * 1024)
    body = result.body
    assert result.truncated
    assert 15 <= len(result.rows) <= 20
    assert len(body) <= 20 * 1024 * 1024
    assert json.loads(body) == result.as_dict()


async def test_a_result_under_the_byte_cap_is_whole(tmp_path: Path) -> None:
    async with engine_with_secrets(tmp_path) as engine:
        result = await engine.query("SELECT range AS i FROM range(1000)", max_bytes=10_000)
    assert not result.truncated and len(result.rows) == 1000


async def test_two_slow_queries_do_not_hold_up_the_engines_reads(tmp_path: Path) -> None:
    slow = "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"
    async with engine_with_secrets(tmp_path) as engine:
        queries = [asyncio.ensure_future(engine.query(slow, timeout_s=6)) for _ in range(2)]
        await asyncio.sleep(0.5)  # both are running
        start = time.perf_counter()
        runs, _ = await engine.list_runs()
        listed_in = time.perf_counter() - start
        assert not any(q.done() for q in queries)
        for failed in await asyncio.gather(*queries, return_exceptions=True):
            assert isinstance(failed, QueryFailed)
    assert len(runs) == 1
    assert listed_in < 2.0


# -- over the REST API ---------------------------------------------------------------------


@pytest.mark.clarion(max_query_bytes=1000)
async def test_the_endpoint_caps_the_answer_at_the_configured_bytes(api: Api) -> None:
    reply = await api("POST", "query", body={"sql": "SELECT repeat('y', 100) AS v FROM range(50)"})
    assert reply.status == 200
    assert reply.body["truncated"] is True
    assert 5 <= len(reply.body["rows"]) <= 9
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_the_endpoint_refuses_a_cte_shadowing_a_table(api: Api) -> None:
    reply = await api("POST", "query", body={"sql": "WITH agents AS (SELECT * FROM agents) SELECT * FROM agents"})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "query_refused"
