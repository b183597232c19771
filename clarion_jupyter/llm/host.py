"""ProcessProvider: litellm in a child process, so the process that calls models never imports it.

Importing litellm costs seconds of CPU, and parts of it (pydantic schema builds, the cost
map's JSON) are C calls that hold the GIL for a tenth of a second at a time: even in a
thread, the import stalls the Jupyter server's event loop. Every call also spends
milliseconds of Python in litellm. In a child process neither touches the caller's loop.

The child (:func:`main`) speaks JSON lines on its stdin and stdout:

- to the child: ``{"id", "op": "complete" | "count" | "quote", "request", "api_key"}``, ``{"id", "op":
  "count_texts", "model", "texts"}``, ``{"id", "op": "window", "model"}`` and ``{"id", "op": "cancel"}``;
- from the child: ``{"ready": true}`` once litellm is imported; ``{"id", "token"}`` per streamed
  delta, then ``{"id", "result"}`` or ``{"id", "error"}``.

Both sides batch: the child writes what a turn of its loop produced in one write, with a call's
consecutive deltas joined into one ``token`` message (a stream that arrived in one read is one
message, not one per chunk); the engine's reader hands each loop everything one read brought
in one wake-up, and its writer sends every queued request in one write. Per call that is a few
system calls and thread hand-offs fewer on both sides of a machine whose cores are the limit.

The key is read from the caller's environment at call time (a notebook may export it after
the child started) and goes to the child over the pipe only. One child serves every event
loop of the process: pipes are read and written by threads, and each answer is handed to
the loop that asked. A child that dies fails its calls as retryable; the next call starts
another. It exits when its stdin closes, so it never outlives its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import IO, Any

from .pricing import Quote
from .provider import LiteLLMProvider, LLMRequest, LLMResult, ProviderError, TokenCallback, read_api_key


@dataclass(slots=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    on_token: TokenCallback | None = None


class _Child:
    """One child process, its pipes' threads, and the calls it has been asked."""

    def __init__(self, on_exit: Callable[[_Child], None]) -> None:
        environment = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import asyncio, {__name__} as host; asyncio.run(host.main())"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        self.outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.calls: dict[int, _Call] = {}
        self.ready = False
        """Whether litellm is imported there (seconds after the start): till then, calls go to ready children."""
        self._on_exit = on_exit
        threading.Thread(target=self._write, daemon=True, name="clarion-llm-host-in").start()
        threading.Thread(target=self._read, daemon=True, name="clarion-llm-host-out").start()

    def _write(self) -> None:
        """Writes in a thread: a prompt of megabytes fills the pipe, and must not block a loop."""
        pipe = self.process.stdin
        assert pipe is not None
        try:
            while (lines := _drain(self.outbox)) is not None:
                pipe.write(lines)
                pipe.flush()
        except (BrokenPipeError, ValueError):  # the child is gone: its reader fails the calls
            pass
        finally:
            pipe.close()

    def _read(self) -> None:
        """Reads what the child wrote so far, and wakes each loop once for all of it that is its."""
        assert self.process.stdout is not None
        pipe, pending = self.process.stdout.fileno(), b""
        while chunk := os.read(pipe, _READ_SIZE):
            *lines, pending = (pending + chunk).split(b"\n")
            batches: dict[asyncio.AbstractEventLoop, list[tuple[_Call, dict[str, Any]]]] = {}
            for line in lines:
                message = json.loads(line)
                if "ready" in message:
                    self.ready = True
                elif (call := self.calls.get(message["id"])) is not None:
                    batches.setdefault(call.loop, []).append((call, message))
            for loop, batch in batches.items():
                _deliver(loop, batch)
        code = self.process.wait()
        self._on_exit(self)
        ended = ProviderError(f"the LLM host process ended (exit code {code})", retryable=True)
        for call in list(self.calls.values()):
            _deliver(call.loop, [(call, {"error": _error_dict(ended)})])


_READ_SIZE = 1 << 16
"""Bytes asked of the child's pipe per read: every reply a busy child has written since the last."""


def _drain(outbox: queue.SimpleQueue[bytes | None]) -> bytes | None:
    """Every line queued now, waiting for the first; None once :meth:`ProcessProvider.close`
    asked the writer to stop (the lines queued before that are written first)."""
    if (first := outbox.get()) is None:
        return None
    lines = [first]
    while not outbox.empty():
        if (line := outbox.get_nowait()) is None:
            outbox.put(None)
            break
        lines.append(line)
    return b"".join(lines)


BUSY_CALLS = 4
"""Calls in flight per child before another child is worth starting (litellm's own work,
~9 ms of CPU per call, makes one child a bottleneck on a busy machine)."""


class ProcessProvider:
    """The default provider: :class:`LiteLLMProvider`, run by child processes.

    One child serves light use; when every child has :data:`BUSY_CALLS` calls in flight,
    another starts (up to ``max_processes``, by default the number of CPUs, at most 4: each
    holds litellm's ~150 MB), and each call goes to the child with the fewest in flight among
    those that are ready: a child just started imports litellm for seconds, and a call sent to
    it would wait for that while the others have room.
    """

    def __init__(self, max_processes: int | None = None) -> None:
        self.max_processes = max_processes or min(os.cpu_count() or 1, 4)
        self._lock = threading.Lock()
        self._children: list[_Child] = []
        self._ids = itertools.count(1)
        self._windows: dict[str, int | None] = {}

    @property
    def pids(self) -> list[int]:
        """The children's process ids (none before the first call)."""
        return [child.process.pid for child in self._children]

    async def warm(self) -> None:
        """Start a child, which imports litellm at once, while the caller's loop keeps serving."""
        await asyncio.to_thread(self._start)

    async def settled(self) -> None:
        """Until every child started so far has imported litellm: what a benchmark waits for
        before it times calls (a child started by a burst of calls is still importing after it)."""
        while not all(child.ready for child in self._children):
            await asyncio.sleep(0.05)

    async def complete(self, request: LLMRequest, on_token: TokenCallback | None = None) -> LLMResult:
        api_key = read_api_key(request.api_key_env)
        message = {"op": "complete", "request": _fields(request), "api_key": api_key}
        return LLMResult(**await self._ask(message, on_token))

    async def count_tokens(self, request: LLMRequest) -> int:
        return int(await self._ask({"op": "count", "request": _fields(request)}))

    async def count_text_tokens(self, model: str, texts: list[str]) -> list[int]:
        return [int(n) for n in await self._ask({"op": "count_texts", "model": model, "texts": texts})]

    async def quote(self, request: LLMRequest) -> Quote:
        return Quote(**await self._ask({"op": "quote", "request": asdict(request)}))

    async def max_input_tokens(self, model: str) -> int | None:
        """Asked once per model: litellm's model map does not change while a process runs."""
        if model not in self._windows:
            window = await self._ask({"op": "window", "model": model})
            self._windows[model] = int(window) if window is not None else None
        return self._windows[model]

    async def aclose(self) -> None:
        """Nothing of the children is bound to the caller's loop: they serve the next loop too."""

    def close(self) -> None:
        """Stop the children now (they also stop by themselves when this process exits)."""
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            child.outbox.put(None)

    async def _ask(self, message: dict[str, Any], on_token: TokenCallback | None = None) -> Any:
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        call = _Call(loop, loop.create_future(), on_token)
        line = _line({"id": call_id, **message})
        while (child := self._send(call_id, call, line)) is None:
            await asyncio.to_thread(self._start)
        try:
            return await call.future
        except asyncio.CancelledError:
            child.outbox.put(_line({"id": call_id, "op": "cancel"}))
            raise
        finally:
            child.calls.pop(call_id, None)

    def _send(self, call_id: int, call: _Call, line: bytes) -> _Child | None:
        """Registered and queued under the lock, so a child that ends meanwhile fails the call;
        None when a child should be started first."""
        with self._lock:
            ready = [c for c in self._children if c.ready]
            child = min(ready or self._children, key=lambda c: len(c.calls), default=None)
            if child is None:
                return None
            starting = len(ready) < len(self._children)
            if len(child.calls) >= BUSY_CALLS and not starting and len(self._children) < self.max_processes:
                return None
            child.calls[call_id] = call
            child.outbox.put(line)
            return child

    def _start(self) -> None:
        """Start a child unless one has room for more calls (or all that may run do)."""
        with self._lock:
            idle = any(len(child.calls) < BUSY_CALLS for child in self._children)
            if not idle and len(self._children) < self.max_processes:
                self._children.append(_Child(self._ended))

    def _ended(self, child: _Child) -> None:
        with self._lock:
            if child in self._children:
                self._children.remove(child)


_REQUEST_FIELDS = tuple(f.name for f in fields(LLMRequest))


def _fields(request: LLMRequest) -> dict[str, Any]:
    """The request as it goes on the pipe: its fields as they are (``asdict`` would deep-copy
    every message, only for them to be encoded at once)."""
    return {name: getattr(request, name) for name in _REQUEST_FIELDS}


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode() + b"\n"


def _deliver(loop: asyncio.AbstractEventLoop, batch: list[tuple[_Call, dict[str, Any]]]) -> None:
    """Hand messages to the loop that made their calls, in one wake-up (dropped when that loop has closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, batch)


def _settle(batch: list[tuple[_Call, dict[str, Any]]]) -> None:
    for call, message in batch:
        if call.future.done():
            continue
        if "token" in message:
            if call.on_token is not None:
                call.on_token(message["token"])
        elif "error" in message:
            call.future.set_exception(ProviderError(**message["error"]))
        else:
            call.future.set_result(message["result"])


def _error_dict(error: ProviderError) -> dict[str, Any]:
    return {"message": error.message, "retryable": error.retryable, "status_code": error.status_code}


class _Replies:
    """The child's outgoing messages, written once per turn of its loop: what every call
    produced in that turn goes in one write, and a call's consecutive deltas in one message."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._pending: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        last = self._pending[-1] if self._pending else None
        if last is not None and "token" in message and "token" in last and last["id"] == message["id"]:
            self._pending[-1] = {"id": last["id"], "token": last["token"] + message["token"]}
        else:
            self._pending.append(message)

    def flush(self) -> None:
        messages, self._pending = self._pending, []
        if messages:
            self._pipe.write(b"".join(_line(message) for message in messages))
            self._pipe.flush()


async def _serve(requests: asyncio.StreamReader, pipe: IO[bytes]) -> None:
    """The child's side: runs each call as a task, answering in the order results come."""
    provider = LiteLLMProvider()
    running: dict[int, asyncio.Task[None]] = {}
    replies = _Replies(pipe)
    send = replies.send

    async def perform(call_id: int, message: dict[str, Any]) -> Any:
        op = message["op"]
        if op == "count_texts":
            return await provider.count_text_tokens(message["model"], message["texts"])
        if op == "window":
            return await provider.max_input_tokens(message["model"])
        request = LLMRequest(**message["request"])
        if op == "count":
            return await provider.count_tokens(request)
        if op == "quote":
            return asdict(await provider.quote(request))
        result = await provider.call(request, message["api_key"], lambda token: send({"id": call_id, "token": token}))
        return asdict(result)

    async def answer(call_id: int, message: dict[str, Any]) -> None:
        try:
            send({"id": call_id, "result": await perform(call_id, message)})
        except ProviderError as exc:
            send({"id": call_id, "error": _error_dict(exc)})
        except Exception as exc:
            send({"id": call_id, "error": _error_dict(ProviderError(f"{type(exc).__name__}: {exc}", retryable=True))})
        finally:
            running.pop(call_id, None)

    warming = asyncio.ensure_future(provider.warm())
    warming.add_done_callback(lambda _: send({"ready": True}))  # failed too: calls then say why
    while line := await requests.readline():
        message = json.loads(line)
        if message["op"] == "cancel":
            if (task := running.get(message["id"])) is not None:
                task.cancel()
            continue
        running[message["id"]] = asyncio.create_task(answer(message["id"], message))
    for task in running.values():
        task.cancel()
    await asyncio.gather(warming, *running.values(), return_exceptions=True)
    replies.flush()
    await provider.aclose()


async def main() -> None:
    """The child process."""
    # The protocol keeps the real stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader(limit=2**31)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    await _serve(requests, replies)
