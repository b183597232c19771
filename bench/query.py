"""What a history query costs in the sandbox, against the same statement run straight on the
engine's database (what the sandbox replaced), over a large history; one JSON line per query.

The history is written straight into the engine's tables (--runs runs of a three-step
workflow, with their steps and nine events each), then an :class:`Engine` opens the file and
each query runs --repeat times through ``Engine.query``; ``direct_ms`` is the same statement
on a cursor of the engine's database with the views defined on it.

Usage: python bench/query.py [--runs 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from clarion_jupyter import Engine
from clarion_jupyter.storage.database import connect, migrate
from clarion_jupyter.storage.query import VIEWS

QUERIES = {
    "count_runs": "SELECT count(*) FROM runs",
    "runs_by_status": "SELECT status, count(*) FROM runs GROUP BY status",
    "one_run": "SELECT * FROM runs WHERE run_id = 'r0000500000'",
    "count_events": "SELECT count(*) FROM events",
    "failure_rate_per_step": "SELECT step_id, avg((status = 'failed')::INT) FROM steps GROUP BY step_id",
    "cost_per_day": "SELECT date_trunc('day', ts) AS day, sum(cost_usd) FROM llm_calls GROUP BY day",
}
SNAPSHOT = json.dumps({"id": "w", "steps": [{"id": f"s{i}", "task": "echo"} for i in range(3)]})


def fill(path: Path, runs: int) -> None:
    """``runs`` finished runs, 3 step attempts and 9 events each, written set-wise by DuckDB."""
    con = connect(path)
    migrate(con)
    con.execute("INSERT INTO workflow_snapshots VALUES ('d', ?)", [SNAPSHOT])
    con.execute(
        "INSERT INTO runs SELECT printf('r%010d', i), 'w', 'W', 'd', '{\"report\": \"bug-' || i || '.md\"}',"
        " CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, NULL, TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND,"
        " TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND, TIMESTAMP '2026-01-01' + INTERVAL (i + 2) SECOND,"
        " '{\"label\": \"' || repeat('x', 100) || '\"}', NULL, '{\"cost_usd\": 0.001, \"prompt_tokens\": 10}'"
        " FROM range(?) t(i)",
        [runs],
    )
    con.execute(
        "INSERT INTO step_runs SELECT printf('r%010d', i), 's' || s, 's' || s, NULL, 1,"
        " CASE WHEN s = 2 AND i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND,"
        " TIMESTAMP '2026-01-01' + INTERVAL (i + 1) SECOND, '{\"value\": \"' || repeat('y', 100) || '\"}', NULL,"
        ' CASE WHEN s = 0 THEN \'{"cost_usd": 0.001, "prompt_tokens": 10, "completion_tokens": 5}\' END, NULL'
        " FROM range(?) t(i), range(3) u(s)",
        [runs],
    )
    con.execute(
        "INSERT INTO events SELECT printf('r%010d', i), e + 1, 'step_completed', 's' || (e % 3),"
        " TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND, '{\"output\": {\"value\": \"' || repeat('z', 100) || '\"}}'"
        " FROM range(?) t(i), range(9) u(e)",
        [runs],
    )
    con.close()


def direct(path: Path, sql: str, repeat: int) -> float:
    con = duckdb.connect(str(path))
    for name, body in VIEWS.items():
        con.execute(f"CREATE TEMP VIEW {name} AS {body.format(db='history.main')}")
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        con.execute(sql).fetchall()
        samples.append(time.perf_counter() - start)
    con.close()
    return statistics.median(samples) * 1000


async def sandboxed(path: Path, repeat: int) -> dict[str, float]:
    medians = {}
    async with Engine(path, workspace_root=path.parent) as engine:
        for name, sql in QUERIES.items():
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                await engine.query(sql, timeout_s=120)
                samples.append(time.perf_counter() - start)
            medians[name] = statistics.median(samples) * 1000
    return medians


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="clarion-bench-query-") as tmp:
        path = Path(tmp) / "history.duckdb"
        start = time.perf_counter()
        fill(path, args.runs)
        print(json.dumps({"runs": args.runs, "steps": 3 * args.runs, "events": 9 * args.runs,
                          "fill_s": round(time.perf_counter() - start, 1)}), flush=True)  # fmt: skip
        sandbox = asyncio.run(sandboxed(path, args.repeat))
        for name, sql in QUERIES.items():
            line = {
                "query": name,
                "sandbox_ms": round(sandbox[name], 1),
                "direct_ms": round(direct(path, sql, args.repeat), 1),
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs in the history")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query (the median is reported)")
    main(parser.parse_args())
