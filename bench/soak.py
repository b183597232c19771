"""Memory soak: a real Jupyter server with the extension under a steady 20 runs/s, and its RSS each minute.

The server runs on 127.0.0.1 (a free port, a fresh token, a temporary root dir and DuckDB
file) and is stopped at the end, also on errors and Ctrl-C. The load is what its clients do
all day, at --rate runs a second (open loop: a run is started every 1/rate s, whatever the
answers take), for --warm-s seconds of warm-up and then --minutes minutes:

* runs of a saved three-step echo workflow (``POST /api/v3/workflows/{id}/run``), one in five
  with an idempotency key of its own;
* one run in ten an ad-hoc document (``POST /api/v3/runs``) that differs each time, as a
  notebook cell being edited sends (same workflow id, new content: a new plan and snapshot);
* the sidebar: one ``/ws/runs`` socket reading every event, and ``GET /api/v3/runs?limit=50``
  every second;
* one run in twenty followed to its end on ``/ws/runs/{id}/subscribe``, and its document
  read back (``GET /api/v3/runs/{id}``);
* a history query (``POST /api/v3/query``) every ten seconds.

Each minute prints one JSON line: the server's RSS, the runs started and finished in that
minute, POST latency p50/p99, the server's CPU share. The last line compares the RSS after
the warm-up with the highest and the last minute's (target: within 10 %). With ``--probe``,
each line also says where the memory is (``bench/memory_probe.py``: DuckDB's buffer pool by
tag, its allocator, glibc's and pymalloc's heaps, the engine's bounded state), to find what
grows (``--trace`` adds the Python source lines whose memory grew, through ``tracemalloc``,
which slows the server: lower ``--rate`` with it); ``--skip`` leaves clients out, to find which
one makes it grow.

Usage: python bench/soak.py [--rate 20] [--warm-s 120] [--minutes 10] [--skip follow,sidebar] [--probe [--trace]]
       [--db-memory-limit 64MB]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from clarion_jupyter.testing.server import JupyterServerProcess, exit_on_sigterm

TARGET_GROWTH = 0.10
SOAK = {
    "id": "soak",
    "name": "Soak",
    "inputs": {"n": {"type": "integer", "default": 0}},
    "steps": [
        {"id": "a", "task": "echo", "with": {"value": "{{ inputs.n }}"}},
        {"id": "b", "task": "echo", "with": {"value": "{{ steps.a.output.value * 2 }}"}},
        {"id": "c", "task": "echo", "with": {"value": {"n": "{{ inputs.n }}", "twice": "{{ steps.b.output.value }}"}}},
    ],
    "outputs": {"twice": "{{ steps.c.output.value.twice }}"},
}
CLIENTS = ("adhoc", "keys", "follow", "sidebar", "list", "query")
"""What ``--skip`` can leave out: ad-hoc runs, idempotency keys, followed runs, the sidebar's
socket, its list polls, the history queries."""
HISTORY_SQL = "SELECT status, count(*) AS n, avg(duration_ms) AS ms FROM runs GROUP BY status"


def adhoc(i: int) -> dict[str, Any]:
    """A cell's document after its ``i``-th edit."""
    return {
        "id": "soak-cell",
        "name": "Soak cell",
        "steps": [{"id": "edit", "task": "echo", "with": {"value": f"edit {i}"}}],
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def db_bytes(path: Path) -> int:
    """The DuckDB file and its write-ahead log (commits land there until a checkpoint)."""
    wal = path.with_name(path.name + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


class Load:
    """The clients of the module docstring, against one server, with what they measured."""

    def __init__(self, server: JupyterServerProcess, rate: float, skip: frozenset[str] = frozenset()) -> None:
        self.server = server
        self.rate = rate
        self.skip = skip
        """Clients left out (:data:`CLIENTS`), to find which one makes the server grow."""
        self.http = AsyncHTTPClient(max_clients=200)
        self.started = 0
        self.finished = 0
        self.errors: list[str] = []
        self.post_s: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._clients: list[asyncio.Future[None]] = []
        self._socket: WebSocketClientConnection | None = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return await self.call_server(method, f"api/v3/{path}", body)

    async def call_server(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.fetch(
            f"{self.server.url}{path}", method=method, headers=self.server.headers,
            body=None if body is None else json.dumps(body), request_timeout=60,
        )  # fmt: skip
        return json.loads(response.body)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _logged(self, work: Awaitable[None]) -> None:
        try:
            await work
        except (HTTPClientError, OSError, RuntimeError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def start_run(self, i: int) -> None:
        if i % 10 == 9 and "adhoc" not in self.skip:
            path, body = "runs", {"workflow": adhoc(i), "inputs": {}}
        else:
            path, body = "workflows/soak/run", {"inputs": {"n": i}}
            if i % 5 == 0 and "keys" not in self.skip:
                body["idempotency_key"] = f"soak-{i}"
        started = time.perf_counter()
        answer = await self.call("POST", path, body)
        self.post_s.append(time.perf_counter() - started)
        self.started += 1
        if i % 20 == 3 and "follow" not in self.skip:
            await self.follow(answer["run_id"])

    async def follow(self, run_id: str) -> None:
        """A notebook's wait: the run's socket to its end, then its document."""
        url = f"{self.server.url.replace('http', 'ws', 1)}ws/runs/{run_id}/subscribe?since=0"
        socket = await websocket_connect(HTTPRequest(url, headers=self.server.headers))
        try:
            while await socket.read_message() is not None:
                pass
        finally:
            socket.close()
        run = await self.call("GET", f"runs/{run_id}")
        if run["status"] != "succeeded":
            self.errors.append(f"run {run_id} ended {run['status']}: {run.get('error')}")

    async def sidebar_socket(self) -> None:
        """``/ws/runs``, read until the soak stops; every terminal event counts a finished run."""
        url = f"{self.server.url.replace('http', 'ws', 1)}ws/runs"
        self._socket = await websocket_connect(HTTPRequest(url, headers=self.server.headers))
        while (message := await self._socket.read_message()) is not None:
            if json.loads(message)["type"] in ("workflow_succeeded", "workflow_failed", "workflow_cancelled"):
                self.finished += 1
        if not self._stop.is_set():
            raise RuntimeError("the server closed /ws/runs")

    async def every(self, seconds: float, work: Callable[[], Awaitable[Any]]) -> None:
        while not self._stop.is_set():
            self._spawn(work())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)

    async def runs(self) -> None:
        """One run started every 1/rate s, on a fixed schedule (a slow answer does not delay the next)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while not self._stop.is_set():
            self._spawn(self.start_run(i))
            i += 1
            await asyncio.sleep(max(0.0, start + i / self.rate - loop.time()))

    def start(self) -> None:
        clients: dict[str, Callable[[], Awaitable[None]]] = {
            "runs": self.runs,
            "sidebar": self.sidebar_socket,
            "list": lambda: self.every(1.0, lambda: self.call("GET", "runs?limit=50")),
            "query": lambda: self.every(10.0, lambda: self.call("POST", "query", {"sql": HISTORY_SQL})),
        }
        self._clients = [asyncio.ensure_future(make()) for name, make in clients.items() if name not in self.skip]

    async def phase(self, seconds: float, on_minute: Callable[[int], Awaitable[None]]) -> None:
        """Keep the load on for ``seconds``, calling ``on_minute`` after each minute (and at the end)."""
        deadline = time.monotonic() + seconds
        minute = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(60.0, deadline - time.monotonic()))
            for client in self._clients:
                if client.done():
                    client.result()  # a client that died is the soak's failure
            minute += 1
            await on_minute(minute)

    async def stop(self) -> None:
        self._stop.set()
        if self._socket is not None:
            self._socket.close()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if len(samples) < 2:
        return {"post_p50_ms": None, "post_p99_ms": None}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"post_p50_ms": round(cuts[49] * 1000, 1), "post_p99_ms": round(cuts[98] * 1000, 1)}


def server_at(workdir: Path, args: argparse.Namespace) -> JupyterServerProcess:
    """The server under test: ``--db-memory-limit`` as its trait, ``bench/memory_probe.py`` loaded
    beside the extension with ``--probe``."""
    clarion = {"db_memory_limit": args.db_memory_limit} if args.db_memory_limit else {}
    if not args.probe:
        return JupyterServerProcess(workdir, clarion=clarion)
    return JupyterServerProcess(
        workdir,
        clarion=clarion,
        server={"jpserver_extensions": {"clarion_jupyter": True, "memory_probe": True}},
        env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
            **({"CLARION_PROBE_TRACE": "1"} if args.trace else {}),
        },
    )


async def soak(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="clarion-bench-soak-") as tmp, server_at(Path(tmp), args) as server:
        await server.wait_ready()
        assert server.process is not None
        pid = server.process.pid
        await server.request("POST", "workflows", SOAK)
        load = Load(server, args.rate, frozenset(filter(None, args.skip.split(","))))
        marks = {"started": 0, "finished": 0, "cpu": server.cpu_seconds(), "at": time.monotonic(), "posts": 0}

        async def minute_line(phase: str, minute: int) -> dict[str, Any]:
            memory = {"memory": await load.call_server("GET", "clarion-bench/memory")} if args.probe else {}
            now = time.monotonic()
            line = {
                "phase": phase, "minute": minute, "rss_mb": round(rss_bytes(pid) / 2**20, 1),
                "runs_started": load.started - marks["started"], "runs_finished": load.finished - marks["finished"],
                **percentiles(load.post_s[marks["posts"] :]),
                "server_cpu_pct": round(100 * (server.cpu_seconds() - marks["cpu"]) / (now - marks["at"])),
                "db_mb": round(db_bytes(server.db_path) / 2**20, 1), "errors": len(load.errors),
                "load_1m": round(os.getloadavg()[0], 1), **memory,
            }  # fmt: skip
            marks.update(started=load.started, finished=load.finished, cpu=server.cpu_seconds(), at=now,
                         posts=len(load.post_s))  # fmt: skip
            print(json.dumps(line), flush=True)
            return line

        lines: list[dict[str, Any]] = []

        async def warm_minute(minute: int) -> None:
            await minute_line("warm", minute)

        async def soak_minute(minute: int) -> None:
            lines.append(await minute_line("soak", minute))

        load.start()
        try:
            await load.phase(args.warm_s, warm_minute)
            warm = rss_bytes(pid) / 2**20
            load.errors.clear()
            await load.phase(args.minutes * 60, soak_minute)
        finally:
            await load.stop()
        rss = [line["rss_mb"] for line in lines]
        growth = (max(rss) - warm) / warm
        print(json.dumps({
            "result": "soak", "rate": args.rate, "minutes": args.minutes, "rss_after_warm_mb": round(warm, 1),
            "rss_max_mb": max(rss), "rss_last_mb": rss[-1], "growth_pct": round(100 * growth, 1),
            "target_pct": 100 * TARGET_GROWTH, "runs_started": sum(x["runs_started"] for x in lines),
            "runs_finished": sum(x["runs_finished"] for x in lines), "skipped": sorted(load.skip),
            "db_memory_limit": args.db_memory_limit or "default",
            "errors": load.errors[:5],
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="runs started per second")
    parser.add_argument("--warm-s", type=float, default=120.0, help="seconds of load before the RSS is taken as a base")
    parser.add_argument("--minutes", type=int, default=10, help="minutes of soak after the warm-up")
    parser.add_argument("--db-memory-limit", help="the server's ClarionExtension.db_memory_limit (default: its own)")
    parser.add_argument("--probe", action="store_true", help="add where the server's memory is to each line")
    parser.add_argument("--trace", action="store_true", help="with --probe: where Python's memory grew (tracemalloc)")
    parser.add_argument("--skip", default="", help=f"clients to leave out, comma-separated: {', '.join(CLIENTS)}")
    exit_on_sigterm()
    asyncio.run(soak(parser.parse_args()))
