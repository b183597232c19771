"""JupyterHub culls a user's server that has been idle for a while, judging by ``/api/status``
``last_activity``; a run in progress (or waiting for a person) is activity, so the server it
runs in is not stopped under it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from conftest_server import SLEEP_30_WORKFLOW

from clarion_jupyter.core.protocol import EventType

GATED = {
    "id": "gated",
    "name": "Gated",
    "steps": [{"id": "ask", "task": "echo", "approval": {"message": "ok?"}, "with": {"value": 1}}],
}
Fetch = Callable[..., Awaitable[Any]]


async def last_activity(jp_fetch: Fetch) -> datetime:
    """What JupyterHub's culler reads (a status request is itself no activity)."""
    return datetime.fromisoformat(json.loads((await jp_fetch("api", "status")).body)["last_activity"])


async def started(clarion: Any, workflow: dict[str, Any], until: str) -> tuple[Any, str]:
    """The server's engine, and a run submitted in process (no API request, so no API activity)
    followed until its first event of type ``until``."""
    engine = await clarion.ready()
    run_id = await engine.submit(workflow)
    async for event in engine.subscribe(run_id):
        if event.type == until:
            break
    return engine, run_id


async def activity_advances(jp_fetch: Fetch) -> bool:
    before = await last_activity(jp_fetch)
    await asyncio.sleep(0.5)
    return await last_activity(jp_fetch) > before


@pytest.mark.clarion(activity_interval_s=0.05)
async def test_a_running_run_keeps_the_server_active(clarion: Any, jp_fetch: Fetch) -> None:
    engine, run_id = await started(clarion, SLEEP_30_WORKFLOW, EventType.step_started)
    assert await activity_advances(jp_fetch)
    await engine.cancel(run_id)
    await engine.wait(run_id)


@pytest.mark.clarion(activity_interval_s=0.05)
async def test_a_run_waiting_for_approval_keeps_the_server_active(clarion: Any, jp_fetch: Fetch) -> None:
    engine, run_id = await started(clarion, GATED, EventType.approval_requested)
    assert await activity_advances(jp_fetch)
    await engine.cancel(run_id)


@pytest.mark.clarion(activity_interval_s=0.05, activity_while_waiting=False)
async def test_waiting_runs_can_be_left_out_of_the_activity(clarion: Any, jp_fetch: Fetch) -> None:
    engine, run_id = await started(clarion, GATED, EventType.approval_requested)
    assert not await activity_advances(jp_fetch)
    await engine.cancel(run_id)


@pytest.mark.clarion(activity_interval_s=0.05)
async def test_a_server_with_only_finished_runs_is_idle(clarion: Any, jp_fetch: Fetch) -> None:
    engine, run_id = await started(
        clarion, GATED | {"steps": [{"id": "say", "task": "echo", "with": {"value": 1}}]}, EventType.run_queued
    )
    await engine.wait(run_id)
    assert not await activity_advances(jp_fetch)
