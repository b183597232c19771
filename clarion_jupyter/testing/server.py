"""A real Jupyter server with the Clarion extension, in its own process, for tests and benchmarks.

Some clients cannot share the server's event loop (schemathesis and browsers drive it with
blocking calls; benchmarks must not measure themselves), and restart tests need a process
to stop and start again. This runs ``jupyter server`` (or ``jupyter lab``) on 127.0.0.1 with
a fresh token, its own config and runtime dirs, and the Clarion traits given.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, a CI job cancelled) into ``SystemExit`` in the main thread, so
    a benchmark unwinds its ``with JupyterServerProcess`` blocks: the servers run in sessions of
    their own, and would outlive a process killed without that."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterServerProcess:
    """``with JupyterServerProcess(tmp) as server: await server.wait_ready(); server.url ...``"""

    def __init__(
        self,
        workdir: Path,
        db_path: Path | None = None,
        *,
        app: str = "jupyter_server",
        clarion: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``server`` holds ServerApp traits, ``config`` other apps' sections (``{"LabApp": {...}}``)."""
        self.workdir = Path(workdir)
        self.db_path = Path(db_path) if db_path else self.workdir / "clarion.duckdb"
        self.app = app
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.root = self.workdir / "root"
        self.log_path = self.workdir / "server.log"
        self.url = f"http://127.0.0.1:{self.port}/"
        self._clarion = {"db_path": str(self.db_path), **(clarion or {})}
        self._server = server or {}
        self._config = config or {}
        self._env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> JupyterServerProcess:
        if self.process is not None and self.process.poll() is None:
            return self
        config_dir = self.workdir / "config"
        for folder in (config_dir, self.root, self.workdir / "runtime"):
            folder.mkdir(parents=True, exist_ok=True)
        config = {
            "ServerApp": {
                "jpserver_extensions": {"clarion_jupyter": True},
                "ip": "127.0.0.1",
                "port": self.port,
                "port_retries": 0,
                "open_browser": False,
                "root_dir": str(self.root),
                **self._server,
            },
            "IdentityProvider": {"token": self.token},
            "ClarionExtension": self._clarion,
            **self._config,
        }
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **self._env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.app, "--allow-root"],
                env=env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the v3 API (``path`` below ``/api/v3/``), answered as JSON."""
        response = await AsyncHTTPClient().fetch(
            f"{self.url}api/v3/{path}",
            method=method,
            body=None if body is None else json.dumps(body),
            headers=self.headers,
        )
        return json.loads(response.body)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the extension answers its health check (the engine is up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_tail()}")
            try:
                await self.request("GET", "health")
                return
            except (ConnectionError, HTTPClientError):
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the server did not become ready in {timeout} s:\n{self.log_tail()}")

    async def run_until(self, run_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
        """Poll the run document until ``done(run)``; the document then, else an AssertionError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            run = await self.request("GET", f"runs/{run_id}")
            if done(run):
                return run
            if loop.time() > deadline:
                raise AssertionError(f"run {run_id} is still {run['status']} after {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM lets Jupyter stop the extension cleanly; SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux ``/proc``)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> JupyterServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
