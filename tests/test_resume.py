"""Durable resume: a run interrupted by a crash (SIGKILL) or a clean stop finishes on the next start.

Finished steps keep their stored outputs and do not run again; the interrupted step runs
again as a new attempt; the event log stays gap-free across the interruption. The workflow
is tests/support/resumable.yaml: three shell steps that append a line to counter1.txt,
counter2.txt and counter3.txt, the second one blocking while the file ``block`` exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.storage.records import Event
from clarion_jupyter.workflow.models import WorkflowRun

SUPPORT = Path(__file__).parent / "support"
RUNNER = SUPPORT / "run_workflow.py"
WORKFLOW = (SUPPORT / "resumable.yaml").read_text()
TERMINAL = {"workflow_succeeded", "workflow_failed", "workflow_cancelled"}
pytestmark = pytest.mark.timeout(120)


# -- helpers -------------------------------------------------------------------


class Runner:
    """tests/support/run_workflow.py (or another ``script`` of tests/support) in a real
    process, its stdout read line by line."""

    def __init__(self, db: Path, workspace: Path, *args: str, script: Path = RUNNER) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(db), str(workspace), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=workspace,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, *words: str, timeout: float = 30) -> list[str]:
        """Read up to the next line made of ``words``; ``"*"`` matches any one word (like a seq)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                stderr = self.proc.stderr.read() if self.proc.poll() is not None else "(still running)"
                raise AssertionError(f"runner never printed {words}; saw {self.seen}; stderr: {stderr}") from None
            self.seen.append(line)
            got = line.split()
            if len(got) == len(words) and all(w in ("*", g) for w, g in zip(words, got, strict=True)):
                return got

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def pid_written(path: Path) -> bool:
    """The step's shell wrote its pid to ``path`` (it creates the file, then writes to it)."""
    return path.exists() and bool(path.read_text().strip())


def alive(pid: int) -> bool:
    """A zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_group(pid_file: Path) -> None:
    """Kill what the killed engine left behind: the blocked step's shell and its sleep."""
    pgid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def crash_in_second_step(workspace: Path) -> str:
    """Start the runner, SIGKILL it while ``second`` runs, clean up; return the run id."""
    (workspace / "block").touch()
    runner = Runner(workspace / "c.duckdb", workspace)
    try:
        run_id = runner.expect("run", "*")[1]
        runner.expect("event", "*", "step_completed", "first")  # printed once committed: durable
        runner.expect("event", "*", "step_started", "second")
        deadline = time.monotonic() + 10
        while lines(workspace / "counter2.txt") < 1 or not pid_written(workspace / "second.pid"):
            assert time.monotonic() < deadline, "the second step never started its command"
            time.sleep(0.02)
    finally:
        runner.kill()
    kill_group(workspace / "second.pid")
    (workspace / "block").unlink()
    assert (
        lines(workspace / "counter1.txt"),
        lines(workspace / "counter2.txt"),
        lines(workspace / "counter3.txt"),
    ) == (1, 1, 0)
    return run_id


async def clarion_resume(workspace: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "clarion_jupyter.cli",
        "resume",
        "--db",
        str(workspace / "c.duckdb"),
        "--workspace",
        str(workspace),
    ]
    return await asyncio.to_thread(subprocess.run, command, check=False, capture_output=True, text=True, timeout=60)


def assert_resumed_once(run: WorkflowRun, events: list[Event], workspace: Path) -> None:
    assert run.status == "succeeded"
    assert lines(workspace / "counter1.txt") == 1, "a finished step ran again"
    assert lines(workspace / "counter2.txt") == 2, "the interrupted step did not run again"
    assert lines(workspace / "counter3.txt") == 1
    attempts = {s.key: (s.status.value, s.attempt) for s in run.steps}
    assert attempts == {"first": ("succeeded", 1), "second": ("succeeded", 2), "third": ("succeeded", 1)}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events if e.type in TERMINAL] == ["workflow_succeeded"]
    assert events[-1].type == "workflow_succeeded"
    started = [e for e in events if e.type == "run_started"]
    assert [e.data.get("resumed", False) for e in started] == [False, True]
    assert [e.data["attempt"] for e in events if e.type == "step_started" and e.step_id == "second"] == [1, 2]
    assert [e.step_id for e in events if e.type == "step_started"] == ["first", "second", "second", "third"]


# -- tests -------------------------------------------------------------------------


async def test_run_killed_mid_step_resumes_when_a_new_engine_starts(tmp_path: Path) -> None:
    run_id = crash_in_second_step(tmp_path)
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        assert engine.resumed == [run_id]
        run = await asyncio.wait_for(engine.wait(run_id), 15)
        events = await engine.events(run_id)
    assert_resumed_once(run, events, tmp_path)
    assert run.outputs == {"second_exit": 0}


async def test_clarion_resume_finishes_a_run_killed_mid_step(tmp_path: Path) -> None:
    run_id = crash_in_second_step(tmp_path)
    result = await clarion_resume(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} succeeded" in result.stdout
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        assert engine.resumed == []
        run = await engine.get_run(run_id)
        events = await engine.events(run_id)
    assert_resumed_once(run, events, tmp_path)


async def test_clarion_resume_with_nothing_interrupted_says_so(tmp_path: Path) -> None:
    result = await clarion_resume(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no interrupted runs" in result.stdout


async def test_clean_stop_mid_step_kills_the_command_and_the_next_start_finishes_the_run(tmp_path: Path) -> None:
    (tmp_path / "block").touch()
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        run_id = await engine.submit(WORKFLOW)
        async for event in engine.subscribe(run_id):
            if event.type == "step_started" and event.step_id == "second":
                break
        deadline = time.monotonic() + 10
        while not pid_written(tmp_path / "second.pid"):
            assert time.monotonic() < deadline, "the second step never started its command"
            await asyncio.sleep(0.02)
        second_pid = int((tmp_path / "second.pid").read_text())
        await engine.stop()
        stopped_alive = alive(second_pid)
    if stopped_alive:
        kill_group(tmp_path / "second.pid")
    assert not stopped_alive, "engine.stop() left the running step's command behind"
    (tmp_path / "block").unlink()
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        assert engine.resumed == [run_id]
        run = await asyncio.wait_for(engine.wait(run_id), 15)
        events = await engine.events(run_id)
    assert_resumed_once(run, events, tmp_path)


MAP_WORKFLOW = """
name: Map
steps:
  - id: m
    task: shell
    for_each: [0, 1, 2]
    with: {command: "echo ran >> item{{ item }}.txt; if [ {{ item }} = 1 ] && [ -f block ]; then sleep 30; fi; echo {{ item }}"}
  - id: after
    task: echo
    with: {value: "{{ steps.m.output | map(attribute='stdout') | map('trim') | list }}"}
"""


async def test_stop_in_the_middle_of_a_map_reruns_only_the_unfinished_items(tmp_path: Path) -> None:
    (tmp_path / "block").touch()
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        run_id = await engine.submit(MAP_WORKFLOW)
        done: set[str] = set()
        async for event in engine.subscribe(run_id):
            if event.type == "step_completed":
                done.add(event.step_id)
            if done >= {"m[0]", "m[2]"}:
                break
        await engine.stop()
    (tmp_path / "block").unlink()
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        assert engine.resumed == [run_id]
        run = await asyncio.wait_for(engine.wait(run_id), 15)
        events = await engine.events(run_id)
    assert run.status == "succeeded"
    assert [lines(tmp_path / f"item{i}.txt") for i in range(3)] == [1, 2, 1]
    attempts = {s.key: s.attempt for s in run.steps}
    assert attempts == {"m": 1, "m[0]": 1, "m[1]": 2, "m[2]": 1, "after": 1}
    assert next(s for s in run.steps if s.key == "after").output == {"value": ["0", "1", "2"]}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events if e.type in TERMINAL] == ["workflow_succeeded"]


async def test_stop_during_a_retry_backoff_resumes_with_the_next_attempt(tmp_path: Path) -> None:
    fails_once = "n=$(cat c 2>/dev/null || echo 0); echo $((n+1)) > c; [ $n -ge 1 ]"
    doc = {
        "name": "Backoff",
        "steps": [
            {
                "id": "flaky",
                "task": "shell",
                "with": {"command": fails_once},
                "retry": {"max_attempts": 2, "backoff_s": 60},
            }
        ],
    }
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        run_id = await engine.submit(doc)
        async for event in engine.subscribe(run_id):
            if event.type == "step_retrying":
                break
        await engine.stop()
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        run = await asyncio.wait_for(engine.wait(run_id), 10)
    assert run.status == "succeeded"
    assert [(s.key, s.status.value, s.attempt) for s in run.steps] == [("flaky", "succeeded", 2)]
    assert (tmp_path / "c").read_text().strip() == "2"
