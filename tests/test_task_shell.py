"""The shell task with real subprocesses: output, failures, confinement, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.base import TaskContext, TaskFailed, TaskSettings
from clarion_jupyter.task.builtin.shell import ShellTask


def _ctx(root: Path, **settings: Any) -> TaskContext:
    return TaskContext(
        run_id="r", step_id="s", key="s", attempt=1, workspace=Workspace(root), settings=TaskSettings(**settings)
    )


async def _shell(root: Path, settings: dict[str, Any] | None = None, **with_: Any) -> dict[str, Any]:
    return await ShellTask().run(ShellTask.Config(**with_), _ctx(root, **(settings or {})))


def _running(pid: int) -> bool:
    """True while ``pid`` is a live process; a zombie (dead, waiting for init to reap it) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _wait_for_pid(pidfile: Path) -> int:
    for _ in range(200):
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            return int(text)
        await asyncio.sleep(0.025)
    raise AssertionError(f"{pidfile} was never written")


BACKGROUND_SLEEP = "sleep 30 & echo $! > pidfile; wait"
"""A shell whose grandchild (the backgrounded sleep) must die with it."""


async def test_returns_exit_code_stdout_and_stderr(tmp_path: Path) -> None:
    out = await _shell(tmp_path, command="echo out; echo err >&2")
    assert (out["exit_code"], out["stdout"], out["stderr"]) == (0, "out\n", "err\n")
    assert out["truncated"] == {"stdout": False, "stderr": False}
    assert isinstance(out["duration_ms"], int)


async def test_nonzero_exit_fails_with_output_in_details(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="command exited with 3") as info:
        await _shell(tmp_path, command="echo partial; exit 3")
    assert info.value.details["exit_code"] == 3
    assert info.value.details["stdout"] == "partial\n"


async def test_allow_failure_returns_the_nonzero_exit_code(tmp_path: Path) -> None:
    out = await _shell(tmp_path, command="exit 4", allow_failure=True)
    assert out["exit_code"] == 4


async def test_env_is_merged_over_the_server_environment(tmp_path: Path) -> None:
    out = await _shell(tmp_path, command='echo "$CLARION_TEST_VAR:$PATH"', env={"CLARION_TEST_VAR": "v"})
    assert out["stdout"] == f"v:{os.environ['PATH']}\n"


async def test_runs_in_the_workspace_root_by_default(tmp_path: Path) -> None:
    out = await _shell(tmp_path, command="pwd -P")
    assert out["stdout"].strip() == str(tmp_path.resolve())


async def test_cwd_is_relative_to_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    out = await _shell(tmp_path, command="pwd -P", cwd="sub")
    assert out["stdout"].strip() == str((tmp_path / "sub").resolve())


@pytest.mark.parametrize("cwd", ["..", "/tmp"])
async def test_cwd_outside_the_workspace_is_refused(tmp_path: Path, cwd: str) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    with pytest.raises(TaskFailed, match="outside the workspace") as info:
        await _shell(root, command="touch escaped", cwd=cwd)
    assert info.value.retryable is False


async def test_cwd_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="not a directory"):
        await _shell(tmp_path, command="true", cwd="missing")


async def test_output_beyond_max_output_bytes_is_truncated_and_counted(tmp_path: Path) -> None:
    command = "head -c 300000 /dev/zero | tr '\\0' a; head -c 10 /dev/zero | tr '\\0' b >&2"
    out = await _shell(tmp_path, settings={"max_output_bytes": 100}, command=command)
    assert out["stdout"] == "a" * 100
    assert out["stderr"] == "b" * 10
    assert out["truncated"] == {"stdout": True, "stderr": False}
    assert out["dropped_bytes"] == {"stdout": 299_900, "stderr": 0}


async def test_undecodable_output_is_replaced(tmp_path: Path) -> None:
    out = await _shell(tmp_path, command="printf 'ok\\377'")
    assert out["stdout"] == "ok\ufffd"


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match=r"command timed out after 0\.3 s") as info:
        await _shell(tmp_path, command=BACKGROUND_SLEEP, timeout_s=0.3)
    assert info.value.details["exit_code"] is not None
    assert not _running(int((tmp_path / "pidfile").read_text()))


async def test_cancellation_kills_the_process_group_and_reraises(tmp_path: Path) -> None:
    step = asyncio.ensure_future(_shell(tmp_path, command=BACKGROUND_SLEEP))
    grandchild = await _wait_for_pid(tmp_path / "pidfile")
    assert _running(grandchild)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert not _running(grandchild)


async def test_background_job_is_stopped_when_the_command_finishes(tmp_path: Path) -> None:
    await _shell(tmp_path, command="sleep 30 >/dev/null 2>&1 & echo $! > pidfile")
    assert not _running(int((tmp_path / "pidfile").read_text()))


async def test_disabled_shell_is_refused_without_running(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match=r"disabled on this server \(allow_shell=False\)") as info:
        await _shell(tmp_path, settings={"allow_shell": False}, command="touch ran")
    assert info.value.retryable is False
    assert not (tmp_path / "ran").exists()
