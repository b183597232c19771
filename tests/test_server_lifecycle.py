"""The engine starts and stops with the server: runs in flight survive a restart, a locked
database degrades the API to 503 without taking Jupyter down, and the log format is honoured."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

RESUMABLE_WORKFLOW = {
    "id": "resumable",
    "name": "Resumable",
    "steps": [
        {"id": "nap", "task": "shell", "with": {"command": "sleep 1"}},
        {"id": "after", "task": "echo", "with": {"value": "done"}},
    ],
    "outputs": {"result": "{{ steps.after.output.value }}"},
}


class ServerProcess:
    """A real ``jupyter server`` process with the extension, driven over HTTP like any client."""

    def __init__(self, home: Path, db_path: Path) -> None:
        self.home = home
        self.token = secrets.token_hex(16)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config_dir = home / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (home / "root").mkdir(exist_ok=True)
        config = {
            "ServerApp": {
                "jpserver_extensions": {"clarion_jupyter": True},
                "ip": "127.0.0.1",
                "port": self.port,
                "port_retries": 0,
                "open_browser": False,
                "root_dir": str(home / "root"),
            },
            "IdentityProvider": {"token": self.token},
            "ClarionExtension": {"db_path": str(db_path)},
        }
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
        self.log_path = home / "server.log"
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--allow-root"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{self.port}/api/v3/{path}",
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"token {self.token}"},
        )
        return json.loads(response.body)

    async def wait_ready(self, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                await self.request("GET", "health")
                return
            except (ConnectionError, HTTPClientError):
                await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.log_path.read_text()}")

    async def stop(self) -> int:
        """SIGTERM: the graceful shutdown Jupyter does for a service manager."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """The test's server processes, killed at the end whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


async def wait_for(probe: Any, timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_run_in_flight_at_shutdown_resumes_and_succeeds_on_the_next_server(tmp_path, servers):
    db_path = tmp_path / "clarion.duckdb"
    first = ServerProcess(tmp_path / "first", db_path)
    servers.append(first)
    await first.wait_ready()
    await first.request("POST", "workflows", RESUMABLE_WORKFLOW)
    run_id = (await first.request("POST", "workflows/resumable/run", {}))["run_id"]

    async def nap_started() -> bool:
        events = (await first.request("GET", f"runs/{run_id}/events"))["events"]
        return any(e["type"] == "step_started" and e["step_id"] == "nap" for e in events)

    await wait_for(nap_started)
    assert await first.stop() == 0
    assert "Clarion engine stopped" in first.log_path.read_text()

    second = ServerProcess(tmp_path / "second", db_path)
    servers.append(second)
    await second.wait_ready()

    async def finished() -> dict[str, Any] | None:
        run = await second.request("GET", f"runs/{run_id}")
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    run = await wait_for(finished)
    assert run["status"] == "succeeded"
    assert run["outputs"] == {"result": "done"}
    assert [s["attempt"] for s in run["steps"] if s["step_id"] == "nap"] == [2]  # attempt 1 was interrupted


@pytest.fixture
def locked_db(clarion_traits: dict[str, Any]) -> Iterator[str]:
    """Another process holding the test server's DuckDB file open."""
    hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, clarion_traits["db_path"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    yield clarion_traits["db_path"]
    holder.kill()
    holder.wait()


async def test_locked_database_makes_every_endpoint_503_with_the_reason(api, locked_db, caplog):
    with caplog.at_level(logging.INFO, logger="clarion_jupyter"):
        health = await api("GET", "health")
        agents = await api("GET", "agents")
    assert health.status == 503
    assert health.body["status"] == "stopped"
    assert health.body["error"]["code"] == "database_locked"
    assert locked_db in health.body["error"]["message"]
    assert agents.status == 503
    assert agents.body["error"] == health.body["error"]
    assert caplog.text.count("is in use by another process") == 1


async def test_locked_database_refuses_websockets_with_503(api, locked_db, jp_ws_fetch):
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("ws", "runs")
    assert refused.value.code == 503


async def test_locked_database_leaves_the_rest_of_jupyter_working(jp_fetch, locked_db):
    assert (await jp_fetch("api", "status")).code == 200


@pytest.mark.clarion(log_format="json")
async def test_json_log_format_writes_one_object_per_line(api, capsys):
    assert (await api("GET", "health")).status == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    started = [line for line in lines if line["message"].startswith("Clarion engine started")]
    assert started and started[0]["logger"].startswith("clarion_jupyter.server") and started[0]["level"] == "INFO"
