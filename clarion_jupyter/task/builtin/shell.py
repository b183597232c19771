"""Built-in ``shell`` task: run a command in the workspace and capture its output.

The command runs in its own session (so its own process group), which is what lets a
timeout or a cancelled run stop everything it started, background jobs included, instead
of just the ``/bin/sh`` at the top. Output is read as it arrives and capped, so a chatty
command can neither fill the pipe and deadlock nor exhaust the worker's memory.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ...core.secrets import reread_environment
from ...core.workspace import Workspace
from ..base import Task, TaskConfig, TaskContext, TaskFailed, TaskSettings
from .files import confine

KILL_GRACE_S = 2.0
"""How long the command's processes get to exit after SIGTERM before they are SIGKILLed."""
_CHUNK = 64 * 1024


class ShellConfig(TaskConfig):
    """A shell step's command and limits, validated before it runs; ``cwd`` is confined to the workspace."""

    command: str = Field(min_length=1, description="Shell command line, run by /bin/sh.")
    cwd: str | None = Field(None, description="Working directory, relative to the workspace root (default: the root).")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables, merged over the server's.")
    timeout_s: float | None = Field(None, gt=0, description="Kill the command after this many seconds.")
    allow_failure: bool = Field(False, description="Succeed, reporting `exit_code`, even when the command fails.")


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            room = max(self.limit - len(self.data), 0)
            self.data += chunk[:room]
            self.dropped += max(len(chunk) - room, 0)

    def text(self) -> str:
        # A cut inside a multi-byte character drops that partial character (final=False).
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(bytes(self.data), final=not self.dropped)


def _require_shell_allowed(settings: TaskSettings) -> None:
    if not settings.allow_shell:
        raise TaskFailed("shell steps are disabled on this server (allow_shell=False)", retryable=False)


def _resolve_cwd(workspace: Workspace, cwd: str | None) -> str:
    directory = confine(workspace, cwd) if cwd is not None else workspace.root
    if not directory.is_dir():
        rel = workspace.relative(directory)
        raise TaskFailed(f"cwd '{rel}' is not a directory", details={"cwd": rel}, retryable=False)
    return str(directory)


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal a whole process group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _group_running(pgid: int) -> bool:
    """Whether a process of the group is still running. Zombies do not count: an exited
    orphan stays a zombie until PID 1 reaps it, which some container inits do late."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return _signal_group(pgid, 0)
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


async def _stop_process_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after the grace period, reap the shell.

    The shell is the leader of its own session, so its pid is the group id, and the group
    outlives it as long as a background job does. Also called after a normal exit, so a step
    never leaves stragglers behind.
    """
    pgid = proc.pid
    if _signal_group(pgid, signal.SIGTERM):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_GRACE_S
        while loop.time() < deadline and _group_running(pgid):
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


async def _stop_despite_cancellation(proc: asyncio.subprocess.Process) -> None:
    """Run the group shutdown to the end even if this task is cancelled again meanwhile."""
    await asyncio.shield(asyncio.ensure_future(_stop_process_group(proc)))


async def _communicate(proc: asyncio.subprocess.Process, stdout: _Capture, stderr: _Capture) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    await asyncio.gather(stdout.drain(proc.stdout), stderr.drain(proc.stderr))
    await proc.wait()


def _result(proc: asyncio.subprocess.Process, stdout: _Capture, stderr: _Capture, started: float) -> dict[str, Any]:
    return {
        "exit_code": proc.returncode,
        "stdout": stdout.text(),
        "stderr": stderr.text(),
        "truncated": {"stdout": stdout.dropped > 0, "stderr": stderr.dropped > 0},
        "dropped_bytes": {"stdout": stdout.dropped, "stderr": stderr.dropped},
        "duration_ms": round((time.monotonic() - started) * 1000),
    }


class ShellTask(Task):
    """Runs a shell command confined to a workspace directory."""

    name = "shell"
    Config = ShellConfig
    description = (
        "Run a shell command in the workspace. Output: `exit_code`, `stdout`, `stderr` (each capped at "
        "the server's max_output_bytes; `truncated` and `dropped_bytes` say what was cut), `duration_ms`. "
        "A non-zero exit fails the step unless `allow_failure`."
    )

    async def preview(self, config: ShellConfig, ctx: TaskContext) -> dict[str, Any]:
        """The command and where it would run (environment values are not shown: they may be secrets)."""
        cwd = await asyncio.to_thread(_resolve_cwd, ctx.workspace, config.cwd)
        return {
            "kind": "command",
            "command": config.command,
            "cwd": ctx.workspace.relative(Path(cwd)),
            "env": sorted(config.env or {}),
        }

    async def run(self, config: ShellConfig, ctx: TaskContext) -> dict[str, Any]:
        _require_shell_allowed(ctx.settings)
        cwd = await asyncio.to_thread(_resolve_cwd, ctx.workspace, config.cwd)
        stdout, stderr = _Capture(ctx.settings.max_output_bytes), _Capture(ctx.settings.max_output_bytes)
        started = time.monotonic()
        spawning = asyncio.ensure_future(self._spawn(config, cwd))
        try:
            proc = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Cancelled while the process was starting: let it finish starting, then stop
            # its whole group, or the command's children would outlive the step.
            await _stop_despite_cancellation(await spawning)
            raise
        timed_out = False
        try:
            async with asyncio.timeout(config.timeout_s):
                await _communicate(proc, stdout, stderr)
        except TimeoutError:
            timed_out = True
        finally:
            await _stop_despite_cancellation(proc)
        result = _result(proc, stdout, stderr, started)
        if timed_out:
            raise TaskFailed(f"command timed out after {config.timeout_s:g} s", details=result)
        if proc.returncode != 0 and not config.allow_failure:
            raise TaskFailed(f"command exited with {proc.returncode}", details=result)
        return result

    @staticmethod
    async def _spawn(config: ShellConfig, cwd: str) -> asyncio.subprocess.Process:
        reread_environment()  # the command gets the environment: its values are masked in its output
        try:
            return await asyncio.create_subprocess_shell(
                config.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env={**os.environ, **config.env},
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the command or env
            raise TaskFailed(f"could not start the command: {exc}", retryable=False) from exc
