"""Notebook benchmarks in real kernels; one JSON line per workload.

cell-server    executing a `%%clarion` cell with a 3-step echo workflow, until the widget's
               model (as the browser receives it: a comm update of the header) shows
               `succeeded`, in a kernel started by a real Jupyter server (median, p90)
cell-embedded  the same in a kernel with no server (the embedded engine)
follow-cpu     the kernel's CPU while a widget follows a --follow-seconds run (a shell sleep),
               as a share of one core (no busy polling: the follower sleeps on its socket)
sql-100k       `%clarion sql` GROUP BY over --runs stored runs, through the server (median)

Targets: cell-server < 300 ms median, cell-embedded < 150 ms, follow-cpu < 2 %, sql-100k < 200 ms.

Usage: python bench/notebook.py [--only cell-server,sql-100k] [--repeat 20] [--follow-seconds 60] [--runs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import duckdb
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from tornado.httpclient import AsyncHTTPClient

from clarion_jupyter import Engine
from clarion_jupyter.testing.server import JupyterServerProcess

TARGETS = {"cell-server": 300, "cell-embedded": 150, "follow-cpu": 2.0, "sql-100k": 200}
ECHO3 = """%%clarion
id: bench-echo3
name: Bench echo3
steps:
  - {id: one, task: echo, with: {value: 1}}
  - {id: two, task: echo, with: {value: "{{ steps.one.output.value + 1 }}"}}
  - {id: three, task: echo, with: {value: "{{ steps.two.output.value + 1 }}"}}
"""
SUCCEEDED = json.dumps('clarion-run-header" data-status="succeeded"')[1:-1]
"""The widget's header once it shows success, as it appears in a JSON-encoded comm message."""
GROUP_BY = "sql SELECT workflow_id, status, count(*) AS n, avg(duration_ms) AS ms FROM runs GROUP BY ALL"


async def run_code(client: Any, code: str, timeout: float = 120) -> str:
    """Execute ``code``; what it printed."""
    msg_id = client.execute(code)
    printed = []
    while True:
        message = await client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        if message["msg_type"] == "error":
            raise RuntimeError("\n".join(message["content"]["traceback"]))
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return "".join(printed)


async def time_cell(client: Any) -> float:
    """Seconds from sending the cell to the widget update that shows it succeeded."""
    started = time.perf_counter()
    msg_id = client.execute(ECHO3)
    while True:
        message = await client.get_iopub_msg(timeout=60)
        if message["msg_type"] == "comm_msg" and SUCCEEDED in json.dumps(message["content"]["data"]):
            elapsed = time.perf_counter() - started
            break
    while True:  # let the cell finish before the next one
        message = await client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") == msg_id and message["content"].get("execution_state") == "idle":
            return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, unit: str, value: float, **extra: Any) -> None:
    line = {"workload": name, unit: round(value, 2), "target": TARGETS[name], "ok": value < TARGETS[name], **extra}
    print(json.dumps(line), flush=True)


@asynccontextmanager
async def server_kernel(workdir: Path, db_path: Path | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """A Jupyter server with the extension and a kernel it started; (server, kernel client)."""
    with JupyterServerProcess(workdir, db_path) as server:
        await server.wait_ready()
        body = {"path": "bench.ipynb", "type": "notebook", "name": "bench.ipynb", "kernel": {"name": "python3"}}
        response = await AsyncHTTPClient().fetch(
            f"{server.url}api/sessions", method="POST", body=json.dumps(body), headers=server.headers
        )
        kernel = json.loads(response.body)["kernel"]["id"]
        client = AsyncKernelClient(connection_file=str(workdir / "runtime" / f"kernel-{kernel}.json"))
        client.load_connection_file()
        client.start_channels()
        for attempt in range(10):  # the heartbeat may not answer while the kernel still starts
            try:
                await client.wait_for_ready(timeout=60)
                break
            except RuntimeError:
                if attempt == 9:
                    raise
                await asyncio.sleep(0.5)
        try:
            await run_code(client, "%load_ext clarion_jupyter")
            yield server, client
        finally:
            client.stop_channels()


@asynccontextmanager
async def embedded_kernel(workdir: Path) -> AsyncIterator[Any]:
    runtime = workdir / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    manager = AsyncKernelManager(kernel_name="python3")
    env = {**os.environ, "CLARION_DB": str(workdir / "kernel.duckdb"), "JUPYTER_RUNTIME_DIR": str(runtime)}
    await manager.start_kernel(cwd=str(workdir), env=env)
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    try:
        await run_code(client, "%load_ext clarion_jupyter")
        yield client
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def cells(name: str, client: Any, repeat: int) -> None:
    cold = await time_cell(client)  # finds the server or starts the engine
    times = [await time_cell(client) for _ in range(repeat)]
    report(name, "median_ms", statistics.median(times) * 1000, p90_ms=round(percentile(times, 0.9) * 1000, 1),
           first_cell_ms=round(cold * 1000, 1), cells=repeat)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def follow_cpu(client: Any, seconds: float) -> None:
    pid = int(await run_code(client, "import os; print(os.getpid())"))
    await run_code(client, f'%%clarion --no-wait\nid: nap\nname: Nap\nsteps:\n  - {{id: nap, task: shell, with: {{command: "sleep {seconds}"}}}}\n')  # fmt: skip
    await asyncio.sleep(1.0)  # past the start
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds - 2)
    share = (cpu_seconds(pid) - before) / (time.monotonic() - started) * 100
    report("follow-cpu", "percent_of_a_core", share, seconds=seconds)


async def store_runs(db_path: Path, count: int) -> None:
    """``count`` finished runs (a tenth failed), written in one INSERT into a migrated file."""
    async with Engine(db_path, workspace_root=db_path.parent):
        pass
    with duckdb.connect(str(db_path)) as con:
        con.execute(
            'INSERT INTO workflow_snapshots VALUES (\'bench\', \'{"id":"bench","name":"Bench","steps":[]}\')'
            " ON CONFLICT DO NOTHING"
        )
        con.execute(
            "INSERT INTO runs (run_id, workflow_id, workflow_name, workflow_digest, inputs, status, created_at,"
            " started_at, finished_at, usage)"
            " SELECT printf('run%08d', i), 'wf' || (i % 20), 'Workflow', 'bench', '{}',"
            " CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END,"
            " TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND, TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND,"
            " TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND + INTERVAL (i % 1000) MILLISECOND,"
            ' \'{"prompt_tokens": 100, "completion_tokens": 20, "cost_usd": 0.0001}\''
            " FROM range(?) t(i)",
            [count],
        )


async def sql(client: Any, runs: int, repeat: int) -> None:
    timing = (
        "import time, statistics\n_times = []\n"
        f"for _ in range({repeat}):\n    _t = time.perf_counter()\n"
        f"    _frame = get_ipython().run_line_magic('clarion', {GROUP_BY!r})\n"
        "    _times.append(time.perf_counter() - _t)\n"
        "print(statistics.median(_times), max(_times), len(_frame))"
    )
    await run_code(client, f"get_ipython().run_line_magic('clarion', {GROUP_BY!r})")  # the first query warms up
    median, worst, groups = (float(v) for v in (await run_code(client, timing)).split())
    report("sql-100k", "median_ms", median * 1000, max_ms=round(worst * 1000, 1), runs=runs, groups=int(groups))


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(",")) if args.only else set(TARGETS)
    print(json.dumps({"cpus": os.cpu_count(), "repeat": args.repeat}), flush=True)
    with tempfile.TemporaryDirectory(prefix="clarion-bench-nb-") as tmp:
        root = Path(tmp)
        if only & {"cell-server", "follow-cpu"}:
            async with server_kernel(root / "server") as (_, client):
                if "cell-server" in only:
                    await cells("cell-server", client, args.repeat)
                if "follow-cpu" in only:
                    await follow_cpu(client, args.follow_seconds)
        if "cell-embedded" in only:
            async with embedded_kernel(root / "embedded") as client:
                await cells("cell-embedded", client, args.repeat)
        if "sql-100k" in only:
            db_path = root / "history" / "clarion.duckdb"
            db_path.parent.mkdir(parents=True)
            await store_runs(db_path, args.runs)
            async with server_kernel(root / "history", db_path) as (_, client):
                await sql(client, args.runs, args.repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated workloads: " + ",".join(TARGETS))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--follow-seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
