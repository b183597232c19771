"""A Python client for the Clarion v3 REST and WebSocket API.

The notebook magic, scripts and other tools use it to talk to the same server (and so the
same runs) the JupyterLab sidebar shows. It is async-first and built on tornado, which
every Jupyter installation already has, so it adds no dependency.

    async with Client("http://127.0.0.1:8888/", token="...") as clarion:
        run_id = await clarion.run("triage", {"report": "bug.md"})
        async for event in clarion.subscribe(run_id):
            print(event["seq"], event["type"], event["step_id"])
        run = await clarion.wait(run_id)

Every error answer of the API raises :class:`ClarionAPIError` carrying the HTTP status and
the API's stable error ``code``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from tornado.httpclient import (
    AsyncHTTPClient,
    HTTPClientError,
    HTTPRequest,
    HTTPResponse,
)
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    websocket_connect,
)

from ..core.errors import ClarionError
from ..core.protocol import TERMINAL_EVENT_TYPES, CloseCode, RunStatus

JsonDoc = Mapping[str, Any]


class ClarionAPIError(ClarionError):
    """An error answer of the Clarion API (or a failure to reach it).

    ``status`` is the HTTP status (599 when the server could not be reached) and ``code``
    the API's stable error code (``not_found``, ``conflict``, ``invalid``, ...), so callers
    branch on those rather than on message text.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    @classmethod
    def from_response(cls, status: int, body: bytes | None, reason: str | None = None) -> ClarionAPIError:
        """Read the API's ``{"error": {...}}`` body; Jupyter's own answers and proxies' pages get a generic code."""
        try:
            data = json.loads(body or b"")
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            error = data["error"]
            return cls(status, str(error.get("code", "error")), str(error.get("message", "")), error.get("details"))
        message = data.get("message") if isinstance(data, dict) and data.get("message") else reason
        return cls(status, _GENERIC_CODES.get(status, "http_error"), str(message or f"HTTP {status}"))


_GENERIC_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                  409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid"}  # fmt: skip


class Client:
    """The Clarion API of one Jupyter server.

    ``url`` is the server's base URL including its ``base_url`` (``http://127.0.0.1:8888/``,
    ``https://hub.example.org/user/ada/``); ``token`` is the Jupyter token, sent as
    ``Authorization: token ...``. The HTTP client is created on first use, so a Client can
    be built on one thread and used on another thread's event loop (as the notebook magic
    does), but only ever on one loop at a time. ``max_clients`` bounds the requests in
    flight at once (more wait in line); raise it for many concurrent callers.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_clients: int = 10,
        reconnect_attempts: int = 5,
        reconnect_backoff: float = 0.1,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout
        self.max_clients = max_clients
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff = reconnect_backoff
        self._http: AsyncHTTPClient | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- server ------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._request("GET", "api/v3/health")

    async def has_kernel(self, kernel_id: str) -> bool:
        """Whether this Jupyter server runs the kernel (how a kernel finds its own server)."""
        try:
            await self._request("GET", _path("api/kernels", kernel_id))
        except ClarionAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def tasks(self) -> list[dict[str, Any]]:
        """Task types with their config JSON schemas."""
        return (await self._request("GET", "api/v3/tasks"))["tasks"]

    # -- agents ------------------------------------------------------------------

    async def list_agents(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "api/v3/agents"))["agents"]

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        return await self._request("GET", _path("api/v3/agents", agent_id))

    async def create_agent(self, doc: JsonDoc) -> dict[str, Any]:
        return await self._request("POST", "api/v3/agents", body=doc)

    async def update_agent(self, agent_id: str, doc: JsonDoc) -> dict[str, Any]:
        return await self._request("PUT", _path("api/v3/agents", agent_id), body=doc)

    async def delete_agent(self, agent_id: str) -> None:
        await self._request("DELETE", _path("api/v3/agents", agent_id))

    async def import_agents(
        self, source: str | bytes | Sequence[tuple[str, bytes]], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Import Clarion v2 data: agent documents (YAML or JSON text), a ``clarion.db`` (bytes),
        or several files as ``(name, content)`` (a folder: the report names each file)."""
        body: str | bytes
        if isinstance(source, str):
            body, content_type = source, "text/plain"
        elif isinstance(source, bytes):
            body, content_type = source, "application/octet-stream"
        else:
            boundary = uuid.uuid4().hex
            body, content_type = _multipart(source, boundary), f"multipart/form-data; boundary={boundary}"
        params = {"dry_run": "true"} if dry_run else None
        return await self._request("POST", "api/v3/agents/import", params=params, body=body, content_type=content_type)

    # -- workflows ---------------------------------------------------------------

    async def list_workflows(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "api/v3/workflows"))["workflows"]

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return await self._request("GET", _path("api/v3/workflows", workflow_id))

    async def create_workflow(self, doc: JsonDoc | str) -> dict[str, Any]:
        """Save a workflow given as a mapping or as YAML text (sent as YAML, so the server keeps the source)."""
        return await self._request("POST", "api/v3/workflows", body=doc, content_type=_workflow_type(doc))

    async def update_workflow(self, workflow_id: str, doc: JsonDoc | str) -> dict[str, Any]:
        return await self._request(
            "PUT", _path("api/v3/workflows", workflow_id), body=doc, content_type=_workflow_type(doc)
        )

    async def delete_workflow(self, workflow_id: str) -> None:
        await self._request("DELETE", _path("api/v3/workflows", workflow_id))

    # -- runs --------------------------------------------------------------------

    async def run(self, workflow_id: str, inputs: JsonDoc | None = None, idempotency_key: str | None = None) -> str:
        """Start a run of a saved workflow; returns its id as soon as it is queued."""
        body: dict[str, Any] = {"inputs": dict(inputs or {})}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return (await self._request("POST", _path("api/v3/workflows", workflow_id, "run"), body=body))["run_id"]

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self._request("GET", _path("api/v3/runs", run_id))

    async def list_runs(
        self, workflow_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page, newest first: ``{"runs": [...], "next_cursor": str | None}``."""
        params = {"workflow_id": workflow_id, "status": status, "limit": limit, "cursor": cursor}
        return await self._request("GET", "api/v3/runs", params=params)

    async def iter_runs(
        self, workflow_id: str | None = None, status: str | None = None, page_size: int = 50
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching run, newest first, fetching pages as the caller reads."""
        cursor: str | None = None
        while True:
            page = await self.list_runs(workflow_id, status, page_size, cursor)
            for run in page["runs"]:
                yield run
            cursor = page["next_cursor"]
            if not cursor:
                return

    async def cancel(self, run_id: str) -> dict[str, Any] | None:
        """Ask the server to cancel a run; it ends shortly after with ``workflow_cancelled``."""
        return await self._request("POST", _path("api/v3/runs", run_id, "cancel"))

    async def run_agent(
        self,
        agent_id: str,
        prompt: str,
        *,
        files: list[str] | None = None,
        variables: JsonDoc | None = None,
        apply: str = "review",
    ) -> str:
        """Start an agent run; its run id (the run's ``apply`` step waits for approval when ``review``)."""
        body = {"prompt": prompt, "files": files or [], "variables": dict(variables or {}), "apply": apply}
        return (await self._request("POST", _path("api/v3/agents", agent_id, "run"), body=body))["run_id"]

    async def prompt_agent(
        self, agent_id: str, prompt: str, *, files: list[str] | None = None, variables: JsonDoc | None = None
    ) -> dict[str, Any]:
        """The exact messages an agent run would send and their token count, without calling the model."""
        body = {"prompt": prompt, "files": files or [], "variables": dict(variables or {})}
        return await self._request("POST", _path("api/v3/agents", agent_id, "prompt"), body=body)

    async def approve(self, run_id: str, step_key: str, comment: str | None = None) -> dict[str, Any]:
        """Let a ``waiting`` step run (409 ``conflict`` when it is not waiting)."""
        return await self._decide(run_id, step_key, "approve", comment)

    async def reject(self, run_id: str, step_key: str, comment: str | None = None) -> dict[str, Any]:
        """Refuse a ``waiting`` step: it fails, or is skipped when its approval says ``on_reject: skip``."""
        return await self._decide(run_id, step_key, "reject", comment)

    async def _decide(self, run_id: str, step_key: str, decision: str, comment: str | None) -> dict[str, Any]:
        body = {"decision": decision, **({"comment": comment} if comment is not None else {})}
        return await self._request("POST", _path("api/v3/runs", run_id, "approvals", step_key), body=body)

    async def events(self, run_id: str, since: int = 0) -> list[dict[str, Any]]:
        """The run's stored events with ``seq > since``."""
        return (await self._request("GET", _path("api/v3/runs", run_id, "events"), params={"since": since}))["events"]

    async def subscribe(self, run_id: str, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The run's events with ``seq > since``, stored then live, ending after the terminal event.

        A dropped connection, or the server closing it because this client fell behind
        (close code 4008), is resumed from the last event received, so the caller sees
        every event once and in order. Reconnecting gives up after ``reconnect_attempts``
        consecutive attempts that delivered nothing.
        """
        last = since
        failures = 0
        while True:
            conn = await self._connect(_path("ws/runs", run_id, "subscribe"), {"since": last}, failures)
            progressed = False
            try:
                while (message := await conn.read_message()) is not None:
                    event = json.loads(message)
                    if event["seq"] <= last:
                        continue  # delivery is at least once: a replay may overlap what we had
                    last, progressed = event["seq"], True
                    yield event
                    if event["type"] in TERMINAL_EVENT_TYPES:
                        return
            finally:
                conn.close()
            if conn.close_code == CloseCode.not_found:
                raise ClarionAPIError(404, "not_found", f"run '{run_id}' not found", {"run_id": run_id})
            failures = 0 if progressed else failures + 1
            await self._give_up_or_back_off(failures, f"subscription to run '{run_id}' closed ({conn.close_code})")

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Every run's events as they are stored, for as long as the caller iterates (the
        sidebar's feed). It is live only: after a reconnect, fill a run's gap with
        :meth:`events` and the last ``seq`` seen for it."""
        failures = 0
        while True:
            conn = await self._connect("ws/runs", {}, failures)
            progressed = False
            try:
                while (message := await conn.read_message()) is not None:
                    progressed = True
                    yield json.loads(message)
            finally:
                conn.close()
            failures = 0 if progressed else failures + 1
            await self._give_up_or_back_off(failures, f"the all-runs stream closed ({conn.close_code})")

    async def wait(self, run_id: str) -> dict[str, Any]:
        """Follow the run until it ends; returns the final run document."""
        run = await self.get_run(run_id)
        if not RunStatus(run["status"]).terminal:
            async for _ in self.subscribe(run_id, since=run.get("last_seq") or 0):
                pass
            run = await self.get_run(run_id)
        return run

    # -- history -----------------------------------------------------------------

    async def query(self, sql: str) -> dict[str, Any]:
        """Read-only SQL over the run history views: ``{"columns", "rows", "truncated"}``."""
        return await self._request("POST", "api/v3/query", body={"sql": sql})

    # -- plumbing ----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: JsonDoc | str | bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call: the decoded JSON answer (None for 204), or :class:`ClarionAPIError`."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        headers = {"Accept": "application/json", **self._headers()}
        if body is not None:
            headers["Content-Type"] = content_type
            if not isinstance(body, str | bytes):
                body = json.dumps(body)
        elif method in ("POST", "PUT"):
            body = b""  # tornado insists on a body for these methods
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_clients=self.max_clients)
        url = self.url + path + (f"?{query}" if query else "")
        request = HTTPRequest(url, method=method, headers=headers, body=body, request_timeout=self.timeout)
        try:
            response = await self._http.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, unresolvable, timed out (599): no answer at all
            raise ClarionAPIError(599, "unreachable", f"cannot reach the Clarion server at {self.url}: {exc}") from exc
        return _decode(response)

    async def _connect(self, path: str, query: Mapping[str, Any], failures: int) -> WebSocketClientConnection:
        """Open a WebSocket under the base URL, retrying transport failures; an HTTP 4xx is final."""
        scheme, netloc, base, _, _ = urlsplit(self.url)
        ws_scheme = "wss" if scheme == "https" else "ws"
        url = urlunsplit((ws_scheme, netloc, base + path, urlencode(query), ""))
        while True:
            try:
                request = HTTPRequest(url, headers=self._headers(), connect_timeout=self.timeout)
                # Our own pings notice a silently dead network, which would otherwise block a read forever.
                return await websocket_connect(request, ping_interval=self.timeout, ping_timeout=self.timeout)
            except HTTPClientError as exc:
                if exc.code != 599 and exc.code < 500:
                    body = exc.response.body if exc.response is not None else None
                    raise ClarionAPIError.from_response(exc.code, body, exc.message) from None
                reason = f"connecting to {path} failed: {exc}"
            except (OSError, WebSocketClosedError) as exc:
                reason = f"connecting to {path} failed: {exc}"
            failures += 1
            await self._give_up_or_back_off(failures, reason)

    async def _give_up_or_back_off(self, failures: int, reason: str) -> None:
        if failures > self.reconnect_attempts:
            raise ClarionAPIError(599, "disconnected", f"{reason}; gave up after {failures} attempts")
        if failures:
            await asyncio.sleep(min(self.reconnect_backoff * 2 ** (failures - 1), 5.0))


def _path(collection: str, item_id: str, *rest: str) -> str:
    return "/".join((collection, *(quote(part, safe="") for part in (item_id, *rest))))


def _workflow_type(doc: JsonDoc | str) -> str:
    return "application/yaml" if isinstance(doc, str) else "application/json"


def _decode(response: HTTPResponse) -> Any:
    if response.code >= 400:
        raise ClarionAPIError.from_response(response.code, response.body, response.reason)
    if response.code == 204 or not response.body:
        return None
    return json.loads(response.body)


def _multipart(files: Sequence[tuple[str, bytes]], boundary: str) -> bytes:
    """A form upload of ``files``, one part each, as a browser sends a folder (names may hold
    any character but a line break: quotes and backslashes are escaped)."""
    parts = []
    for name, content in files:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()
