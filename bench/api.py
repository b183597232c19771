"""API benchmarks against a real `jupyter server` with the Clarion extension; one JSON line per workload.

A  POST /api/v3/workflows/{id}/run and GET /api/v3/runs/{id} latency (p50/p99) under
   --clients concurrent clients for --seconds, back to back (closed loop)
A-paced  the same with each client at --client-rate pairs per second (open loop)
B  WebSocket delivery latency (event `ts` -> received by the client, p50/p99) while
   --ws-runs runs execute, started over --ws-spread-s seconds, followed by --ws-sockets
   clients on /ws/runs; B-burst starts them all at once
C  p99 latency of Jupyter's own GET /api/status while the engine runs --steps-per-s echo
   steps per second (chain workflows submitted at a steady rate), for --seconds
approval  from POST /api/v3/runs/{id}/approvals/{step} (approve) to the step's step_started
   event arriving on /ws/runs (p50/p99), over --approvals runs waiting at once
hostile  the worst latency of GET /api/status while each hostile input is processed (a YAML
   alias bomb, deep JSON, a 5,000-digit integer, costly templates, a template typo, a
   ReDoS content_regex, the first llm_call of the server, the SQL door's CTE and file
   bypasses, a 300 MB query result, two slow queries beside the run list, a crafted v2
   clarion.db, ...), one after another

The server is a subprocess on 127.0.0.1 (a free port, a fresh token, a temporary root dir
and DuckDB file) and is stopped at the end, also on errors and Ctrl-C. Client and server
share the machine, so every line also reports the CPU seconds each side used: a client
that eats half the cores inflates the server's latencies.

Usage: python bench/api.py [--only A-paced,B] [--repeat 3] [--seconds 20] [--clients 50] [--ws-runs 200]
       [--steps-per-s 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from clarion_jupyter.api import Client
from clarion_jupyter.testing.clarion_v2 import V2_MIGRATIONS
from clarion_jupyter.testing.server import JupyterServerProcess

TARGETS_MS = {"post_run_p99": 25, "get_run_p99": 15, "ws_delivery_p99": 20, "api_status_p99": 30, "hostile_max": 100,
              "approval_to_start_p99": 20}  # fmt: skip
GATED = {
    "id": "bench-gated",
    "name": "Bench gated",
    "steps": [{"id": "gate", "task": "echo", "approval": True, "with": {"value": 1}}],
}
ECHO = {"id": "bench-echo", "name": "Bench echo", "steps": [{"id": "echo", "task": "echo", "with": {"value": 1}}]}


def chain(steps: int) -> dict[str, Any]:
    """Echo steps, each reading the previous one's output, so they run one after another."""
    first = [{"id": "s0", "task": "echo", "with": {"value": 0}}]
    rest = [
        {"id": f"s{i}", "task": "echo", "with": {"value": f"{{{{ steps.s{i - 1}.output.value + 1 }}}}"}}
        for i in range(1, steps)
    ]
    return {"id": f"bench-chain-{steps}", "name": f"Bench chain of {steps}", "steps": first + rest}


LOAD_CHAIN = chain(10)
"""Workload C's unit of load: 10 steps per submitted run."""
WS_CHAIN = LOAD_CHAIN
"""Workload B's runs."""
WARM_UP_RUNS = 20


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50 and p99 in milliseconds (samples are seconds); null when there is too little to tell."""
    if len(samples) < 2:
        return {"p50_ms": None, "p99_ms": None}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


async def wait_idle(client: Client, timeout: float = 120.0) -> None:
    """Until the engine has no active run (the load's backlog has drained)."""
    deadline = time.monotonic() + timeout
    while (await client.health())["active_runs"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs still active after {timeout}s")
        await asyncio.sleep(0.1)


async def timed(samples: list[float], call: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - start)
    return result


async def for_seconds(seconds: float, step: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await step()


async def bench_requests(client: Client, seconds: float, clients: int, rate: float | None) -> dict[str, Any]:
    """Each client starts a run and reads it back, again and again: back to back (closed
    loop: latency is then mostly queueing behind the other clients), or ``rate`` times a
    second (open loop: latency is the service time at that offered load)."""
    posts: list[float] = []
    gets: list[float] = []

    async def one_client() -> None:
        started = time.monotonic()
        run_id = await timed(posts, client.submit_saved(ECHO["id"]))
        await timed(gets, client.get_run(run_id))
        if rate:
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))

    for _ in range(20):  # warm up connections and code paths
        await one_client()
    posts.clear()
    gets.clear()

    async def client_loop() -> None:
        if rate:  # independent clients: each starts at a random phase of its period
            await asyncio.sleep(random.uniform(0, 1 / rate))
        await for_seconds(seconds, one_client)

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"clients": clients, "pairs_per_s_per_client": rate, "requests_per_s": round((len(posts) + len(gets)) / elapsed),
            "post_run": percentiles(posts), "get_run": percentiles(gets),
            "target_post_run_p99_ms": TARGETS_MS["post_run_p99"], "target_get_run_p99_ms": TARGETS_MS["get_run_p99"]}  # fmt: skip


async def bench_websocket(
    server: JupyterServerProcess, client: Client, runs: int, sockets: int, spread_s: float
) -> dict[str, Any]:
    """``sockets`` clients follow every run on /ws/runs while ``runs`` runs start, spread
    evenly over ``spread_s`` seconds (0: all at once, a burst that measures the backlog more
    than delivery). Each event's latency is from its ``ts`` (when the engine made it) to its
    arrival, so it includes the group commit that must make it durable before it is sent.

    A few runs go first, unmeasured, as in workload A: a fresh server's first runs take its
    cold paths (first template compiles, DuckDB's first appends), which happen once in a
    server's life, and would otherwise be a percent of the events measured here."""
    for run_id in await asyncio.gather(*(client.submit_saved(WS_CHAIN["id"]) for _ in range(WARM_UP_RUNS))):
        await client.wait(run_id)
    latencies: list[float] = []
    request = HTTPRequest(server.url.replace("http", "ws", 1) + "ws/runs", headers=server.headers)
    connections = [await websocket_connect(request) for _ in range(sockets)]
    expected = runs * (len(WS_CHAIN["steps"]) * 2 + 3)

    async def listen(connection: Any) -> None:
        for _ in range(expected):
            message = await connection.read_message()
            if message is None:
                raise RuntimeError("the server closed /ws/runs during the benchmark")
            latencies.append(time.time() - datetime.fromisoformat(json.loads(message)["ts"]).timestamp())

    listeners = [asyncio.ensure_future(listen(c)) for c in connections]
    try:

        async def start(index: int) -> str:
            await asyncio.sleep(spread_s * index / runs)
            return await client.submit_saved(WS_CHAIN["id"])

        run_ids = await asyncio.gather(*(start(i) for i in range(runs)))
        await asyncio.wait_for(asyncio.gather(*listeners), 120)
    finally:
        for connection in connections:
            connection.close()
    failed = [r for r in run_ids if (await client.get_run(r))["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} runs did not succeed, e.g. {failed[0]}")
    return {"runs": runs, "started_over_s": spread_s, "steps_per_run": len(WS_CHAIN["steps"]), "sockets": sockets,
            "events_measured": len(latencies),
            "ws_delivery": percentiles(latencies), "target_ws_delivery_p99_ms": TARGETS_MS["ws_delivery_p99"]}  # fmt: skip


async def bench_status_under_load(
    server: JupyterServerProcess, client: Client, seconds: float, steps_per_s: int
) -> dict[str, Any]:
    http = AsyncHTTPClient(force_instance=True, max_clients=4)
    status_request = HTTPRequest(server.url + "api/status", headers={"Authorization": f"token {server.token}"})
    latencies: list[float] = []
    submitted: list[asyncio.Future[str]] = []
    steps_per_run = len(LOAD_CHAIN["steps"])

    async def submit_at_rate() -> None:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            while len(submitted) < elapsed * steps_per_s / steps_per_run:
                submitted.append(asyncio.ensure_future(client.submit_saved(LOAD_CHAIN["id"])))
            await asyncio.sleep(0.005)

    async def probe() -> None:
        await timed(latencies, http.fetch(status_request))
        await asyncio.sleep(0.01)

    try:
        start = time.perf_counter()
        await asyncio.gather(submit_at_rate(), for_seconds(seconds, probe))
        elapsed = time.perf_counter() - start
        backlog = (await client.health())["active_runs"]
        run_ids = await asyncio.gather(*submitted)
    finally:
        http.close()
    await wait_idle(client)
    failed = [run["run_id"] async for run in client.iter_runs(workflow_id=LOAD_CHAIN["id"], status="failed")]
    if failed:
        raise RuntimeError(f"{len(failed)} chain runs failed, e.g. {failed[0]}")
    return {"target_steps_per_s": steps_per_s, "submitted_steps_per_s": round(len(run_ids) * steps_per_run / elapsed),
            "active_runs_at_end": backlog, "api_status": percentiles(latencies),
            "target_api_status_p99_ms": TARGETS_MS["api_status_p99"]}  # fmt: skip


BOMB = (
    "name: bomb\nsteps:\n  - id: s\n    task: echo\n    with:\n      v0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"      v{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
)
BIG_YAML = "name: big\nsteps:\n" + "".join(
    f"  - id: s{i}\n    task: echo\n    description: {'lorem ipsum ' * 400}\n    with: {{value: {i}}}\n"
    for i in range(400)
)
"""A valid 2 MB workflow: YAML is parsed in Python, so its seconds must not be spent on the loop."""


SLOW_QUERY = "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"
"""Runs until the query time limit stops it."""


def crafted_clarion_db(folder: Path) -> bytes:
    """A v2 clarion.db whose ``agent_data`` is a generated column of 100 MB per read (issue #15)."""
    path = folder / "crafted-clarion.db"
    with sqlite3.connect(path) as con:
        for statement in V2_MIGRATIONS[1:]:
            con.execute(statement)
        con.execute(
            "CREATE TABLE agents (id TEXT PRIMARY KEY, agent_data TEXT GENERATED ALWAYS AS"
            " (printf('%.*c', 100000000, 'x')) VIRTUAL, created_at DATETIME, updated_at DATETIME)"
        )
        con.executemany("INSERT INTO agents (id) VALUES (?)", [(f"a{i}",) for i in range(10)])
    con.close()
    return path.read_bytes()


def one_step(workflow_id: str, task: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"id": workflow_id, "name": workflow_id, "steps": [{"id": "s", "task": task, "with": config}]}


def llm_step(workflow_id: str, agent: str) -> dict[str, Any]:
    return one_step(workflow_id, "llm_call", {"agent": agent, "prompt": "hi", "parameters": {"mock_response": "ok"}})


async def bench_hostile(server: JupyterServerProcess, client: Client) -> dict[str, Any]:
    """Each hostile input in turn (a request, or a run to its end) while /api/status is polled
    every 10 ms; the worst status latency per input. Run inputs record how the run ended."""
    http = AsyncHTTPClient(force_instance=True, max_clients=4)
    status_request = HTTPRequest(server.url + "api/status", headers=server.headers)
    (server.root / "redos.txt").write_text("a" * 26 + "!")
    await client.create_agent({"id": "plain", "name": "Plain", "model": "openai/gpt-4o"})
    await client.create_agent(
        {"id": "costly", "name": "Costly", "model": "openai/gpt-4o", "system_prompt": "{{ 3 ** (2*10**7) > 0 }}"}
    )
    await client.create_agent({"id": "redos", "name": "ReDoS", "model": "openai/gpt-4o",
                               "context": {"include_globs": ["*.txt"], "content_regex": "(a+)+$"}})  # fmt: skip

    async def post(path: str, body: str | bytes, content_type: str = "application/json") -> str:
        request = HTTPRequest(server.url + "api/v3/" + path, method="POST", body=body,
                              headers={**server.headers, "Content-Type": content_type})  # fmt: skip
        response = await http.fetch(request, raise_error=False)
        return f"HTTP {response.code}"

    async def run(workflow: dict[str, Any]) -> str:
        await client.create_workflow(workflow)
        done = await asyncio.wait_for(client.wait(await client.submit_saved(workflow["id"])), 60)
        return done["status"]

    async def query(sql: str) -> str:
        request = HTTPRequest(server.url + "api/v3/query", method="POST", body=json.dumps({"sql": sql}),
                              headers={**server.headers, "Content-Type": "application/json"}, request_timeout=60)  # fmt: skip
        response = await http.fetch(request, raise_error=False)
        answer = json.loads(response.body)
        shown = (
            f"truncated={answer['truncated']}, {len(answer['rows'])} rows"
            if response.code == 200
            else answer["error"]["code"]
        )
        return f"HTTP {response.code} ({shown}, {len(response.body) / 1e6:.1f} MB)"

    async def slow_queries_beside_the_run_list() -> str:
        """Two queries that run until the time limit stops them, and the run list read meanwhile."""
        lister = AsyncHTTPClient(force_instance=True, max_clients=2)
        runs_request = HTTPRequest(server.url + "api/v3/runs", headers=server.headers)
        slow = [asyncio.ensure_future(query(SLOW_QUERY)) for _ in range(2)]
        listed: list[float] = []
        try:
            await asyncio.sleep(0.3)
            while not all(q.done() for q in slow):
                await timed(listed, lister.fetch(runs_request))
                await asyncio.sleep(0.05)
        finally:
            lister.close()
        return f"{', '.join(q.result() for q in slow)}; GET /api/v3/runs max {max(listed) * 1000:.1f} ms over {len(listed)}"

    runtime = server.root / "jpserver-4242.json"
    runtime.write_text(json.dumps({"token": "not-the-real-one"}))

    inputs: dict[str, Callable[[], Awaitable[str]]] = {
        "first_llm_call": lambda: run(llm_step("first-llm", "plain")),
        "yaml_alias_bomb": lambda: post("workflows", BOMB, "application/yaml"),
        "yaml_2mb_workflow": lambda: post("workflows", BIG_YAML, "application/yaml"),
        "yaml_self_alias": lambda: post("workflows", "name: x\nsteps: &x [*x]\n", "application/yaml"),
        "json_900_deep": lambda: post("workflows", "[" * 900 + "]" * 900),
        "json_5000_digits": lambda: post("workflows", '{"name": "x", "steps": [{"id": "s", "task": "echo", "with": {"value": ' + "9" * 5000 + "}}]}"),
        "import_100k_deep": lambda: post("agents/import", "[" * 100_000 + "]" * 100_000),
        "pow_in_system_prompt": lambda: run(llm_step("costly-prompt", "costly")),
        "repeat_10e8": lambda: run(one_step("repeat", "echo", {"value": "{{ 'a' * 10**8 }}"})),
        "center_10e9": lambda: run(one_step("center", "echo", {"value": "{{ 'x'|center(10**9) }}"})),
        "nested_loops": lambda: run(one_step("loops", "echo", {"value": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"})),
        "undefined_in_list": lambda: run(one_step("typo", "echo", {"value": "{{ [run.nope] }}"})),
        "after_the_typo": lambda: run(one_step("after", "echo", {"value": 1})),
        "redos_content_regex": lambda: run(llm_step("redos-run", "redos")),
        "nul_path": lambda: run(one_step("nul", "file_read", {"path": "a\u0000b"})),
        "query_cte_shadows_agents": lambda: query("WITH agents AS (SELECT * FROM agents) SELECT * FROM agents"),
        "query_cte_file_read": lambda: query(f"SELECT * FROM (WITH \"{runtime}\" AS (SELECT 1) SELECT 1) x, '{runtime}'"),
        "query_cte_url": lambda: query("SELECT * FROM (WITH \"http://127.0.0.1:9/x.csv\" AS (SELECT 1) SELECT 1) x, 'http://127.0.0.1:9/x.csv'"),
        "query_300mb_result": lambda: query("SELECT repeat('x', 1000000) FROM range(300)"),
        "two_slow_queries_and_run_list": slow_queries_beside_the_run_list,
        "v2_db_generated_columns": lambda: post("agents/import", crafted_clarion_db(server.root), "application/octet-stream"),
    }  # fmt: skip
    results: dict[str, Any] = {}
    try:
        for name, hostile in inputs.items():
            latencies: list[float] = []
            task = asyncio.ensure_future(hostile())
            while not task.done():
                await timed(latencies, http.fetch(status_request))
                await asyncio.sleep(0.01)
            results[name] = {"result": task.result(), "api_status_max_ms": round(max(latencies) * 1000, 1)}
    finally:
        http.close()
    worst = max(r["api_status_max_ms"] for r in results.values())
    return {"inputs": results, "api_status_worst_ms": worst, "target_api_status_max_ms": TARGETS_MS["hostile_max"]}


async def bench_approvals(client: Client, runs: int) -> dict[str, Any]:
    """Approve runs one at a time and time each approval until its step has started."""
    await client.create_workflow(GATED)
    run_ids = [await client.submit_saved(GATED["id"], {}) for _ in range(runs)]
    while len((await client.list_runs(status="waiting", limit=500)).runs) < runs:
        await asyncio.sleep(0.05)
    started: dict[str, asyncio.Future[float]] = {}

    async def follow() -> None:
        async for event in client.watch():
            if event.type == "step_started" and event.run_id in started:
                started[event.run_id].set_result(time.perf_counter())

    watcher = asyncio.ensure_future(follow())
    await asyncio.sleep(0.5)  # the socket is open
    samples = []
    try:
        for run_id in run_ids:
            started[run_id] = asyncio.get_running_loop().create_future()
            sent = time.perf_counter()
            await client.approve(run_id, "gate")
            samples.append(await asyncio.wait_for(started[run_id], 10) - sent)
    finally:
        watcher.cancel()
    return {"approval_to_step_started": percentiles(samples), "runs": runs,
            "target_p99_ms": TARGETS_MS["approval_to_start_p99"]}  # fmt: skip


async def measured(server: JupyterServerProcess, name: str, workload: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one workload and print its line, with wall time and the CPU each process spent on it.

    The load generator's own garbage collector is off meanwhile: its full collections pause
    every client at once for 15-30 ms, which would be counted as the server's latency."""
    wall, client_cpu, server_cpu = time.perf_counter(), time.process_time(), server.cpu_seconds()
    gc.collect()
    gc.disable()
    try:
        values = await workload
    finally:
        gc.enable()
    line = {"workload": name, **values, "wall_s": round(time.perf_counter() - wall, 2),
            "client_cpu_s": round(time.process_time() - client_cpu, 2),
            "server_cpu_s": round(server.cpu_seconds() - server_cpu, 2)}  # fmt: skip
    print(json.dumps(line), flush=True)
    return line


async def run_workload(
    name: str, workload: Callable[[JupyterServerProcess, Client], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Each workload on a fresh server and database, so none measures another's leftovers."""
    with tempfile.TemporaryDirectory(prefix="clarion-bench-api-") as tmp, JupyterServerProcess(Path(tmp)) as server:
        await server.wait_ready()
        async with Client(server.url, server.token, max_clients=64, timeout=60) as client:
            for workflow in (ECHO, LOAD_CHAIN):
                await client.create_workflow(workflow)
            return await measured(server, name, workload(server, client))


def medians(name: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over repeated runs of every latency percentile they reported: one run on
    a shared machine can be twice as slow as the next, for reasons outside the server."""
    summary: dict[str, Any] = {"workload": name, "median_of_runs": len(lines)}
    for key, value in lines[0].items():
        if isinstance(value, dict) and "p99_ms" in value:
            summary[key] = {
                cut: round(statistics.median(line[key][cut] for line in lines if line[key][cut] is not None), 2)
                for cut in ("p50_ms", "p99_ms")
            }
    return summary


async def main(args: argparse.Namespace) -> None:
    print(json.dumps({"cpus": os.cpu_count(), "seconds": args.seconds, "clients": args.clients}), flush=True)
    workloads: dict[str, Callable[[JupyterServerProcess, Client], Awaitable[dict[str, Any]]]] = {
        "A": lambda server, client: bench_requests(client, args.seconds, args.clients, None),
        "A-paced": lambda server, client: bench_requests(client, args.seconds, args.clients, args.client_rate),
        "B": lambda server, client: bench_websocket(server, client, args.ws_runs, args.ws_sockets, args.ws_spread_s),
        "B-burst": lambda server, client: bench_websocket(server, client, args.ws_runs, args.ws_sockets, 0.0),
        "C": lambda server, client: bench_status_under_load(server, client, args.seconds, args.steps_per_s),
        "approval": lambda server, client: bench_approvals(client, args.approvals),
        "hostile": bench_hostile,
    }
    for name in args.only.split(","):
        lines = [await run_workload(name, workloads[name]) for _ in range(args.repeat)]
        if args.repeat > 1:
            print(json.dumps(medians(name, lines)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="A,A-paced,B,B-burst,C,approval,hostile", help="workloads to run, in order")
    parser.add_argument("--approvals", type=int, default=200, help="waiting runs approved in workload approval")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each workload; above 1, a line of their medians follows"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of workloads A and C")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients in workload A")
    parser.add_argument(
        "--client-rate", type=float, default=2.0, help="run+read pairs per second per client in A-paced"
    )
    parser.add_argument("--ws-runs", type=int, default=200, help="runs started together in workload B")
    parser.add_argument("--ws-sockets", type=int, default=1, help="clients following /ws/runs in workload B")
    parser.add_argument("--ws-spread-s", type=float, default=4.0, help="seconds over which B starts its runs")
    parser.add_argument("--steps-per-s", type=int, default=1000, help="engine load during workload C")
    asyncio.run(main(parser.parse_args()))
