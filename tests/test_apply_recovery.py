"""A file_write killed with SIGKILL midway leaves the workspace with all of its changes or none.

A real process applies a 1,000-file change set (600 creates, 200 modifies, 200 deletes) and is
killed at several points; then the step's next attempt, or a worker's start, settles what it
left: an unfinished apply is rolled back (and the retry applies everything), a finished one is
reported and not applied twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.base import TaskContext, TaskFailed
from clarion_jupyter.task.builtin.files import FileWriteTask
from clarion_jupyter.task.builtin.journal import intent_id
from clarion_jupyter.testing.brokers import RedisServer, WorkerProcess
from clarion_jupyter.testing.server import JupyterServerProcess

N = 200  # each of N rounds: 3 creates, 1 modify, 1 delete


def _change_set() -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for i in range(N):
        changes += [
            {"action": "create", "path": f"proj/new_{i:04d}.txt", "new_content": f"new {i}\n"},
            {"action": "create", "path": f"proj/fresh/a_{i:04d}.txt", "new_content": f"fresh {i}\n"},
            {"action": "create", "path": f"proj/fresh/deep/b_{i:04d}.txt", "new_content": f"deep {i}\n"},
            {"action": "modify", "path": f"proj/mod_{i:04d}.txt", "new_content": f"modified {i}\n"},
            {"action": "delete", "path": f"proj/del_{i:04d}.txt", "new_content": ""},
        ]
    return changes


def _seed(root: Path) -> None:
    (root / "proj").mkdir(parents=True)
    for i in range(N):
        (root / f"proj/mod_{i:04d}.txt").write_text(f"original {i}\n" * 50)
        (root / f"proj/del_{i:04d}.txt").write_text(f"doomed {i}\n" * 50)
    (root / "proj/mod_0000.txt").chmod(0o755)


def _snapshot(root: Path) -> dict[str, Any]:
    """Every path of the workspace but Clarion's own folder, with bytes and mode."""
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if ".clarion" not in p.relative_to(root).parts
    }


def _ctx(root: Path, attempt: int) -> TaskContext:
    return TaskContext(run_id="run-1", step_id="apply", key="apply", attempt=attempt, workspace=Workspace(root))


APPLY = """
import asyncio, json, sys
from pathlib import Path
from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.base import TaskContext, TaskFailed
from clarion_jupyter.task.builtin.files import FileWriteTask
root = Path(sys.argv[1])
config = FileWriteTask.Config(changes=json.loads((root.parent / "changes.json").read_text()))
ctx = TaskContext(run_id="run-1", step_id="apply", key="apply", attempt=1, workspace=Workspace(root))
asyncio.run(FileWriteTask().run(config, ctx))
print("applied")
"""


def _intent(root: Path) -> Path:
    return root / ".clarion" / "intents"


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "copying-backups": lambda root: any(p.stat().st_size > 2000 for p in _intent(root).glob("*/backups.bin")),
    "intent-written": lambda root: bool(list(_intent(root).glob("*/intent.json"))),
    "half-applied": lambda root: (root / "proj/fresh").is_dir() and len(os.listdir(root / "proj/fresh")) >= N // 2,
    "all-written": lambda root: bool(list(_intent(root).glob("*/done.json"))),
}


def _apply_and_kill(tmp_path: Path, point: str) -> Path:
    """Seed a workspace, start applying the change set in a real process, SIGKILL it at ``point``."""
    root = tmp_path / "ws"
    _seed(root)
    (tmp_path / "changes.json").write_text(json.dumps(_change_set()))
    process = subprocess.Popen([sys.executable, "-c", APPLY, str(root)], stdout=subprocess.PIPE)
    reached = KILL_POINTS[point]
    deadline = time.monotonic() + 60
    try:
        while not reached(root):
            assert process.poll() is None, f"the apply ended before the kill point '{point}'"
            assert time.monotonic() < deadline, f"the kill point '{point}' was never reached"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pristine")
    _seed(root)
    return _snapshot(root)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The workspace with the whole change set applied by a run that was never interrupted."""
    root = tmp_path_factory.mktemp("applied")
    _seed(root)
    asyncio.run(_retry(root, attempt=1))
    return _snapshot(root)


async def _retry(root: Path, attempt: int = 2) -> dict[str, Any]:
    return await FileWriteTask().run(FileWriteTask.Config(changes=_change_set()), _ctx(root, attempt))


@pytest.mark.parametrize("point", ["copying-backups", "intent-written", "half-applied"])
async def test_the_next_attempt_rolls_back_an_apply_killed_midway_then_applies_it_all(
    tmp_path: Path, point: str, pristine: dict[str, Any], applied: dict[str, Any]
) -> None:
    root = _apply_and_kill(tmp_path, point)
    if point == "half-applied":
        assert _snapshot(root) not in (pristine, applied)  # the kill did cut the apply in two
    out = await _retry(root)
    assert _snapshot(root) == applied
    assert len(out["written"]) == 5 * N
    if point == "copying-backups":
        assert "recovery" not in out  # killed before its intent existed: nothing had been touched
    else:
        assert out["recovery"]["action"] == "rolled_back" and out["recovery"]["files"] == 5 * N
    assert not list(root.rglob("*.clarion-tmp"))
    assert not list(_intent(root).glob("*/backups.bin"))


@pytest.mark.parametrize("point", ["intent-written", "half-applied"])
async def test_a_worker_start_rolls_back_an_apply_killed_midway(
    tmp_path: Path, point: str, pristine: dict[str, Any], applied: dict[str, Any]
) -> None:
    root = _apply_and_kill(tmp_path, point)
    await FileWriteTask.recover(Workspace(root))
    assert _snapshot(root) == pristine
    out = await _retry(root)
    assert out["recovery"]["action"] == "rolled_back"
    assert _snapshot(root) == applied


async def test_an_apply_killed_after_its_last_write_is_not_applied_twice(
    tmp_path: Path, applied: dict[str, Any]
) -> None:
    root = _apply_and_kill(tmp_path, "all-written")
    await FileWriteTask.recover(Workspace(root))
    assert _snapshot(root) == applied
    out = await _retry(root)
    assert out["recovery"]["action"] == "already_applied"
    assert len(out["written"]) == 5 * N
    assert _snapshot(root) == applied


async def test_a_failed_write_rolls_back_and_leaves_no_intent(tmp_path: Path, pristine: dict[str, Any]) -> None:
    root = tmp_path / "ws"
    _seed(root)
    (root / "proj/fresh").write_text("a file where the change set needs a folder")
    with pytest.raises(TaskFailed, match=r"writing 'proj/fresh/a_0000\.txt' failed, so no file was changed"):
        await _retry(root, attempt=1)
    assert {path: entry for path, entry in _snapshot(root).items() if path != "proj/fresh"} == pristine
    assert not [p for p in _intent(root).iterdir() if p.is_dir()]


async def test_an_intent_that_cannot_be_recorded_fails_the_step_before_any_write(
    tmp_path: Path, pristine: dict[str, Any]
) -> None:
    root = tmp_path / "ws"
    _seed(root)
    _intent(root).mkdir(parents=True)
    (_intent(root) / intent_id("run-1", "apply")).write_text("a file where the intent's folder goes")
    with pytest.raises(TaskFailed, match="recording the change set before applying it failed, so no file was changed"):
        await _retry(root, attempt=1)
    assert _snapshot(root) == pristine


async def test_concurrent_applies_in_one_workspace_take_turns_and_all_land(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)

    async def write(i: int) -> dict[str, Any]:
        ctx = TaskContext(run_id="run-1", step_id="w", key=f"w[{i}]", attempt=1, workspace=workspace)
        return await FileWriteTask().run(FileWriteTask.Config(path=f"out/{i}.txt", content=f"{i}\n"), ctx)

    outs = await asyncio.gather(*(write(i) for i in range(8)))
    assert [out["written"][0]["path"] for out in outs] == [f"out/{i}.txt" for i in range(8)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{i}.txt" for i in range(8))


# --------------------------------------------------------------------------- on a real server


def _workflow(apply: str) -> dict[str, Any]:
    """An agent run's apply step as a document: the change set, asked for (``review``) or not (``auto``)."""
    step: dict[str, Any] = {"id": "apply", "task": "file_write", "with": {"changes": _change_set()}}
    if apply == "review":
        step["approval"] = {"message": "Apply the agent's file changes?"}
    return {
        "id": "large-apply",
        "name": "Large apply",
        "steps": [step],
        "outputs": {"applied": "{{ steps.apply.status == 'succeeded' }}"},
    }


def _step_events(events: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [e for e in events if e["step_id"] == step]


@pytest.mark.parametrize("apply", ["auto", "review"])
async def test_a_server_killed_during_a_large_apply_ends_with_every_change_after_the_restart(
    tmp_path: Path, apply: str, applied: dict[str, Any]
) -> None:
    db_path, workdir = tmp_path / "clarion.duckdb", tmp_path / "server"
    first = JupyterServerProcess(workdir, db_path).start()
    root = first.root
    try:
        await first.wait_ready()
        _seed(root)
        await first.request("POST", "workflows", _workflow(apply))
        run_id = (await first.request("POST", "workflows/large-apply/run", {}))["run_id"]
        if apply == "review":
            await first.run_until(run_id, lambda run: run["status"] == "waiting")
            await first.request("POST", f"runs/{run_id}/approvals/apply", {"decision": "approve"})
        await first.run_until(
            run_id, lambda run: KILL_POINTS["half-applied"](root) or run["status"] not in ("queued", "running")
        )
        assert KILL_POINTS["half-applied"](root), "the run ended before its apply was half done"
    finally:
        first.kill()
    assert _snapshot(root) != applied  # killed with the apply half done
    second = JupyterServerProcess(workdir, db_path).start()
    try:
        await second.wait_ready()
        run = await second.run_until(run_id, lambda run: run["status"] in ("succeeded", "failed", "waiting"))
        assert run["status"] == "succeeded", run
        assert run["outputs"]["applied"] is True
        assert _snapshot(root) == applied
        apply_step = next(s for s in run["steps"] if s["key"] == "apply")
        assert apply_step["output"]["recovery"]["action"] == "rolled_back"
        events = _step_events((await second.request("GET", f"runs/{run_id}/events"))["events"], "apply")
        started = [e for e in events if e["type"] == "step_started"]
        assert [e["data"]["attempt"] for e in started] == [1, 2]
        if apply == "review":  # approved once, before the crash: the new attempt does not ask again
            assert [e["type"] for e in events].count("approval_requested") == 1
            assert started[1]["data"]["approval"]["approved"] is True
        assert not list(root.rglob("*.clarion-tmp"))
    finally:
        second.kill()


# --------------------------------------------------------------------------- on a clarion worker


async def test_a_worker_killed_during_a_large_apply_leaves_it_to_the_next_worker(
    tmp_path: Path, applied: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intent lives in the workspace, where the task runs: the worker that gets the job
    next (its redelivery, after the visibility timeout) settles it, not the engine."""
    monkeypatch.setenv("CLARION_QUEUE_SECRET", secrets.token_hex(32))  # broker messages are signed
    root = tmp_path / "ws"
    _seed(root)
    with RedisServer(tmp_path) as broker:
        url = f"{broker.url}?visibility_timeout=2"
        async with Engine(tmp_path / "runs.duckdb", workspace_root=tmp_path / "engine", queue_url=url) as engine:
            doomed = WorkerProcess(url, tmp_path, workspace=root, name="doomed").start()
            try:
                run_id = await engine.submit(_workflow("auto"))
                deadline = time.monotonic() + 120
                while not KILL_POINTS["half-applied"](root):
                    assert time.monotonic() < deadline, doomed.log()
                    await asyncio.sleep(0.005)
            finally:
                await doomed.stop(signal.SIGKILL)
            assert _snapshot(root) != applied
            async with WorkerProcess(url, tmp_path, workspace=root, name="rescuer"):
                run = await asyncio.wait_for(engine.wait(run_id), 120)
    assert run.status == "succeeded", run.error
    assert _snapshot(root) == applied
    (apply_step,) = run.steps
    assert apply_step.attempt == 1  # the same job, delivered again
    assert apply_step.output["recovery"]["action"] == "rolled_back"
