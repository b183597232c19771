"""Does the native heap that DuckDB's statements leave behind level off, or grow without end?

The soak (``bench/soak.py --probe``) sees glibc's heap grow by 1 to 1.5 MB a minute while
Python's memory is flat; ``heaptrack`` pointed at DuckDB's own allocations. This runs the
statements behind it, many times, and prints glibc's heap in use after each slice:

* ``store`` (the default): the engine's run store on a real DuckDB file, as the engine drives
  it. Each round journals a new run (running, with a step and an event) and then journals it
  finished; every ``--project-every`` rounds (the soak's one projection a second covers about
  20 runs) the journal is projected: upserts into ``runs`` and ``step_runs``, inserts into
  ``events``, the journal's rows deleted.
* ``join``: no engine code, one statement: a ``SELECT`` joining a 20-row table to a bound
  list, on an in-memory database that never grows. If this grows the same way, the heap is
  DuckDB's, whatever the data or the schema.

A heap that levels off is a cache being filled (it costs the soak its first half hour, and
no more); one that keeps growing by the same amount per slice is a leak.

Usage: python bench/duckdb_heap.py [--workload store|join] [--rounds 6000] [--project-every 1] [--slices 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import duckdb
from memory_probe import glibc

from clarion_jupyter.storage.database import Database
from clarion_jupyter.storage.records import Batch, Event, RunRecord, StepRecord, digest, utcnow
from clarion_jupyter.storage.runs import DuckDBRunStore

DOCUMENT = {"id": "heap", "name": "Heap", "steps": [{"id": "a", "task": "echo"}]}


def round_of_a_run(n: int) -> tuple[Batch, Batch]:
    """A run's two commits as the engine makes them: submitted with its first step started, then finished."""
    run_id, now = f"run-{n:09d}", utcnow()
    run = RunRecord(
        run_id=run_id, workflow_id="heap", workflow_name="Heap", workflow=DOCUMENT, inputs={"n": n},
        status="running", created_at=now, workflow_digest=digest(DOCUMENT), started_at=now,
    )  # fmt: skip
    step = StepRecord(run_id=run_id, key="a", step_id="a", item_index=None, attempt=1, status="running", started_at=now)
    started = Event(seq=1, type="step_started", run_id=run_id, step_id="a", ts=now, data={})
    first = Batch(runs={run_id: run}, steps={(run_id, "a", 1): step}, events=[started])
    done_at = now + timedelta(milliseconds=2)
    finished_run = RunRecord(**{**_fields(run), "status": "succeeded", "finished_at": done_at, "outputs": {"n": n}})
    finished_step = StepRecord(
        **{**_fields(step), "status": "succeeded", "finished_at": done_at, "output": {"value": n}}
    )
    ended = Event(seq=2, type="run_succeeded", run_id=run_id, step_id=None, ts=done_at, data={"outputs": {"n": n}})
    second = Batch(runs={run_id: finished_run}, steps={(run_id, "a", 1): finished_step}, events=[ended])
    return first, second


def _fields(record: RunRecord | StepRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__slots__}


async def store_rounds(
    path: Path, project_every: int
) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
    db = Database(path)
    await db.start()
    store = DuckDBRunStore(db, projection_interval_s=3600)

    async def one(n: int) -> None:
        for commit in round_of_a_run(n):
            await store.write(commit)
        if n % project_every == 0:
            await store.project()

    async def close() -> None:
        await store.close()
        await db.close()

    return one, close


async def join_rounds(_: Path, __: int) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE runs AS SELECT 'run-' || i AS run_id, 'succeeded' AS status FROM range(20) t(i)")
    keys = [f"run-{i}" for i in range(20)]

    async def one(_: int) -> None:
        con.execute("SELECT count(*) FROM runs WHERE run_id IN (SELECT unnest($1))", [keys]).fetchall()

    async def close() -> None:
        con.close()

    return one, close


WORKLOADS = {"store": store_rounds, "join": join_rounds}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one, close = await WORKLOADS[args.workload](Path(tmp) / "heap.duckdb", args.project_every)
        try:
            base, started, per_slice = glibc()["in_use"], time.perf_counter(), args.rounds // args.slices
            growths: list[float] = []
            for n in range(1, args.rounds + 1):
                await one(n)
                if n % per_slice == 0:
                    growths.append(glibc()["in_use"] - base)
                    print(json.dumps({
                        "workload": args.workload, "rounds": n, "glibc_growth_mb": round(growths[-1], 1),
                        "slice_mb": round(growths[-1] - (growths[-2] if len(growths) > 1 else 0.0), 2),
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }), flush=True)  # fmt: skip
        finally:
            await close()
    half = len(growths) // 2
    first, last = growths[half - 1], growths[-1]
    print(json.dumps({
        "result": "duckdb_heap", "workload": args.workload, "rounds": args.rounds,
        "growth_first_half_mb": round(first, 1), "growth_second_half_mb": round(last - first, 1),
        "levels_off": last - first < 0.25 * first,
    }))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="store")
    parser.add_argument("--rounds", type=int, default=6000, help="rounds to run (store: a run each, two commits)")
    parser.add_argument(
        "--project-every",
        type=int,
        default=1,
        help="store: project after the commits of every K-th round (the soak's is ~20)",
    )
    parser.add_argument("--slices", type=int, default=12, help="how many times the heap is read along the way")
    asyncio.run(main(parser.parse_args()))
