"""DuckDB storage on real files: migrations and upgrades, the single-process lock, the run
and document stores, the group-commit writer, and the in-process event bus."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pytest

from clarion_jupyter.core.errors import Conflict, DatabaseLocked
from clarion_jupyter.core.ids import new_run_id, run_id_floor
from clarion_jupyter.storage import journal
from clarion_jupyter.storage import writer as writer_module
from clarion_jupyter.storage.database import Database, connect, migrate, migrations
from clarion_jupyter.storage.documents import DuckDBDocumentStore
from clarion_jupyter.storage.records import (
    Batch,
    Event,
    RunRecord,
    StepRecord,
    digest,
    utcnow,
)
from clarion_jupyter.storage.runs import LIST_FILTERS_KEPT, DuckDBRunStore
from clarion_jupyter.storage.writer import GroupCommitWriter
from clarion_jupyter.workflow.bus import EventBus, SubscriptionOverflow

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@asynccontextmanager
async def open_db(path: Path) -> AsyncIterator[Database]:
    db = Database(path)
    await db.start()
    try:
        yield db
    finally:
        await db.close()


def run_record(run_id: str, workflow_id: str = "wf", status: str = "running", **kw: Any) -> RunRecord:
    """A new run as the engine makes it: its workflow document is stored once per digest."""
    document = {"id": workflow_id, "name": f"Workflow {workflow_id}", "steps": [{"id": "a", "task": "echo"}]}
    fields: dict[str, Any] = {
        "workflow_name": f"Workflow {workflow_id}",
        "workflow": document,
        "workflow_digest": digest(document),
        "inputs": {"report": "bug.md", "n": 3},
        "created_at": T0,
    }
    fields.update(kw)
    return RunRecord(run_id=run_id, workflow_id=workflow_id, status=status, **fields)


def step_record(run_id: str, key: str = "a", attempt: int = 1, status: str = "running", **kw: Any) -> StepRecord:
    fields: dict[str, Any] = {"step_id": key.split("[")[0], "item_index": None, "started_at": T0}
    fields.update(kw)
    return StepRecord(run_id=run_id, key=key, attempt=attempt, status=status, **fields)


def event(run_id: str, seq: int, type_: str = "step_started", step_id: str | None = "a", **data: Any) -> Event:
    return Event(seq=seq, type=type_, run_id=run_id, step_id=step_id, ts=T0 + timedelta(milliseconds=seq), data=data)


def batch(*records: RunRecord | StepRecord | Event) -> Batch:
    out = Batch()
    for r in records:
        if isinstance(r, RunRecord):
            out.runs[r.run_id] = r
        elif isinstance(r, StepRecord):
            out.steps[(r.run_id, r.key, r.attempt)] = r
        else:
            out.events.append(r)
    return out


def columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}


# =========================================================================== migrations


def test_migrations_are_numbered_and_ordered() -> None:
    found = migrations()
    versions = [v for v, _, _ in found]
    assert versions == sorted(versions) == list(range(1, len(found) + 1))
    assert found[0][1] == "initial"


def test_migrations_apply_in_order_and_are_recorded(tmp_path: Path) -> None:
    con = connect(tmp_path / "db.duckdb")
    try:
        applied = migrate(con)
        assert applied == [v for v, _, _ in migrations()]
        rows = con.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
        assert [(v, n) for v, n, _ in rows] == [(v, n) for v, n, _ in migrations()]
        assert all(isinstance(ts, datetime) for _, _, ts in rows)
        assert {"runs", "step_runs", "events", "agents", "workflows"} <= {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
    finally:
        con.close()


def test_migrate_stops_at_the_target_version(tmp_path: Path) -> None:
    con = connect(tmp_path / "db.duckdb")
    try:
        assert migrate(con, target=1) == [1]
        assert "usage" not in columns(con, "runs")
        assert migrate(con) == [v for v, _, _ in migrations() if v > 1]
        assert "usage" in columns(con, "runs")
    finally:
        con.close()


def test_reopening_a_migrated_file_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    for expected in ([v for v, _, _ in migrations()], [], []):
        con = connect(path)
        try:
            assert migrate(con) == expected
        finally:
            con.close()
    con = connect(path)
    try:
        assert con.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(migrations()),)
    finally:
        con.close()


def test_connect_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "clarion.duckdb"
    connect(path).close()
    assert path.exists()


async def test_upgrade_from_the_first_migration_keeps_data_and_adds_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = connect(path)
    migrate(con, target=1)
    con.execute("INSERT INTO workflow_snapshots VALUES ('d1', '{\"id\": \"wf\"}')")
    con.execute(
        "INSERT INTO runs (run_id, workflow_id, workflow_name, workflow_digest, inputs, status, idempotency_key,"
        " created_at, started_at, finished_at, outputs, error) VALUES"
        " ('r1', 'wf', 'Old flow', 'd1', '{\"x\": 1}', 'succeeded', 'k1',"
        " TIMESTAMP '2025-01-02 03:04:05', TIMESTAMP '2025-01-02 03:04:06', TIMESTAMP '2025-01-02 03:04:07',"
        ' \'{"label": "bug"}\', NULL)'
    )
    con.execute(
        "INSERT INTO step_runs VALUES ('r1', 'a', 'a', NULL, 1, 'succeeded',"
        " TIMESTAMP '2025-01-02 03:04:06', TIMESTAMP '2025-01-02 03:04:07', '{\"value\": 42}', NULL)"
    )
    con.execute("INSERT INTO events VALUES ('r1', 1, 'run_queued', NULL, TIMESTAMP '2025-01-02 03:04:05', '{}')")
    con.execute("INSERT INTO agents VALUES ('triager', '{\"id\": \"triager\"}', now()::TIMESTAMP, now()::TIMESTAMP)")
    con.execute(
        "INSERT INTO workflows VALUES ('wf', '{\"id\": \"wf\"}', 'name: Old flow', now()::TIMESTAMP, now()::TIMESTAMP)"
    )
    con.close()

    async with open_db(path) as db:
        runs = DuckDBRunStore(db)
        stored = await runs.get_run("r1")
        assert stored is not None
        run, steps = stored
        assert (run.workflow_id, run.workflow_name, run.status, run.idempotency_key) == (
            "wf",
            "Old flow",
            "succeeded",
            "k1",
        )
        assert run.inputs == {"x": 1} and run.outputs == {"label": "bug"} and run.workflow == {"id": "wf"}
        assert run.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert run.usage is None
        assert [(s.key, s.status, s.output, s.usage) for s in steps] == [("a", "succeeded", {"value": 42}, None)]
        assert [(e.seq, e.type) for e in await runs.events("r1")] == [(1, "run_queued")]
        assert (await DuckDBDocumentStore(db, "agents").get("triager")).doc == {"id": "triager"}
        wf = await DuckDBDocumentStore(db, "workflows", with_source=True).get("wf")
        assert wf.doc == {"id": "wf"} and wf.source == "name: Old flow"
        # the upgraded schema accepts the new columns
        await runs.write(
            batch(run_record("r2", usage={"prompt_tokens": 5}), step_record("r2", usage={"cost_usd": 0.1}))
        )
        run2, (step2,) = await runs.get_run("r2")
        assert run2.usage == {"prompt_tokens": 5} and step2.usage == {"cost_usd": 0.1}

    con = connect(path)
    try:
        assert "usage" in columns(con, "runs") and "usage" in columns(con, "step_runs")
        versions = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
        assert versions == [v for v, _, _ in migrations()]
        assert migrate(con) == []
    finally:
        con.close()


# =========================================================================== the lock


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


def test_a_second_process_gets_database_locked_naming_the_file_and_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseLocked) as info:
            connect(path)
        err = info.value
        assert str(path) in err.message
        assert f"PID {child.pid}" in err.message
        assert "--db" in err.message  # says what to do about it
        assert err.details == {"path": str(path), "pid": child.pid}
        assert err.status == 409 and err.code == "database_locked"
    finally:
        child.kill()
        child.wait(timeout=10)
    # once the holder is gone, the file opens
    connect(path).close()


# =========================================================================== run store


async def test_runs_steps_and_events_round_trip(tmp_path: Path) -> None:
    run = run_record(
        "r1",
        status="succeeded",
        idempotency_key="key-1",
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=5),
        outputs={"label": "bug", "nested": [1, {"a": None}]},
        error=None,
        usage={"prompt_tokens": 10, "completion_tokens": 3, "cost_usd": 0.002},
    )
    steps = [
        step_record("r1", "a", status="succeeded", output={"value": "x"}, finished_at=T0 + timedelta(seconds=2)),
        step_record(
            "r1", "m[0]", step_id="m", item_index=0, status="failed", started_at=T0 + timedelta(seconds=3),
            error={"message": "boom", "type": "TaskFailed"}, usage={"prompt_tokens": 1},
        ),
        step_record("r1", "m[0]", attempt=2, step_id="m", item_index=0, status="pending", started_at=None),
    ]  # fmt: skip
    events = [event("r1", 1, "run_queued", None), event("r1", 2, "step_completed", "a", output={"v": [1, 2]})]
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(run, *steps, *events))
        stored = await store.get_run("r1")
        assert stored is not None
        got_run, got_steps = stored
        assert got_run == run
        assert got_steps == steps  # ordered by started_at (NULLS LAST), key, attempt
        assert await store.events("r1") == events
        assert await store.get_run("nope") is None


async def test_timestamps_come_back_as_utc_whatever_zone_they_were_written_in(tmp_path: Path) -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(run_record("r1", created_at=datetime(2026, 1, 1, 14, 0, tzinfo=plus2))))
        run, _ = await store.get_run("r1")
        assert run.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert run.created_at.utcoffset() == timedelta(0)


async def test_writing_the_same_step_attempt_again_updates_it(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        run, step = run_record("r1"), step_record("r1", "a", status="running")
        await store.write(batch(run, step))
        # the engine goes on mutating the records it has written, and writes them again
        step.status, step.output, step.finished_at, step.usage = (
            "succeeded",
            {"value": 1},
            T0 + timedelta(seconds=1),
            {"p": 1},
        )
        run.status, run.outputs = "succeeded", {"o": 1}
        await store.write(batch(run, step))
        got_run, got_steps = await store.get_run("r1")
        assert got_run.status == "succeeded" and got_run.outputs == {"o": 1}
        assert got_steps == [step]


async def test_records_read_back_from_the_store_update_their_rows(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    async with open_db(path) as db:
        await DuckDBRunStore(db).write(batch(run_record("r1"), step_record("r1", "a", status="running")))
    async with open_db(path) as db:  # as when a run resumes after a restart
        store = DuckDBRunStore(db)
        (active,) = await store.active_runs()
        active.run.status = "succeeded"
        active.steps[0].status = "succeeded"
        await store.write(batch(active.run, active.steps[0]))
        run, steps = await store.get_run("r1")
        assert run.status == "succeeded" and [s.status for s in steps] == ["succeeded"]
        assert await store.active_runs() == []


async def test_a_new_attempt_is_a_new_row(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(run_record("r1"), step_record("r1", "a", 1, "failed")))
        await store.write(batch(step_record("r1", "a", 2, "succeeded", started_at=T0 + timedelta(seconds=1))))
        _, steps = await store.get_run("r1")
        assert [(s.attempt, s.status) for s in steps] == [(1, "failed"), (2, "succeeded")]


async def test_upserting_a_run_keeps_its_identity_and_inputs(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        run = run_record("r1", status="queued", idempotency_key="k")
        await store.write(batch(run))
        run.status, run.error, run.finished_at = "failed", {"message": "x"}, T0 + timedelta(seconds=9)
        run.inputs = {"changed": True}  # inputs are fixed at submission; an update does not rewrite them
        run.idempotency_key = None
        await store.write(batch(run))
        run, _ = await store.get_run("r1")
        assert run.status == "failed" and run.error == {"message": "x"}
        assert run.inputs == {"report": "bug.md", "n": 3} and run.idempotency_key == "k"


async def test_list_runs_is_newest_first_with_cursor_paging(tmp_path: Path) -> None:
    # run ids are time-ordered (engine.new_run_id): a larger id is a newer run
    ids = [f"run{i:03d}" for i in range(7)]
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(*(run_record(r, created_at=T0 + timedelta(seconds=i)) for i, r in enumerate(ids))))
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await store.list_runs(limit=3, cursor=cursor)
            pages += 1
            seen += [r.run_id for r in page.runs]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == list(reversed(ids))
        assert pages == 3
        exact = await store.list_runs(limit=7)
        assert len(exact.runs) == 7 and exact.next_cursor is None
        # summaries leave out the workflow document
        assert exact.runs[0].workflow == {} and exact.runs[0].inputs == {"report": "bug.md", "n": 3}


async def test_list_pages_are_whole_however_far_apart_in_time_the_runs_are(tmp_path: Path) -> None:
    """A page is looked for in growing windows of time before its cursor (storage/runs.py):
    runs minutes, hours, days, months and years apart, and one from a clock ahead, all come,
    newest first, with and without filters, whatever the page size."""
    now = utcnow()
    ages = [timedelta(minutes=-5), timedelta(0), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=20),
            timedelta(days=3), timedelta(days=30), timedelta(days=200), timedelta(days=1200)]  # fmt: skip
    runs = [
        run_record(
            f"{run_id_floor(int((now - age).timestamp() * 1000))}{i:014x}",
            workflow_id="alpha" if i % 2 else "beta",
            status="failed" if i % 3 == 0 else "succeeded",
        )
        for i, age in enumerate(ages)
    ]
    newest_first = sorted(runs, key=lambda r: r.run_id, reverse=True)
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(*runs))

        async def every_page(limit: int, **filters: Any) -> list[str]:
            seen, cursor = [], None
            while True:
                page = await store.list_runs(limit=limit, cursor=cursor, **filters)
                seen += [r.run_id for r in page.runs]
                if page.next_cursor is None:
                    return seen
                cursor = page.next_cursor

        for limit in (1, 2, 4, 50):
            assert await every_page(limit) == [r.run_id for r in newest_first]
            for filters in (
                {"workflow_id": "alpha"},
                {"status": "failed"},
                {"workflow_id": "beta", "status": "failed"},
            ):
                expected = [r.run_id for r in newest_first if all(getattr(r, k) == v for k, v in filters.items())]
                assert await every_page(limit, **filters) == expected, (limit, filters)


async def test_the_list_remembers_windows_for_a_bounded_number_of_filters(tmp_path: Path) -> None:
    """A server lists with whatever filters clients send: what it learns from them stays bounded."""
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        filters = LIST_FILTERS_KEPT + 50
        await store.write(batch(*(run_record(new_run_id(), workflow_id=f"w{i % filters}") for i in range(2 * filters))))
        for i in range(filters):
            await store.list_runs(workflow_id=f"w{i}", limit=1)
            await store.list_runs(limit=1)
        assert len(store._windows._by_filter) <= LIST_FILTERS_KEPT
        assert (None, None) in store._windows._by_filter, "the filter listed last is kept"


async def test_list_runs_filters_by_workflow_and_status(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(
            batch(
                run_record("r1", "alpha", "succeeded"),
                run_record("r2", "beta", "failed"),
                run_record("r3", "alpha", "failed"),
                run_record("r4", "alpha", "running"),
            )
        )

        async def ids(**kw: Any) -> list[str]:
            return [r.run_id for r in (await store.list_runs(**kw)).runs]

        assert await ids(workflow_id="alpha") == ["r4", "r3", "r1"]
        assert await ids(status="failed") == ["r3", "r2"]
        assert await ids(workflow_id="alpha", status="failed") == ["r3"]
        assert await ids(workflow_id="gamma") == []
        page = await store.list_runs(workflow_id="alpha", limit=1, cursor="r4")
        assert [r.run_id for r in page.runs] == ["r3"] and page.next_cursor == "r3"


async def test_events_since_n_returns_only_later_events_in_order(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(*(event("r1", s) for s in (3, 1, 2)), event("r2", 1)))
        await store.write(batch(event("r1", 4), event("r1", 5)))
        assert [e.seq for e in await store.events("r1")] == [1, 2, 3, 4, 5]
        assert [e.seq for e in await store.events("r1", since=3)] == [4, 5]
        assert [e.seq for e in await store.events("r1", since=1, limit=2)] == [2, 3]
        assert await store.events("r1", since=5) == []
        assert [e.run_id for e in await store.events("r2")] == ["r2"]


async def test_find_idempotent_finds_the_run_by_workflow_and_key(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(
            batch(run_record("r1", "alpha", idempotency_key="k1"), run_record("r2", "beta", idempotency_key="k1"))
        )
        assert await store.find_idempotent("alpha", "k1") == "r1"
        assert await store.find_idempotent("beta", "k1") == "r2"
        assert await store.find_idempotent("alpha", "k2") is None


async def test_active_runs_are_queued_and_running_runs_with_steps_and_last_seq(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(
            batch(
                run_record("r1", status="queued"),
                event("r1", 1, "run_queued", None),
                run_record("r2", status="running"),
                step_record("r2", "a", 1, "failed"),
                step_record("r2", "a", 2, "running"),
                step_record("r2", "b", 1, "pending", started_at=None),
                *(event("r2", s) for s in range(1, 8)),
                run_record("r3", status="succeeded"),
                event("r3", 1),
                run_record("r4", status="failed"),
                run_record("r5", status="cancelled"),
            )
        )
        active = await store.active_runs()
        assert [(a.run.run_id, a.run.status, a.last_seq) for a in active] == [("r1", "queued", 1), ("r2", "running", 7)]
        assert active[1].run.workflow["id"] == "wf"  # resuming needs the workflow document
        assert [(s.key, s.attempt, s.status) for s in active[1].steps] == [
            ("a", 1, "failed"),
            ("a", 2, "running"),
            ("b", 1, "pending"),
        ]
        assert active[0].steps == []
        assert await store.count_active("wf") == 2
        assert await store.count_active("other") == 0


async def test_a_run_with_no_events_has_last_seq_zero(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(run_record("r1", status="queued")))
        (active,) = await store.active_runs()
        assert active.last_seq == 0


async def test_a_repeated_event_seq_keeps_the_first_event_and_does_not_stall_the_projection(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(event("r1", 1, note="first")))
        await store.project()
        await store.write(batch(run_record("r1"), event("r1", 2), event("r1", 1, note="again")))
        await store.project()
        assert [(e.seq, e.data) for e in await store.events("r1")] == [(1, {"note": "first"}), (2, {})]
        assert await store.get_run("r1") is not None


async def projected_states(db: Database) -> list[tuple[str, str]]:
    rows = "SELECT run_id, status FROM runs UNION ALL SELECT run_id || '/' || key, status FROM step_runs ORDER BY 1"
    return await db.read(lambda c: c.execute(rows).fetchall())


async def test_a_run_projected_again_has_its_rows_updated_and_new_runs_are_inserted_at_the_first_try(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows the store projected before are upserted; the rest are plain inserts, which leave
    nothing on DuckDB's heap (``bench/duckdb_heap.py``): no projection here needs its retry."""
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        run, step = run_record("r1", status="running"), step_record("r1")
        await store.write(batch(run, step, event("r1", 1)))
        await store.project()
        run.status, step.status = "succeeded", "succeeded"
        await store.write(batch(run, step, run_record("r2", status="queued")))
        with caplog.at_level(logging.INFO, logger="clarion_jupyter.storage.journal"):
            await store.project()
        assert await projected_states(db) == [("r1", "succeeded"), ("r1/a", "succeeded"), ("r2", "queued")]
    assert "stored already" not in caplog.text


async def test_a_run_stored_before_this_store_opened_is_updated_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run resumed after a restart is in the tables but not among the keys this store
    projected: its next state is projected again, as updates."""
    path = tmp_path / "db.duckdb"
    run, step = run_record("r1", status="running"), step_record("r1")
    async with open_db(path) as db:
        store = DuckDBRunStore(db)
        await store.write(batch(run, step, event("r1", 1)))
        await store.close()
    run.status, step.status = "succeeded", "succeeded"
    async with open_db(path) as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        await store.write(batch(run, step, event("r1", 2), run_record("r2", status="queued")))
        with caplog.at_level(logging.INFO, logger="clarion_jupyter.storage.journal"):
            await store.project()
        assert await projected_states(db) == [("r1", "succeeded"), ("r1/a", "succeeded"), ("r2", "queued")]
        assert [e.seq for e in await store.events("r1")] == [1, 2]
    assert "stored already" in caplog.text


async def test_a_run_the_store_no_longer_remembers_projecting_is_still_updated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys remembered are bounded: a run waiting all day is forgotten, and still updated."""
    monkeypatch.setattr(journal, "MAX_PROJECTED_KEYS", 1)
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        waiting = run_record("r1", status="waiting")
        await store.write(batch(waiting))
        await store.project()
        await store.write(batch(run_record("r2", status="succeeded")))
        await store.project()
        waiting.status = "succeeded"
        await store.write(batch(waiting))
        await store.project()
        assert len(store._projected_runs) == 1
        assert await projected_states(db) == [("r1", "succeeded"), ("r2", "succeeded")]


async def test_a_batch_the_database_refused_writes_nothing_and_later_runs_keep_their_snapshot(
    tmp_path: Path,
) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        journal = db._con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'run_journal'").fetchone()[0]
        db._con.execute("ALTER TABLE run_journal RENAME TO run_journal_away")
        with pytest.raises(duckdb.CatalogException):
            await store.write(batch(run_record("r1"), event("r1", 1)))
        db._con.execute("DROP TABLE run_journal_away")
        db._con.execute(journal)
        # a later, valid write of another run of the same workflow (same snapshot digest)
        await store.write(batch(run_record("r2")))
        assert [r.run_id for r in (await store.list_runs()).runs] == ["r2"]
        assert await store.events("r1") == []
        stored = await store.get_run("r2")
        assert stored is not None, "run r2 was written but get_run cannot see it (its workflow snapshot is missing)"
        assert stored[0].workflow["id"] == "wf"


async def test_reads_see_journaled_state_before_any_projection_is_due(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        run = run_record("r1", status="queued", idempotency_key="k")
        await store.write(batch(run, event("r1", 1)))
        assert await store.find_idempotent("wf", "k") == "r1"
        assert [e.seq for e in await store.events("r1")] == [1]
        journaled = db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0]
        assert journaled == 3  # the snapshot, the run and the event: none projected yet
        run.status = "succeeded"
        await store.write(batch(run, event("r1", 2)))
        stored = await store.get_run("r1")
        assert stored is not None and stored[0].status == "succeeded"
        assert [r.status for r in (await store.list_runs()).runs] == ["succeeded"]
        assert [e.seq for e in await store.events("r1")] == [1, 2]


async def test_the_journal_is_projected_in_the_background_without_any_read(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db, projection_interval_s=0.05)
        await store.write(batch(run_record("r1", status="running"), step_record("r1"), event("r1", 1)))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 0:
                break
        tables = [db._con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "step_runs", "events")]
        assert tables == [1, 1, 1]
        assert db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 0


async def test_a_failed_projection_keeps_the_journal_and_says_why_until_one_succeeds(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        await store.recover()
        run = run_record("r1", status="running")
        await store.write(batch(run, event("r1", 1)))
        db._con.execute("ALTER TABLE runs RENAME TO runs_away")
        with pytest.raises(duckdb.CatalogException):
            await store.project()
        assert store.unprojected == 1 and "runs" in store.projection_error
        assert db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 3  # rolled back whole
        run.status = "succeeded"
        await store.write(batch(run, event("r1", 2)))  # newer state while the projection is failing
        db._con.execute("ALTER TABLE runs_away RENAME TO runs")
        await store.project()
        assert store.unprojected == 0 and store.projection_error is None
        assert [(r.run_id, r.status) for r in (await store.list_runs()).runs] == [("r1", "succeeded")]
        assert [e.seq for e in await store.events("r1")] == [1, 2]
        assert db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 0


async def test_closing_when_the_projection_fails_keeps_the_journal_for_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    async with open_db(path) as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        await store.write(batch(run_record("r1", status="succeeded"), event("r1", 1)))
        db._con.execute("ALTER TABLE runs RENAME TO runs_away")
        await store.close()  # logs the failure instead of failing the host's shutdown
        assert store.projection_error is not None
        db._con.execute("ALTER TABLE runs_away RENAME TO runs")
        assert db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 3
    async with open_db(path) as db:
        stored = await DuckDBRunStore(db).get_run("r1")
        assert stored is not None and stored[0].status == "succeeded"


async def test_a_journal_left_by_a_crash_is_folded_into_the_tables_at_recovery(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    async with open_db(path) as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        run, step = run_record("r1", status="running"), step_record("r1", status="running")
        await store.write(batch(run, step, event("r1", 1)))
        step.status, step.output = "succeeded", {"value": 42}
        await store.write(batch(step, event("r1", 2, "step_completed")))
        # the process dies here: no close(), so nothing is projected
    con = duckdb.connect(str(path))
    assert con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 6  # snapshot, run, 2 steps, 2 events
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    con.close()
    async with open_db(path) as db:
        store = DuckDBRunStore(db)
        await store.recover()
        assert db._con.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 0
        row = db._con.execute("SELECT status, output FROM step_runs WHERE run_id = 'r1'").fetchone()
        assert row == ("succeeded", '{"value":42}')
        assert db._con.execute("SELECT list(seq ORDER BY seq) FROM events").fetchone()[0] == [1, 2]
        (active,) = await store.active_runs()
        assert active.run.run_id == "r1" and active.last_seq == 2


async def test_journaled_values_read_back_as_they_were_written_with_or_without_a_crash(tmp_path: Path) -> None:
    """JSON columns are journaled as JSON values: a string output stays a string (a lone
    surrogate in it, which no UTF-8 text can hold, becomes U+FFFD), ``None`` stays NULL (not
    JSON ``null``), and a timestamp in another zone is stored in UTC, whether the projection or
    the recovery folds the row."""
    tz = timezone(timedelta(hours=2))
    for crashed in (False, True):
        path = tmp_path / f"values-{crashed}.duckdb"
        async with open_db(path) as db:
            store = DuckDBRunStore(db, projection_interval_s=3600)
            run = run_record("r1", status="succeeded", outputs={"text": 'a "quoted" line\n'}, error=None)
            step = step_record("r1", status="succeeded", output="text \ud800 cut", finished_at=T0.astimezone(tz))
            await store.write(batch(run, step))
            if not crashed:
                await store.project()
        async with open_db(path) as db:
            store = DuckDBRunStore(db)
            stored = await store.get_run("r1")
        assert stored is not None
        stored_run, (stored_step,) = stored
        assert stored_run.outputs == {"text": 'a "quoted" line\n'} and stored_run.error is None
        assert stored_step.output == "text \ufffd cut" and stored_step.usage is None
        assert stored_step.finished_at == T0


async def test_a_journal_in_the_earlier_form_is_folded_by_the_upgrade(tmp_path: Path) -> None:
    """A process before migration 8 journaled JSON columns as strings of JSON text inside each
    row; a crash left such rows, and the upgrade folds them as that process would have."""
    path = tmp_path / "old-journal.duckdb"
    con = connect(path)
    migrate(con, target=7)
    old_row = partial(json.dumps, separators=(",", ":"))
    workflow = {"id": "wf", "steps": [{"id": "a", "task": "echo"}]}
    run = [
        "r1", "wf", "Old flow", "d1", old_row({"n": 3}), "running", None, "2026-03-01T12:00:00",
        "2026-03-01T12:00:01", None, None, None, None, None, None, None, None,
    ]  # fmt: skip
    step = ["r1", "a", "a", None, 1, "succeeded", "2026-03-01T12:00:01", "2026-03-01T12:00:02", old_row("ok"),
            None, None, None, None]  # fmt: skip
    started = {
        "seq": 1,
        "type": "run_started",
        "run_id": "r1",
        "step_id": None,
        "ts": "2026-03-01T12:00:01Z",
        "data": {},
    }
    rows = [
        (1, "snapshot", None, old_row(["d1", old_row(workflow)])),
        (2, "run", "r1", old_row(run)),
        (3, "step", "r1", old_row(step)),
        (4, "event", "r1", old_row(started)),
    ]
    con.executemany("INSERT INTO run_journal VALUES (?, ?, ?, ?)", rows)
    con.close()
    async with open_db(path) as db:
        store = DuckDBRunStore(db)
        stored = await store.get_run("r1")
        events = await store.events("r1")
    assert stored is not None
    stored_run, (stored_step,) = stored
    assert stored_run.inputs == {"n": 3} and stored_run.workflow == workflow and stored_run.status == "running"
    assert stored_step.output == "ok" and stored_step.status == "succeeded"
    assert [e.type for e in events] == ["run_started"]


async def test_runs_of_one_workflow_share_one_snapshot(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        await store.write(batch(run_record("r1"), run_record("r2")))
        await store.write(batch(run_record("r3"), run_record("o1", "other")))
        assert (await store.get_run("r3"))[0].workflow["id"] == "wf"
        assert (await store.get_run("o1"))[0].workflow["id"] == "other"
        count = await db.read(lambda c: c.execute("SELECT count(*) FROM workflow_snapshots").fetchone()[0])
        assert count == 2


async def test_a_cell_edited_all_day_keeps_a_bounded_set_of_known_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each edit of an ad-hoc document is a new snapshot: the store remembers the newest few it
    journaled, and a forgotten one journaled again is still stored once and read back."""
    monkeypatch.setattr(journal, "MAX_KNOWN_SNAPSHOTS", 2)
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        for i in range(5):
            await store.write(batch(run_record(f"r{i}", f"edit-{i}")))
        assert len(store._snapshots) == 2
        await store.write(batch(run_record("again", "edit-0")))  # its digest was forgotten
        assert (await store.get_run("again"))[0].workflow["id"] == "edit-0"
        count = await db.read(lambda c: c.execute("SELECT count(*) FROM workflow_snapshots").fetchone()[0])
        assert count == 5


# =========================================================================== document store


async def test_document_store_create_get_list_replace_delete(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        agents = DuckDBDocumentStore(db, "agents")
        created = await agents.create("b", {"id": "b", "model": "openai/gpt-4o"})
        await agents.create("a", {"id": "a"})
        got = await agents.get("b")
        assert got is not None and got.doc == {"id": "b", "model": "openai/gpt-4o"}
        assert got.created_at == created.created_at and got.source is None
        assert [d.id for d in await agents.list()] == ["a", "b"]

        replaced = await agents.replace("b", {"id": "b", "model": "ollama/llama3"})
        again = await agents.get("b")
        assert again.doc["model"] == "ollama/llama3"
        assert again.created_at == created.created_at
        assert again.updated_at == replaced.updated_at >= created.updated_at

        assert await agents.delete("b") is True
        assert await agents.delete("b") is False
        assert await agents.get("b") is None
        assert [d.id for d in await agents.list()] == ["a"]


async def test_creating_a_duplicate_document_is_a_conflict(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        workflows = DuckDBDocumentStore(db, "workflows", with_source=True)
        await workflows.create("wf", {"id": "wf", "v": 1}, source="name: wf")
        with pytest.raises(Conflict) as info:
            await workflows.create("wf", {"id": "wf", "v": 2})
        assert "wf" in info.value.message and info.value.status == 409
        kept = await workflows.get("wf")
        assert kept.doc == {"id": "wf", "v": 1} and kept.source == "name: wf"


async def test_replace_creates_a_missing_document_and_keeps_its_source(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        workflows = DuckDBDocumentStore(db, "workflows", with_source=True)
        await workflows.replace("new", {"id": "new"}, source="id: new")
        got = await workflows.get("new")
        assert got.doc == {"id": "new"} and got.source == "id: new"


async def test_agents_and_workflows_are_separate_tables(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        await DuckDBDocumentStore(db, "agents").create("x", {"kind": "agent"})
        await DuckDBDocumentStore(db, "workflows").create("x", {"kind": "workflow"})
        assert (await DuckDBDocumentStore(db, "agents").get("x")).doc == {"kind": "agent"}
        assert (await DuckDBDocumentStore(db, "workflows").get("x")).doc == {"kind": "workflow"}
    with pytest.raises(ValueError):
        DuckDBDocumentStore(db, "runs")


async def test_documents_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    async with open_db(path) as db:
        await DuckDBDocumentStore(db, "agents").create("a", {"id": "a", "n": [1, 2]})
        await DuckDBRunStore(db).write(batch(run_record("r1"), event("r1", 1)))
    async with open_db(path) as db:
        assert (await DuckDBDocumentStore(db, "agents").get("a")).doc == {"id": "a", "n": [1, 2]}
        assert [e.seq for e in await DuckDBRunStore(db).events("r1")] == [1]


# =========================================================================== group commit


class RecordingStore(DuckDBRunStore):
    """A real store that also remembers which event seqs had been durably written."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.durable: list[tuple[str, int]] = []
        self.writes = 0

    async def write(self, batch: Batch, *, submission: bool = False) -> None:
        await super().write(batch, submission=submission)
        self.writes += 1
        self.durable += [(e.run_id, e.seq) for e in batch.events]


class FlakyStore(RecordingStore):
    """Fault injection: the first ``failures`` commits fail, as a disk error would."""

    def __init__(self, db: Database, failures: int) -> None:
        super().__init__(db)
        self.failures = failures
        self.attempts = 0

    async def write(self, batch: Batch, *, submission: bool = False) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise duckdb.IOException("disk hiccup (injected)")
        await super().write(batch, submission=submission)


async def test_events_are_published_only_after_the_store_write_returned(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = RecordingStore(db)
        published: list[tuple[str, int]] = []
        not_yet_durable: list[tuple[str, int]] = []

        def on_committed(events: list[Event]) -> None:
            for e in events:
                if (e.run_id, e.seq) not in store.durable:
                    not_yet_durable.append((e.run_id, e.seq))
                published.append((e.run_id, e.seq))

        writer = GroupCommitWriter(store, on_committed)
        writer.start()
        try:
            for seq in range(1, 31):
                writer.add_event(event("r1", seq))
                if seq % 5 == 0:
                    await asyncio.sleep(0)
                    assert set(published) <= set(store.durable)
            await writer.flush()
        finally:
            await writer.close()
        assert not_yet_durable == []
        assert published == [("r1", s) for s in range(1, 31)]


async def test_many_adds_between_commits_land_in_few_batches(tmp_path: Path) -> None:
    adds = 600
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        writer = GroupCommitWriter(store, lambda events: None)
        writer.start()
        try:
            runs = [run_record(f"r{n:02d}", status="queued") for n in range(20)]
            steps = [step_record(r.run_id, "a", status="pending") for r in runs]
            for i in range(adds // 3):
                run, step = runs[i % 20], steps[i % 20]
                run.status, step.status = "running", "running"
                writer.add_run(run)
                writer.add_step(step)
                writer.add_event(event(run.run_id, i // 20 + 1))
                if i % 25 == 0:
                    await asyncio.sleep(0)  # let the writer run now and then, as the engine does
            await writer.flush()
        finally:
            await writer.close()
        assert 1 <= writer.batches <= adds // 20
        assert len((await store.list_runs(limit=100)).runs) == 20
        assert [e.seq for e in await store.events("r00")] == list(range(1, 11))


async def test_while_transitions_keep_coming_commits_are_paced_and_a_runs_end_commits_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transition right after a commit waits for the pace (here far longer than the test),
    so what follows joins its commit; a run's end ends the wait."""
    monkeypatch.setattr(writer_module, "COMMIT_PACE_S", 600.0)
    async with open_db(tmp_path / "db.duckdb") as db:
        batches: list[list[int]] = []
        writer = GroupCommitWriter(DuckDBRunStore(db), lambda events: batches.append([e.seq for e in events]))
        writer.start()
        try:
            writer.add_event(event("r1", 1))
            await writer.flush()
            writer.add_event(event("r1", 2))
            await asyncio.sleep(0.3)
            writer.add_event(event("r1", 3))
            await asyncio.sleep(0.3)
            assert batches == [[1]]  # 2 and 3 wait for the pace
            writer.add_event(event("r1", 4, "workflow_succeeded", step_id=None))
            async with asyncio.timeout(30):
                while len(batches) < 2:
                    await asyncio.sleep(0.01)
        finally:
            await writer.close()
        assert batches == [[1], [2, 3, 4]]


async def test_a_flush_ends_the_pace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "COMMIT_PACE_S", 600.0)
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        writer = GroupCommitWriter(store, lambda events: None)
        writer.start()
        try:
            writer.add_event(event("r1", 1))
            await writer.flush()
            writer.add_event(event("r1", 2))
            await asyncio.wait_for(writer.flush(), 30)
            assert [e.seq for e in await store.events("r1")] == [1, 2]
        finally:
            await writer.close()


async def test_flush_waits_until_everything_added_is_durable(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        writer = GroupCommitWriter(store, lambda events: None)
        writer.start()
        try:
            writer.add_run(run_record("r1", status="running"))
            writer.add_step(step_record("r1", "a", status="succeeded", output={"v": 1}))
            for seq in range(1, 6):
                writer.add_event(event("r1", seq))
            await writer.flush()
            # read back through a reader thread's own cursor, not the writer's
            assert [e.seq for e in await store.events("r1")] == [1, 2, 3, 4, 5]
            run, steps = await store.get_run("r1")
            assert run.status == "running" and steps[0].output == {"v": 1}
            await writer.flush()  # nothing pending: returns at once
        finally:
            await writer.close()


async def test_close_commits_what_is_still_pending(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    async with open_db(path) as db:
        writer = GroupCommitWriter(DuckDBRunStore(db), lambda events: None)
        writer.start()
        for seq in range(1, 4):
            writer.add_event(event("r1", seq))
        await writer.close()
    async with open_db(path) as db:
        assert [e.seq for e in await DuckDBRunStore(db).events("r1")] == [1, 2, 3]


async def test_the_latest_snapshot_of_a_record_wins_within_a_batch(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db)
        writer = GroupCommitWriter(store, lambda events: None)
        writer.start()
        try:
            writer.add_run(run_record("r1", status="queued"))
            writer.add_step(step_record("r1", "a", status="running"))
            writer.add_run(run_record("r1", status="succeeded"))
            writer.add_step(step_record("r1", "a", status="succeeded"))
            await writer.flush()
        finally:
            await writer.close()
        run, steps = await store.get_run("r1")
        assert run.status == "succeeded" and [s.status for s in steps] == ["succeeded"]


async def test_a_failing_commit_is_retried_and_every_event_is_published_once_in_order(tmp_path: Path) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = FlakyStore(db, failures=2)
        published: list[int] = []
        writer = GroupCommitWriter(store, lambda events: published.extend(e.seq for e in events))
        writer.start()
        try:
            run, step = run_record("r1", status="running"), step_record("r1", "a", status="running")
            writer.add_run(run)
            writer.add_step(step)
            for seq in range(1, 11):
                writer.add_event(event("r1", seq))
            await asyncio.sleep(0.01)  # the first commit is failing and being retried now
            assert published == []
            step.status = "succeeded"
            writer.add_step(step)
            for seq in range(11, 21):
                writer.add_event(event("r1", seq))
            await asyncio.wait_for(writer.flush(), timeout=10)
        finally:
            await writer.close()
        assert store.failures == 0 and store.attempts >= 3
        assert published == list(range(1, 21))
        assert [e.seq for e in await store.events("r1")] == list(range(1, 21))
        got_run, got_steps = await store.get_run("r1")
        assert got_run.status == "running" and [(s.key, s.status) for s in got_steps] == [("a", "succeeded")]


# =========================================================================== event bus


async def test_a_run_subscription_gets_only_that_runs_events_in_order() -> None:
    bus = EventBus()
    sub = bus.subscribe("r1")
    bus.publish([event("r1", 1), event("r2", 1), event("r1", 2)])
    assert [(e.run_id, e.seq) for e in (await sub.get(), await sub.get())] == [("r1", 1), ("r1", 2)]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.get(), timeout=0.05)


async def test_an_all_runs_subscription_gets_every_event() -> None:
    bus = EventBus()
    everything = bus.subscribe()
    one, other = bus.subscribe("r1"), bus.subscribe("r1")
    bus.publish([event("r1", 1), event("r2", 1)])
    assert [(e.run_id, e.seq) for e in (await everything.get(), await everything.get())] == [("r1", 1), ("r2", 1)]
    assert (await one.get()).seq == 1 and (await other.get()).seq == 1


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    bus = EventBus()
    sub = bus.subscribe("r1")
    waiting = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    bus.publish([event("r1", 1)])
    assert (await asyncio.wait_for(waiting, timeout=1)).seq == 1


async def test_a_bounded_subscription_that_falls_behind_overflows() -> None:
    bus = EventBus()
    slow = bus.subscribe("r1", maxsize=3)
    unbounded = bus.subscribe("r1")
    bus.publish([event("r1", s) for s in range(1, 5)])
    assert slow.overflowed
    with pytest.raises(SubscriptionOverflow):
        await slow.get()
    bus.publish([event("r1", 5)])  # an overflowed subscription stays overflowed
    with pytest.raises(SubscriptionOverflow):
        await slow.get()
    assert [(await unbounded.get()).seq for _ in range(5)] == [1, 2, 3, 4, 5]


async def test_a_bounded_subscription_that_keeps_up_does_not_overflow() -> None:
    bus = EventBus()
    sub = bus.subscribe("r1", maxsize=2)
    for s in range(1, 6):
        bus.publish([event("r1", s)])
        assert (await sub.get()).seq == s
    assert not sub.overflowed


async def test_unsubscribed_subscriptions_get_nothing_more() -> None:
    bus = EventBus()
    run_sub, all_sub = bus.subscribe("r1"), bus.subscribe()
    with bus.subscribe("r1") as scoped:
        pass
    run_sub.close()
    bus.unsubscribe(all_sub)
    bus.unsubscribe(all_sub)  # twice is harmless
    bus.publish([event("r1", 1)])
    for sub in (run_sub, all_sub, scoped):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.get(), timeout=0.02)
    assert "r1" not in bus._by_run and not bus._all


class _DeadStore(DuckDBRunStore):
    """A store whose disk is gone: every write fails with an I/O error (transient, retried)."""

    async def write(self, batch: Batch, *, submission: bool = False) -> None:
        raise duckdb.IOException("IO Error: No space left on device")


async def test_closing_over_a_dead_database_gives_up_instead_of_hanging(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.duckdb")
    await db.start()
    writer = GroupCommitWriter(_DeadStore(db), lambda events: None)
    writer.start()
    writer.add_event(Event(1, "run_queued", "r1", None, utcnow(), {}))

    started = asyncio.get_running_loop().time()
    await writer.close(timeout=0.3)

    assert asyncio.get_running_loop().time() - started < 2
    assert "No space left" in (writer.last_error or "")
    await db.close()


class RefusingStore(DuckDBRunStore):
    """The real store, refusing (as for a bug in what it holds) every batch with a record of one run."""

    def __init__(self, db: Database, refused: str) -> None:
        super().__init__(db)
        self.refused = refused

    async def write(self, batch: Batch, *, submission: bool = False) -> None:
        if self.refused in batch.runs or any(e.run_id == self.refused for e in batch.events):
            raise duckdb.ConstraintException(f"refused a record of {self.refused}")
        await super().write(batch, submission=submission)


async def test_a_run_whose_records_the_database_refuses_fails_alone_and_nothing_of_it_is_announced(
    tmp_path: Path,
) -> None:
    async with open_db(tmp_path / "db.duckdb") as db:
        store = RefusingStore(db, refused="bad")
        announced: list[tuple[str, int]] = []
        unstorable: list[tuple[str, str]] = []
        writer = GroupCommitWriter(
            store,
            lambda events: announced.extend((e.run_id, e.seq) for e in events),
            on_unstorable=lambda run_id, error: unstorable.append((run_id, error)),
        )
        writer.start()
        try:
            writer.add_run(run_record("good"))
            writer.add_run(run_record("bad"))
            writer.add_event(event("good", 1))
            writer.add_event(event("bad", 1))
            await writer.flush()
            writer.add_event(event("good", 2))
            await writer.flush()
        finally:
            await writer.close()
        assert announced == [("good", 1), ("good", 2)]
        assert [run_id for run_id, _ in unstorable] == ["bad"] and "refused a record of bad" in unstorable[0][1]
        assert writer.unstorable_runs == ["bad"]
        assert [e.seq for e in await store.events("good")] == [1, 2]
        assert await store.events("bad") == []


async def test_deleting_finished_runs_removes_their_rows_from_every_table_and_keeps_active_ones(tmp_path: Path) -> None:
    done = run_record("r1", status="succeeded", finished_at=T0)
    active = run_record("r2", status="running")
    other = run_record("r3", workflow_id="other", status="failed", finished_at=T0)
    records = [
        (run, step_record(run.run_id), event(run.run_id, 1), event(run.run_id, 2, "step_completed"))
        for run in (done, active, other)
    ]
    async with open_db(tmp_path / "db.duckdb") as db:
        store = DuckDBRunStore(db, projection_interval_s=3600)
        await store.write(batch(*[r for group in records for r in group]))
        await store.project()
        await store.write(batch(event("r1", 3, "workflow_succeeded", None)))  # only in the journal so far

        assert await store.delete_finished(workflow_id="wf") == ["r1"]

        def rows(cursor: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
            tables = ("runs", "step_runs", "events", "run_journal")
            return {t: sorted({r[0] for r in cursor.execute(f"SELECT run_id FROM {t}").fetchall()}) for t in tables}

        assert await db.read(rows) == {
            "runs": ["r2", "r3"],
            "step_runs": ["r2", "r3"],
            "events": ["r2", "r3"],
            "run_journal": [],
        }
        assert await store.events("r1") == []
        assert await store.delete_finished() == ["r3"]
        assert await store.get_run("r2") is not None
