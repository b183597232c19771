"""A local OpenAI-compatible chat completions server, for offline tests and benchmarks.

Tests of LLM steps should exercise the real client stack (litellm, the OpenAI SDK, HTTP,
SSE parsing) without the network or an API key, so this is a real HTTP server on a
background thread rather than a mock. Point an agent at it with ``model="openai/<any>"``
and ``api_base=server.url``.

It speaks ``POST /v1/chat/completions`` with plain JSON replies and SSE streaming (with a
final usage chunk when ``stream_options.include_usage`` is set), counts requests, records
the last request body and headers (so tests can prove what was, and was not, sent), can sleep ``delay_s`` per request (benchmarks measure the engine's
concurrency, not the model), can fail the first ``fail_first`` requests with
``fail_status`` (to exercise retries), and can demand an API key (to exercise auth errors).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Reply = str | Callable[[dict[str, Any]], str]
COMPLETIONS_PATH = "/v1/chat/completions"


class OpenAIStubServer:
    """``with OpenAIStubServer(reply="hi") as server: ...`` then call ``server.url``.

    ``reply`` is the assistant text, or a callable that computes it from the request body.
    When ``api_key`` is set, requests must carry ``Authorization: Bearer <api_key>``; any
    other key gets a 401 whose message quotes the key it received, as some real providers
    do, so that tests can prove callers scrub keys from error text.
    """

    def __init__(
        self,
        reply: Reply = "Hello from the stub.",
        delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_first: int = 0,
        fail_status: int = 500,
        api_key: str | None = None,
        chunk_chars: int = 8,
    ) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.api_key = api_key
        self.chunk_chars = max(1, chunk_chars)
        self.request_count = 0
        self.last_request: dict[str, Any] | None = None
        self.last_headers: dict[str, str] = {}
        """The last request's headers, names lower-cased."""
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to use as ``api_base`` (``http://host:port/v1``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIStubServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-stub", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        """Count the request and return its 1-based number (decides the failure mode)."""
        with self._lock:
            self.request_count += 1
            self.last_request = body
            self.last_headers = headers
            return self.request_count

    def _reply_text(self, body: dict[str, Any]) -> str:
        return self.reply(body) if callable(self.reply) else self.reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default (5) refuses connections under 64 concurrent clients

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], stub: OpenAIStubServer) -> None:
        super().__init__(address, handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a cancelled or killed caller) is expected, not an error to print."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with real APIs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: benchmarks make thousands of requests."""

    def do_POST(self) -> None:
        body = self._read_json()
        if self.path.rstrip("/") != COMPLETIONS_PATH:
            self._send_error(HTTPStatus.NOT_FOUND, f"no route for POST {self.path}", "invalid_request_error")
            return
        if body is None:
            self._send_error(HTTPStatus.BAD_REQUEST, "request body is not a JSON object", "invalid_request_error")
            return
        stub = self.server.stub
        number = stub._record(body, {name.lower(): value for name, value in self.headers.items()})
        if stub.delay_s > 0:
            time.sleep(stub.delay_s)
        if not self._authorized(stub):
            return
        if number <= stub.fail_first:
            self._send_error(stub.fail_status, f"stub failure for request {number}", "server_error")
            return
        completion = _Completion(model=str(body.get("model", "stub")), text=stub._reply_text(body), body=body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._send_stream(completion.chunks(stub.chunk_chars, include_usage))
        else:
            self._send_json(HTTPStatus.OK, completion.message())

    def _authorized(self, stub: OpenAIStubServer) -> bool:
        if stub.api_key is None:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given == stub.api_key:
            return True
        self._send_error(HTTPStatus.UNAUTHORIZED, f"Incorrect API key provided: {given}", "invalid_request_error")
        return False

    def _read_json(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, kind: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": int(status)}})

    def _send_stream(self, events: Iterator[dict[str, Any]]) -> None:
        """Server-sent events in HTTP/1.1 chunked encoding, so the connection stays reusable."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Completion:
    """One reply, shaped as a chat completion or as a sequence of completion chunks."""

    def __init__(self, model: str, text: str, body: dict[str, Any]) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.text = text
        self.usage = {
            "prompt_tokens": _count_tokens(json.dumps(body.get("messages", []))),
            "completion_tokens": _count_tokens(text),
        }
        self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def message(self) -> dict[str, Any]:
        choice = {"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": "stop"}
        return self._envelope("chat.completion") | {"choices": [choice], "usage": self.usage}

    def chunks(self, size: int, include_usage: bool) -> Iterator[dict[str, Any]]:
        envelope = self._envelope("chat.completion.chunk")
        yield envelope | {"choices": [_delta({"role": "assistant", "content": ""})]}
        for start in range(0, len(self.text), size):
            yield envelope | {"choices": [_delta({"content": self.text[start : start + size]})]}
        yield envelope | {"choices": [_delta({}, finish_reason="stop")]}
        if include_usage:
            yield envelope | {"choices": [], "usage": self.usage}


def _delta(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


def _count_tokens(text: str) -> int:
    """A rough, deterministic token count (about four characters per token)."""
    return max(1, (len(text) + 3) // 4) if text else 0


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground (``python -m clarion_jupyter.testing.openai_server``): a
    separate process keeps the stub's own CPU out of the process being measured."""
    import argparse

    parser = argparse.ArgumentParser(description="Local OpenAI-compatible stub server (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--reply", default="Hello from the stub.")
    args = parser.parse_args(argv)
    server = OpenAIStubServer(reply=args.reply, delay_s=args.delay_s, port=args.port)
    print(server.url, flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
