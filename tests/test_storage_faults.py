"""A full disk under a real Jupyter server: the database lives on a small tmpfs that a
fixture mounts, fills with a ballast file, and frees again. New work is refused with 503
``storage_unavailable`` at once, health says ``degraded`` and why, no request hangs, and once
the space is back the engine recovers by itself, with every run accepted before the fault
finished and all of its events stored."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from clarion_jupyter.api.http import Client
from clarion_jupyter.core.errors import StorageUnavailable
from clarion_jupyter.testing.server import JupyterServerProcess

DISK_SIZE = "24m"
FLOW = {
    "id": "slow",
    "name": "Slow",
    "steps": [
        {"id": "first", "task": "echo", "with": {"value": 1}},
        {"id": "pause", "task": "shell", "with": {"command": "sleep 1.5"}},
        {"id": "last", "task": "echo", "with": {"value": "{{ steps.first.output.value + 1 }}"}},
    ],
    "outputs": {"value": "{{ steps.last.output.value }}"},
}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own: a full disk that fills and frees in a moment, without touching the machine's."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        # Mounting needs root (CAP_SYS_ADMIN); without it a full disk cannot be made safely.
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free block of ``disk`` with a ballast file; delete it to give the space back."""
    ballast = disk / "ballast"
    with ballast.open("wb", buffering=0) as file:
        for size in (1 << 20, 4096):  # megabytes, then the last blocks a page at a time
            try:
                while file.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return ballast


async def call(server: JupyterServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
    """One REST call: its status, JSON answer and how long it took (every call must answer)."""
    start = time.perf_counter()
    response = await AsyncHTTPClient().fetch(
        f"{server.url}api/v3/{path}",
        method=method,
        body=None if body is None else json.dumps(body),
        headers=server.headers,
        raise_error=False,
        request_timeout=15,
    )
    return response.code, json.loads(response.body or b"null"), time.perf_counter() - start


async def until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def health_becomes(server: JupyterServerProcess, status: str) -> dict[str, Any] | None:
    """The health document once its status is ``status`` (None if it is not within 30 s)."""

    async def check() -> dict[str, Any] | None:
        health = (await call(server, "GET", "health"))[1]
        return health if health["status"] == status else None

    return await until(check)


async def finished_with_their_events(
    server: JupyterServerProcess, run_ids: list[str]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each run once it has succeeded, with its stored events."""
    done = []
    for run_id in run_ids:
        run = await server.run_until(run_id, lambda run: run["status"] == "succeeded", timeout=60)
        done.append((run, (await server.request("GET", f"runs/{run_id}/events"))["events"]))
    return done


def assert_complete(finished: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    """Every run ended with its outputs and all of its events: seq gap-free from 1, each step
    completed once, the terminal event last."""
    for run, events in finished:
        assert run["outputs"] == {"value": 2}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
        assert sum(e["type"] == "step_completed" for e in events) == 3
        assert events[-1]["type"] == "workflow_succeeded"


async def test_a_full_disk_refuses_new_runs_at_once_and_recovers_when_space_is_back(
    tmp_path: Path, small_disk: Path
) -> None:
    with JupyterServerProcess(tmp_path / "server", db_path=small_disk / "clarion.duckdb") as server:
        await server.wait_ready()
        accepted = [(await call(server, "POST", "runs", {"workflow": FLOW})) for _ in range(3)]
        assert [status for status, _, _ in accepted] == [202, 202, 202]
        run_ids = [answer["run_id"] for _, answer, _ in accepted]

        ballast = await asyncio.to_thread(fill, small_disk)
        meanwhile = await call(server, "POST", "runs", {"workflow": FLOW})  # may still fit the file's last page
        if meanwhile[0] == 202:
            run_ids.append(meanwhile[1]["run_id"])

        health = await health_becomes(server, "degraded")
        refused = await call(server, "POST", "runs", {"workflow": FLOW})
        async with Client(server.url, server.token) as client:
            with pytest.raises(StorageUnavailable) as raised:  # the engine's own class, over REST
                await client.submit(FLOW)
        listed = await call(server, "GET", "runs")
        queried = await call(server, "POST", "query", {"sql": "SELECT count(*) AS n FROM runs"})

        os.remove(ballast)

        recovered = await health_becomes(server, "ok")
        after = await call(server, "POST", "runs", {"workflow": FLOW})
        finished = await finished_with_their_events(server, [*run_ids, after[1]["run_id"]])

    assert meanwhile[0] in (202, 503), meanwhile
    assert refused[0] == 503 and refused[1]["error"]["code"] == "storage_unavailable", refused
    assert "No space left on device" in refused[1]["error"]["message"]
    assert refused[2] < 1.0
    assert raised.value.status == 503
    assert health is not None and "No space left on device" in health["storage"]["unavailable"]
    assert health["storage"]["up"] is False
    assert listed[0] in (200, 503) and queried[0] in (200, 503)  # an answer, and never a 500
    assert max(listed[2], queried[2]) < 10
    assert recovered is not None and recovered["storage"]["unavailable"] is None
    assert after[0] == 202
    assert_complete(finished)


async def test_a_stop_on_a_full_disk_is_quick_says_what_it_could_not_store_and_the_next_start_finishes_it(
    tmp_path: Path, small_disk: Path
) -> None:
    server = JupyterServerProcess(tmp_path / "server", db_path=small_disk / "clarion.duckdb")
    with server:
        await server.wait_ready()
        run_ids = [(await server.request("POST", "runs", {"workflow": FLOW}))["run_id"] for _ in range(3)]
        ballast = await asyncio.to_thread(fill, small_disk)

        assert await health_becomes(server, "degraded")
        start = time.perf_counter()
        await asyncio.to_thread(server.stop)
        stopped_in = time.perf_counter() - start
        log = server.log_tail(20000)

        os.remove(ballast)
        server.start()
        await server.wait_ready()
        finished = await finished_with_their_events(server, run_ids)

    assert stopped_in < 10, log
    assert "not stored" in log and "resume from their last stored state at the next start" in log
    assert_complete(finished)
