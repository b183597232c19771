"""The engine starts and stops with the server: runs in flight survive a restart, a locked
database degrades the API to 503 without taking Jupyter down, and the log format is honoured."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from clarion_jupyter.testing.server import JupyterServerProcess

RESUMABLE_WORKFLOW = {
    "id": "resumable",
    "name": "Resumable",
    "steps": [
        {"id": "nap", "task": "shell", "with": {"command": "sleep 1"}},
        {"id": "after", "task": "echo", "with": {"value": "done"}},
    ],
    "outputs": {"result": "{{ steps.after.output.value }}"},
}


@pytest.fixture
def servers() -> Iterator[list[JupyterServerProcess]]:
    """The test's server processes, killed at the end whatever happened."""
    started: list[JupyterServerProcess] = []
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
    first = JupyterServerProcess(tmp_path / "first", db_path).start()
    servers.append(first)
    await first.wait_ready()
    await first.request("POST", "workflows", RESUMABLE_WORKFLOW)
    run_id = (await first.request("POST", "workflows/resumable/run", {}))["run_id"]

    async def nap_started() -> bool:
        events = (await first.request("GET", f"runs/{run_id}/events"))["events"]
        return any(e["type"] == "step_started" and e["step_id"] == "nap" for e in events)

    await wait_for(nap_started)
    assert await asyncio.to_thread(first.stop) == 0
    assert "Clarion engine stopped" in first.log_path.read_text()

    second = JupyterServerProcess(tmp_path / "second", db_path).start()
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
