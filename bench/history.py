"""History at scale: a million stored runs, and what reading them costs through a real server.

Build: a few real runs are made by an :class:`Engine` (a file read and two echoes; a
deploy whose shell step fails on some inputs), and --runs copies of them, each with its own
time-ordered run id, times and usage, are written through the engine's own storage
(``DuckDBStorage.runs.import_finished``, the path an import of v2 history takes), --batch
runs at a time, with every step attempt and event of the run they copy. With --db PATH the
file is kept, and reused when it exists (building a million runs takes minutes).

Then a real ``jupyter server`` with the extension opens the file, and this prints, one JSON
line each: the build; the file's size; the server's start-up (process start to
``GET /api/v3/health`` answering, which waits for the engine, --starts times); the p50 and
p99 of ``GET /api/v3/runs?limit=50`` (plain, filtered by workflow, by status, by both, and a
cursor page deep in the list), --requests each, back to back; and ``POST /api/v3/query``
with a GROUP BY over ``runs`` (the first query, which makes the sandbox, and --requests more).

Usage: python bench/history.py [--runs 1000000] [--batch 20000] [--db PATH] [--requests 200] [--starts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from clarion_jupyter import Engine
from clarion_jupyter.storage.duckdb_storage import DuckDBStorage
from clarion_jupyter.storage.records import Event, RunRecord, StepRecord
from clarion_jupyter.testing.server import JupyterServerProcess, exit_on_sigterm

TARGETS = {"list_p99_ms": 20, "query_ms": 300, "start_s": 3, "file_gb": 2}
TRIAGE = {
    "id": "triage",
    "name": "Triage a bug report",
    "inputs": {"report": {"type": "string"}},
    "steps": [
        {"id": "read", "task": "file_read", "with": {"path": "{{ inputs.report }}"}},
        {
            "id": "classify",
            "task": "echo",
            "with": {"value": {"label": "bug", "text": "{{ steps.read.output.content }}"}},
        },
        {"id": "summary", "task": "echo", "with": {"value": "{{ steps.classify.output.value.label }}: triaged"}},
    ],
    "outputs": {"label": "{{ steps.classify.output.value.label }}"},
}
NIGHTLY = {
    "id": "nightly",
    "name": "Nightly report",
    "steps": [
        {"id": "collect", "task": "echo", "with": {"value": {"files": 120, "lines": 48211}}},
        {"id": "render", "task": "echo", "with": {"value": "{{ steps.collect.output.value.files }} files"}},
    ],
    "outputs": {"report": "{{ steps.render.output.value }}"},
}
DEPLOY = {
    "id": "deploy",
    "name": "Deploy",
    "inputs": {"code": {"type": "integer", "default": 0}},
    "steps": [
        {"id": "build", "task": "echo", "with": {"value": "built"}},
        {"id": "ship", "task": "shell", "with": {"command": "echo shipping; exit {{ inputs.code }}"}},
    ],
}
TEMPLATES = [  # (workflow, inputs, share of the runs)
    (TRIAGE, {"report": "bugs/1234.md"}, 0.5),
    (NIGHTLY, {}, 0.25),
    (DEPLOY, {"code": 0}, 0.17),
    (DEPLOY, {"code": 3}, 0.08),
]
QUERIES = {
    "group_by_status": "SELECT status, count(*) AS n FROM runs GROUP BY status",
    "group_by_workflow_cost": (
        "SELECT workflow_id, status, count(*) AS runs, avg(duration_ms) AS avg_ms, sum(cost_usd) AS cost"
        " FROM runs GROUP BY ALL ORDER BY ALL"
    ),
}
"""GROUP BYs over ``runs`` through ``POST /api/v3/query``: the API's own example, and cost and
duration per workflow and status (cost is read from each run's usage JSON)."""
REPORT = "Steps to reproduce: open the sidebar, start a run, reload. Expected: the run stays. " * 4


class Template:
    """One real run, as the engine stored it, and how to copy it under a new id and time."""

    def __init__(self, run: RunRecord, steps: list[StepRecord], events: list[Event]) -> None:
        self.run, self.steps, self.events = run, steps, events
        self.origin = run.created_at

    def copy(self, run_id: str, at: datetime, usage: dict[str, Any]) -> tuple[RunRecord, list[StepRecord], list[Event]]:
        shift = at - self.origin
        r = self.run
        run = RunRecord(
            run_id, r.workflow_id, r.workflow_name, r.workflow, r.inputs, r.status, r.created_at + shift,
            r.workflow_digest, None, _shifted(r.started_at, shift), _shifted(r.finished_at, shift),
            r.outputs, r.error, usage,
        )  # fmt: skip
        steps = [
            StepRecord(
                run_id,
                s.key,
                s.step_id,
                s.item_index,
                s.attempt,
                s.status,
                started_at=_shifted(s.started_at, shift),
                finished_at=_shifted(s.finished_at, shift),
                output=s.output,
                error=s.error,
                usage=s.usage,
            )
            for s in self.steps
        ]
        events = [Event(e.seq, e.type, run_id, e.step_id, e.ts + shift, e.data) for e in self.events]
        return run, steps, events


def _shifted(ts: datetime | None, shift: timedelta) -> datetime | None:
    return None if ts is None else ts + shift


async def make_templates(workdir: Path) -> list[tuple[Template, float]]:
    """Run each template workflow once through a real engine and keep what it stored."""
    (workdir / "bugs").mkdir(parents=True, exist_ok=True)
    (workdir / "bugs" / "1234.md").write_text(REPORT)
    made = []
    async with Engine(workdir / "templates.duckdb", workspace_root=workdir) as engine:
        for workflow, inputs, share in TEMPLATES:
            run = await engine.wait(await engine.submit(workflow, inputs))
            stored = await engine.runs.get_run(run.run_id)
            assert stored is not None
            made.append((Template(*stored, await engine.runs.events(run.run_id)), share))
    return made


def copies(
    templates: list[tuple[Template, float]], runs: int, seed: int = 7
) -> Iterator[tuple[str, Template, datetime]]:
    """``runs`` (run id, template, time) from a year ago to now, in time order (ids sort by time)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    spacing = (now - start) / runs
    choices, weights = [t for t, _ in templates], [w for _, w in templates]
    for i in range(runs):
        at = start + spacing * i
        run_id = f"{int(at.timestamp() * 1000):012x}{rng.getrandbits(56):014x}"
        yield run_id, rng.choices(choices, weights)[0], at


async def build(path: Path, runs: int, batch: int, workdir: Path) -> dict[str, Any]:
    templates = await make_templates(workdir)
    storage = DuckDBStorage(path)
    await storage.open()
    started = time.perf_counter()
    stored = 0
    try:
        pending: tuple[list[RunRecord], list[StepRecord], list[Event]] = ([], [], [])
        for i, (run_id, template, at) in enumerate(copies(templates, runs)):
            tokens = 400 + i % 900
            usage = {"prompt_tokens": tokens, "completion_tokens": tokens // 4, "cost_usd": tokens * 2.5e-6}
            run, steps, events = template.copy(run_id, at, usage)
            pending[0].append(run)
            pending[1].extend(steps)
            pending[2].extend(events)
            if len(pending[0]) == batch:
                stored += await storage.runs.import_finished(*pending)
                pending = ([], [], [])
        if pending[0]:
            stored += await storage.runs.import_finished(*pending)
    finally:
        await storage.close()
    seconds = time.perf_counter() - started
    return {"workload": "build", "runs": stored, "seconds": round(seconds, 1), "runs_per_s": round(stored / seconds)}


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive") if len(samples) > 1 else samples * 99
    return {
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
    }


async def timed_start(workdir: Path, db: Path) -> tuple[JupyterServerProcess, dict[str, float]]:
    """A server on ``db``, with the seconds from its process start to the engine answering and
    the CPU seconds the server used until then."""
    server = JupyterServerProcess(workdir, db)
    started = time.perf_counter()
    server.start()
    while True:
        if server.process is None or server.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.log_tail()}")
        try:
            await server.request("GET", "health")
            return server, {"s": time.perf_counter() - started, "cpu_s": server.cpu_seconds()}
        except (ConnectionError, HTTPClientError):
            await asyncio.sleep(0.01)
        if time.perf_counter() - started > 120:
            server.stop()
            raise RuntimeError(f"the server did not start in 120 s:\n{server.log_tail()}")


async def requests(server: JupyterServerProcess, method: str, path: str, body: Any, n: int) -> dict[str, float]:
    """``n`` requests back to back: their latency, and the server's CPU time per request (which
    a loaded machine inflates far less than the latency)."""
    http = AsyncHTTPClient()
    samples = []
    cpu = server.cpu_seconds()
    for _ in range(n):
        start = time.perf_counter()
        await http.fetch(
            f"{server.url}api/v3/{path}", method=method, headers=server.headers,
            body=None if body is None else json.dumps(body),
        )  # fmt: skip
        samples.append(time.perf_counter() - start)
    server_cpu_ms = (server.cpu_seconds() - cpu) / n * 1000
    return {**percentiles(samples), "server_cpu_ms": round(server_cpu_ms, 2), "load_1m": os.getloadavg()[0]}


def cursor_at(db: Path, depth: float, at_least: int = 0) -> str:
    """The run id ``depth`` of the way down the list, newest first, and at least ``at_least`` runs
    down (read before a server holds the file)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        (count,) = con.execute("SELECT count(*) FROM runs").fetchone()
        sql = "SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1 OFFSET ?"
        return con.execute(sql, [max(at_least, int(count * depth))]).fetchone()[0]
    finally:
        con.close()


def report(**line: Any) -> None:
    print(json.dumps(line), flush=True)


async def measure(db: Path, workdir: Path, args: argparse.Namespace) -> None:
    page2, deep = cursor_at(db, 0, at_least=49), cursor_at(db, 0.9)
    starts = []
    for i in range(args.starts):
        server, start = await timed_start(workdir / f"server-{i}", db)
        starts.append(start)
        if i < args.starts - 1:
            server.stop()
    empty, empty_start = await timed_start(workdir / "server-empty", workdir / "empty.duckdb")
    empty.stop()
    report(workload="start", seconds=[round(s["s"], 2) for s in starts], cpu_s=[round(s["cpu_s"], 2) for s in starts],
           empty_file_s=round(empty_start["s"], 2), empty_file_cpu_s=round(empty_start["cpu_s"], 2),
           load_1m=os.getloadavg()[0], target_s=TARGETS["start_s"])  # fmt: skip
    try:
        lists = {
            "plain": "runs?limit=50",
            "workflow": "runs?limit=50&workflow_id=nightly",
            "status": "runs?limit=50&status=failed",
            "workflow_and_status": "runs?limit=50&workflow_id=deploy&status=failed",
            "page_2": f"runs?limit=50&cursor={page2}",
            "deep_cursor": f"runs?limit=50&cursor={deep}",
            "deep_cursor_workflow": f"runs?limit=50&workflow_id=triage&cursor={deep}",
        }
        for name, path in lists.items():
            await requests(server, "GET", path, None, 5)  # warm
            line = await requests(server, "GET", path, None, args.requests)
            report(workload=f"list_{name}", path=path, **line, target_p99_ms=TARGETS["list_p99_ms"])
        first = await requests(server, "POST", "query", {"sql": "SELECT 1"}, 1)
        report(workload="query_first", note="makes the sandbox", ms=first["max_ms"])
        for name, sql in QUERIES.items():
            await requests(server, "POST", "query", {"sql": sql}, 2)  # warm
            line = await requests(server, "POST", "query", {"sql": sql}, max(20, args.requests // 10))
            report(workload=f"query_{name}", sql=sql, **line, target_ms=TARGETS["query_ms"])
        report(workload="server_rss_mb", mb=round(_rss(server) / 2**20))
    finally:
        server.stop()


def _rss(server: JupyterServerProcess) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="clarion-bench-history-") as tmp:
        workdir = Path(tmp)
        db = Path(args.db) if args.db else workdir / "history.duckdb"
        if not db.exists():
            print(json.dumps(await build(db, args.runs, args.batch, workdir / "templates")), flush=True)
        size = os.path.getsize(db) + (os.path.getsize(f"{db}.wal") if os.path.exists(f"{db}.wal") else 0)
        print(json.dumps({"workload": "file", "path": str(db), "gb": round(size / 1e9, 3),
                          "target_gb": TARGETS["file_gb"]}), flush=True)  # fmt: skip
        await measure(db, workdir, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="stored runs to build")
    parser.add_argument("--batch", type=int, default=20_000, help="runs per import_finished call")
    parser.add_argument("--db", help="keep the file here (and reuse it when it exists)")
    parser.add_argument("--requests", type=int, default=200, help="requests per measured list")
    parser.add_argument("--starts", type=int, default=3, help="server start-ups to time")
    exit_on_sigterm()
    asyncio.run(main(parser.parse_args()))
