"""Fixtures and helpers for the server tests: a real Jupyter server with the Clarion extension,
a fresh DuckDB file per test, and the real engine behind it.

Per-test extension traits: ``@pytest.mark.clarion(ws_buffer=2, ...)``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders
from tornado.websocket import WebSocketClientConnection
from traitlets.config import Config

TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}

ECHO_WORKFLOW = {
    "id": "echo",
    "name": "Echo",
    "inputs": {"word": {"type": "string", "default": "hi"}},
    "steps": [{"id": "say", "task": "echo", "with": {"value": "{{ inputs.word }}"}}],
    "outputs": {"said": "{{ steps.say.output.value }}"},
}
SLEEPY_WORKFLOW = {
    "id": "sleepy",
    "name": "Sleepy",
    "steps": [{"id": f"nap{i}", "task": "shell", "with": {"command": "sleep 0.2"}} for i in range(1, 5)],
}
SLEEP_30_WORKFLOW = {
    "id": "long",
    "name": "Long",
    "steps": [{"id": "nap", "task": "shell", "with": {"command": "echo $$ > nap.pid && exec sleep 30"}}],
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clarion(**traits): ClarionExtension traits for this test's server")


@pytest.fixture
def clarion_traits(tmp_path: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("clarion")
    return {"db_path": str(tmp_path / "clarion.duckdb"), "workers": 4, **(marker.kwargs if marker else {})}


@pytest.fixture
def jp_server_config(clarion_traits: dict[str, Any]) -> Config:
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"clarion_jupyter": True, "jupyter_server_terminals": False}},
            "ClarionExtension": clarion_traits,
        }
    )


@pytest.fixture
def clarion(jp_serverapp: Any) -> Any:
    """The running :class:`ClarionExtension` (its ``engine`` is the server's engine)."""
    return jp_serverapp.web_app.settings["clarion_jupyter"]


@dataclass
class Reply:
    status: int
    body: Any
    headers: HTTPHeaders


Api = Callable[..., Awaitable[Reply]]


@pytest.fixture
def api(jp_fetch: Callable[..., Awaitable[Any]]) -> Api:
    """``await api("POST", "workflows", body={...})``: a request to /api/v3 that never raises on a status."""

    async def call(
        method: str,
        *path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if body is not None and not isinstance(body, str | bytes):
            body = json.dumps(body)
        if body is None and method in ("POST", "PUT"):
            body = b""
        response = await jp_fetch(
            "api/v3", *path, method=method, body=body, params=params, headers=headers, raise_error=False
        )
        parsed = (
            json.loads(response.body) if response.body and "json" in response.headers.get("Content-Type", "") else None
        )
        return Reply(response.code, parsed, response.headers)

    return call


async def create_workflow(api: Api, doc: dict[str, Any]) -> str:
    reply = await api("POST", "workflows", body=doc)
    assert reply.status == 201, reply.body
    return reply.body["id"]


async def start_run(api: Api, workflow_id: str, **body: Any) -> str:
    reply = await api("POST", "workflows", workflow_id, "run", body=body)
    assert reply.status == 202, reply.body
    return reply.body["run_id"]


async def wait_run(api: Api, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until the run has ended; the run document."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        run = (await api("GET", "runs", run_id)).body
        if run["status"] in TERMINAL_STATUSES:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end within {timeout}s: {run['status']}")


async def wait_event(api: Api, run_id: str, event_type: str, step_id: str | None = None, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        events = (await api("GET", "runs", run_id, "events")).body["events"]
        if any(e["type"] == event_type and (step_id is None or e["step_id"] == step_id) for e in events):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event_type} event for {step_id or run_id} within {timeout}s")


async def read_until_closed(ws: WebSocketClientConnection, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every message (as JSON) until the server closes the socket."""
    messages = []
    while (message := await asyncio.wait_for(ws.read_message(), timeout)) is not None:
        messages.append(json.loads(message))
    return messages
