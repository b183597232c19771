"""What the scale-out tests share: a real broker per test (both kinds), the queue's secret in
the environment (inherited by every worker and server process they start), and small helpers.

Test modules import the fixtures they use by name (``from broker_support import broker``)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.testing.brokers import BROKERS, BrokerProcess
from clarion_jupyter.workflow.models import WorkflowRun

RUN_TIMEOUT_S = 30.0
SECRET_ENV = "CLARION_QUEUE_SECRET"


@pytest.fixture(autouse=True)
def queue_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared secret that signs broker messages, as an operator would export it."""
    secret = secrets.token_hex(32)
    monkeypatch.setenv(SECRET_ENV, secret)
    return secret


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    with BROKERS[request.param](tmp_path) as server:
        yield server


def engine_on(broker: BrokerProcess, tmp_path: Path, url: str | None = None) -> Engine:
    """An engine whose steps go to ``broker`` (use as ``async with``)."""
    return Engine(tmp_path / "runs.duckdb", workspace_root=tmp_path, queue_url=url or broker.url)


def shell(step_id: str, command: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "task": "shell", "with": {"command": command}, **fields}


async def finish(engine: Engine, workflow: dict[str, Any]) -> WorkflowRun:
    return await asyncio.wait_for(engine.wait(await engine.submit(workflow)), RUN_TIMEOUT_S)


async def until(condition: Any, timeout: float = RUN_TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def step(run: WorkflowRun, key: str) -> Any:
    return next(s for s in run.steps if s.key == key)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
