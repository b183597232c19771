"""The HTTP implementation of :class:`~.interface.Clarion`: a Jupyter server's v3 REST and WebSocket API.

The notebook magic, the CLI, scripts and other tools use it to talk to the same server (and
so the same runs) the JupyterLab sidebar shows. It answers in the engine's own models and
raises the engine's own exceptions (an API 409 is a :class:`~clarion_jupyter.core.errors.Conflict`,
a 422 a :class:`~clarion_jupyter.core.errors.ValidationFailed` with its problems), so code
written against the engine in process runs unchanged against a server. It is built on
tornado, which every Jupyter installation already has, so it adds no dependency.

    async with Client("http://127.0.0.1:8888/", token="...") as clarion:
        run_id = await clarion.submit_saved("triage", {"report": "bug.md"})
        async for event in clarion.subscribe(run_id):
            print(event.seq, event.type, event.step_id)
        run = await clarion.wait(run_id)
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
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

from ..agent.importer import AGENT_FILE_SUFFIXES, source_files
from ..agent.migration import DATABASE_SUFFIXES
from ..agent.models import Agent
from ..agent.v2db import is_sqlite_file
from ..core import errors
from ..core.errors import ClarionError, Problem
from ..core.protocol import TERMINAL_EVENT_TYPES, CloseCode
from ..storage.query import QueryResult
from ..storage.records import Event, StoredDocument
from ..workflow.agent_run import AgentRunRequest
from ..workflow.budget import Budget
from ..workflow.compare import RunComparison
from ..workflow.llm_cache import CacheStats
from ..workflow.models import Decision, RunPage, Workflow, WorkflowRun
from ..workflow.validation import WorkflowSource

JsonDoc = Mapping[str, Any]


class ClarionAPIError(ClarionError):
    """An error answer of the Clarion API, or a failure to reach it.

    ``status`` is the HTTP status (599 when the server could not be reached) and ``code`` the
    API's stable error code. An answer whose code the engine raises itself arrives as that
    engine exception too (see :func:`api_error`): ``except Conflict`` catches a 409 here as it
    catches the engine's own, and ``except ClarionAPIError`` still catches every API answer.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        ClarionError.__init__(self, message, details)  # not super(): an engine class may follow in the MRO
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
            return api_error(
                status, str(error.get("code", "error")), str(error.get("message", "")), error.get("details")
            )
        message = data.get("message") if isinstance(data, dict) and data.get("message") else reason
        return api_error(status, _GENERIC_CODES.get(status, "http_error"), str(message or f"HTTP {status}"))


_GENERIC_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                  409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid"}  # fmt: skip

_ENGINE_ERRORS: dict[str, type[ClarionError]] = {
    cls.code: cls
    for cls in (
        errors.BadRequest, errors.Forbidden, errors.NotFound, errors.Conflict, errors.ValidationFailed,
        errors.DatabaseLocked, errors.QueueUnavailable, errors.StorageUnavailable,
    )
}  # fmt: skip
_API_ERRORS: dict[str, type[ClarionAPIError]] = {
    code: type(f"API{cls.__name__}", (ClarionAPIError, cls), {"__doc__": f"{cls.__name__}, answered by the API."})
    for code, cls in _ENGINE_ERRORS.items()
}


def api_error(status: int, code: str, message: str, details: Any = None) -> ClarionAPIError:
    """The exception for one API error answer: the engine's own class for its codes (with a
    :class:`ValidationFailed`'s problems rebuilt), else a plain :class:`ClarionAPIError`."""
    error = _API_ERRORS.get(code, ClarionAPIError)(status, code, message, details)
    if isinstance(error, errors.ValidationFailed):
        error.problems = [
            Problem(**{k: p.get(k) for k in ("loc", "message", "step", "field")})
            for p in (details if isinstance(details, list) else [])
            if isinstance(p, dict) and "loc" in p and "message" in p
        ]
    return error


class Client:
    """The :class:`~.interface.Clarion` interface of one Jupyter server.

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

    def __str__(self) -> str:
        return f"the Jupyter server at {self.url}"

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

    async def aclose(self) -> None:
        self.close()

    # -- server ------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._request("GET", "api/v3/health")

    async def has_kernel(self, kernel_id: str) -> bool:
        """Whether this Jupyter server runs the kernel (how a kernel finds its own server)."""
        try:
            await self._request("GET", _path("api/kernels", kernel_id))
        except errors.NotFound:
            return False
        return True

    async def task_types(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "api/v3/tasks"))["tasks"]

    # -- agents ------------------------------------------------------------------

    async def list_agents(self) -> list[Agent]:
        return [Agent.model_validate(a) for a in (await self._request("GET", "api/v3/agents"))["agents"]]

    async def get_agent(self, agent_id: str) -> Agent:
        return Agent.model_validate(await self._request("GET", _path("api/v3/agents", agent_id)))

    async def create_agent(self, doc: JsonDoc | Agent) -> Agent:
        return Agent.model_validate(await self._request("POST", "api/v3/agents", body=_agent_body(doc)))

    async def replace_agent(self, agent_id: str, doc: JsonDoc | Agent) -> Agent:
        answer = await self._request("PUT", _path("api/v3/agents", agent_id), body=_agent_body(doc))
        return Agent.model_validate(answer)

    async def delete_agent(self, agent_id: str) -> None:
        await self._request("DELETE", _path("api/v3/agents", agent_id))

    async def import_agents(
        self, source: str | os.PathLike[str] | bytes | Sequence[tuple[str, bytes]], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Import Clarion v2 data: a path on this machine (a ``clarion.db``, agent files, or a
        folder of them: every file the engine would read there is uploaded, named as there, so
        the report is the same), a body (a ``clarion.db``'s bytes or documents' text as bytes),
        or several files as ``(name, content)``."""
        body: bytes | Path
        params = {"dry_run": "true"} if dry_run else None
        if isinstance(source, str | os.PathLike):
            path = Path(source).expanduser()
            if await asyncio.to_thread(is_sqlite_file, path):
                # Streamed from the disk in chunks, so a database of any size imports (the
                # server spools it to a file: its body limit does not apply to this upload).
                body, content_type = path, "application/octet-stream"
            else:
                source = await asyncio.to_thread(_uploads, path)
        if isinstance(source, bytes):
            body, content_type = source, "application/octet-stream"
        elif not isinstance(source, str | os.PathLike):
            boundary = uuid.uuid4().hex
            body, content_type = _multipart(source, boundary), f"multipart/form-data; boundary={boundary}"
        return await self._request("POST", "api/v3/agents/import", params=params, body=body, content_type=content_type)

    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str:
        """Start an agent run; its run id (the run's ``apply`` step waits for approval when ``review``)."""
        body = request.model_dump(mode="json")
        return (await self._request("POST", _path("api/v3/agents", agent_id, "run"), body=body))["run_id"]

    async def prompt_agent(self, agent_id: str, request: AgentRunRequest) -> dict[str, Any]:
        """The exact messages an agent run would send and their token count, without calling the model."""
        body = request.model_dump(mode="json", exclude={"apply"})
        return await self._request("POST", _path("api/v3/agents", agent_id, "prompt"), body=body)

    # -- workflows ---------------------------------------------------------------

    async def list_workflows(self) -> list[StoredDocument]:
        return [_stored(doc) for doc in (await self._request("GET", "api/v3/workflows"))["workflows"]]

    async def get_workflow(self, workflow_id: str) -> StoredDocument:
        return _stored(await self._request("GET", _path("api/v3/workflows", workflow_id)))

    async def create_workflow(self, source: JsonDoc | str | bytes) -> StoredDocument:
        """Save a workflow given as a mapping or as YAML text (sent as YAML, so the server keeps the source)."""
        return _stored(
            await self._request("POST", "api/v3/workflows", body=source, content_type=_workflow_type(source))
        )

    async def replace_workflow(self, workflow_id: str, source: JsonDoc | str | bytes) -> StoredDocument:
        path = _path("api/v3/workflows", workflow_id)
        return _stored(await self._request("PUT", path, body=source, content_type=_workflow_type(source)))

    async def delete_workflow(self, workflow_id: str) -> None:
        await self._request("DELETE", _path("api/v3/workflows", workflow_id))

    # -- runs --------------------------------------------------------------------

    async def submit(
        self,
        workflow: WorkflowSource,
        inputs: JsonDoc | None = None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | JsonDoc | None = None,
        cache: bool | None = None,
    ) -> str:
        """Run a document without saving it (``POST /api/v3/runs``); YAML text is sent as written."""
        document = workflow.to_document() if isinstance(workflow, Workflow) else workflow
        if isinstance(document, bytes):
            document = document.decode()
        body = _run_body(inputs, idempotency_key, budget, cache, workflow=document)
        return (await self._request("POST", "api/v3/runs", body=body))["run_id"]

    async def submit_saved(
        self,
        workflow_id: str,
        inputs: JsonDoc | None = None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | JsonDoc | None = None,
        cache: bool | None = None,
    ) -> str:
        """Start a run of a saved workflow; returns its id as soon as it is queued."""
        body = _run_body(inputs, idempotency_key, budget, cache)
        return (await self._request("POST", _path("api/v3/workflows", workflow_id, "run"), body=body))["run_id"]

    async def get_run(self, run_id: str) -> WorkflowRun:
        return WorkflowRun.model_validate(await self._request("GET", _path("api/v3/runs", run_id)))

    async def list_runs(
        self, *, workflow_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        params = {"workflow_id": workflow_id, "status": status, "limit": limit, "cursor": cursor}
        page = await self._request("GET", "api/v3/runs", params=params)
        return RunPage([WorkflowRun.model_validate(r) for r in page["runs"]], page["next_cursor"])

    async def iter_runs(
        self, *, workflow_id: str | None = None, status: str | None = None, page_size: int = 50
    ) -> AsyncIterator[WorkflowRun]:
        """Every matching run, newest first, fetching pages as the caller reads."""
        cursor: str | None = None
        while True:
            runs, cursor = await self.list_runs(workflow_id=workflow_id, status=status, limit=page_size, cursor=cursor)
            for run in runs:
                yield run
            if not cursor:
                return

    async def rerun(
        self,
        run_id: str,
        *,
        from_step: str | None = None,
        inputs: JsonDoc | None = None,
        overrides: JsonDoc | None = None,
        budget: Budget | JsonDoc | None = None,
        cache: bool | None = None,
    ) -> WorkflowRun:
        """``POST /api/v3/runs/{run_id}/rerun``: the new run's document."""
        body = {"from_step": from_step, "inputs": inputs or {}, "overrides": overrides or {}, "cache": cache}
        if budget is not None:
            body["budget"] = _budget_body(budget)
        return WorkflowRun.model_validate(await self._request("POST", _path("api/v3/runs", run_id, "rerun"), body=body))

    async def compare_runs(self, run_ids: list[str]) -> RunComparison:
        """``GET /api/v3/runs/compare?ids=A,B``."""
        answer = await self._request("GET", "api/v3/runs/compare", params={"ids": ",".join(run_ids)})
        return RunComparison.model_validate(answer)

    async def clear_cache(self, *, agent_id: str | None = None, older_than: str | None = None) -> int:
        """``DELETE /api/v3/cache?agent=A&older_than=7d``: how many entries went."""
        params = {"agent": agent_id, "older_than": older_than}
        return (await self._request("DELETE", "api/v3/cache", params=params))["deleted"]

    async def cache_stats(self) -> CacheStats:
        """``GET /api/v3/cache``."""
        return CacheStats.model_validate(await self._request("GET", "api/v3/cache"))

    async def cancel(self, run_id: str) -> None:
        """Ask the server to cancel a run; it ends shortly after with ``workflow_cancelled``."""
        await self._request("POST", _path("api/v3/runs", run_id, "cancel"))

    async def delete_runs(
        self, *, run_id: str | None = None, workflow_id: str | None = None, status: str | None = None
    ) -> int:
        """``DELETE /api/v3/runs/{run_id}``, or ``DELETE /api/v3/runs`` with the filters (``all=true`` without)."""
        if run_id is not None:
            await self._request("DELETE", _path("api/v3/runs", run_id))  # the server resolves a prefix
            return 1
        params = {"workflow_id": workflow_id, "status": status}
        if workflow_id is None and status is None:
            params["all"] = "true"
        return (await self._request("DELETE", "api/v3/runs", params=params))["deleted"]

    async def approve(self, run_id: str, step_key: str, *, comment: str | None = None) -> Decision:
        """Let a ``waiting`` step run (:class:`Conflict` when it is not waiting)."""
        return await self._decide(run_id, step_key, "approve", comment)

    async def reject(self, run_id: str, step_key: str, *, comment: str | None = None) -> Decision:
        """Refuse a ``waiting`` step: it fails, or is skipped when its approval says ``on_reject: skip``."""
        return await self._decide(run_id, step_key, "reject", comment)

    async def _decide(self, run_id: str, step_key: str, decision: str, comment: str | None) -> Decision:
        body = {"decision": decision, **({"comment": comment} if comment is not None else {})}
        path = _path("api/v3/runs", run_id, "approvals", step_key)
        return Decision.model_validate(await self._request("POST", path, body=body))

    async def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """The run's stored events with ``seq > since``."""
        params = {"since": since, "limit": limit}
        answer = await self._request("GET", _path("api/v3/runs", run_id, "events"), params=params)
        return [event_from_json(e) for e in answer["events"]]

    async def subscribe(self, run_id: str, since: int = 0) -> AsyncIterator[Event]:
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
                    event = event_from_json(json.loads(message))
                    if event.seq <= last:
                        continue  # delivery is at least once: a replay may overlap what we had
                    last, progressed = event.seq, True
                    yield event
                    if event.type in TERMINAL_EVENT_TYPES:
                        return
            finally:
                conn.close()
            if conn.close_code == CloseCode.not_found:
                raise api_error(404, errors.NotFound.code, f"run '{run_id}' not found", {"run_id": run_id})
            failures = 0 if progressed else failures + 1
            await self._give_up_or_back_off(failures, f"subscription to run '{run_id}' closed ({conn.close_code})")

    async def watch(self) -> AsyncIterator[Event]:
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
                    yield event_from_json(json.loads(message))
            finally:
                conn.close()
            failures = 0 if progressed else failures + 1
            await self._give_up_or_back_off(failures, f"the all-runs stream closed ({conn.close_code})")

    async def wait(self, run_id: str) -> WorkflowRun:
        """Follow the run until it ends; returns the final run document."""
        run = await self.get_run(run_id)
        if not run.status.terminal:
            async for _ in self.subscribe(run_id, since=run.last_seq):
                pass
            run = await self.get_run(run_id)
        return run

    # -- history -----------------------------------------------------------------

    async def query(self, sql: str) -> QueryResult:
        """Read-only SQL over the run history views."""
        answer = await self._request("POST", "api/v3/query", body={"sql": sql})
        return QueryResult(answer["columns"], answer["rows"], answer["truncated"])

    # -- plumbing ----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: JsonDoc | str | bytes | Path | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call: the decoded JSON answer (None for 204), or :class:`ClarionAPIError`.
        A :class:`Path` body is the file's content, streamed in chunks rather than read whole."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        headers = {"Accept": "application/json", **self._headers()}
        producer = None
        if isinstance(body, Path):
            size = (await asyncio.to_thread(body.stat)).st_size
            headers |= {"Content-Type": content_type, "Content-Length": str(size),
                        "Content-Disposition": f'attachment; filename="{quote(body.name)}"'}  # fmt: skip
            producer, body = _file_producer(body), None
        elif body is not None:
            headers["Content-Type"] = content_type
            if not isinstance(body, str | bytes):
                body = json.dumps(body)
        elif method in ("POST", "PUT"):
            body = b""  # tornado insists on a body for these methods
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_clients=self.max_clients)
        url = self.url + path + (f"?{query}" if query else "")
        request = HTTPRequest(
            url, method=method, headers=headers, body=body, body_producer=producer,
            request_timeout=self.timeout if producer is None else UPLOAD_TIMEOUT_S,
        )  # fmt: skip
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


def _workflow_type(doc: JsonDoc | str | bytes) -> str:
    return "application/yaml" if isinstance(doc, str | bytes) else "application/json"


def _agent_body(doc: JsonDoc | Agent) -> JsonDoc:
    return doc.model_dump(mode="json") if isinstance(doc, Agent) else doc


def _run_body(
    inputs: JsonDoc | None,
    idempotency_key: str | None,
    budget: Budget | JsonDoc | None = None,
    cache: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {**extra, "inputs": dict(inputs or {})}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if budget is not None:
        body["budget"] = _budget_body(budget)
    if cache is not None:
        body["cache"] = cache
    return body


def _budget_body(budget: Budget | JsonDoc) -> JsonDoc:
    """A budget as the API takes it: the fields given (the others stay the workflow's)."""
    return budget.model_dump(mode="json", exclude_unset=True) if isinstance(budget, Budget) else dict(budget)


def _uploads(path: Path) -> list[tuple[str, bytes]]:
    """Blocking: every file an import of ``path`` reads, with its name relative to ``path``."""
    files = source_files(path.expanduser(), AGENT_FILE_SUFFIXES | DATABASE_SUFFIXES)
    if files is None:
        raise errors.NotFound(f"{path}: no such file or folder", details={"path": str(path)})
    return [(name, file.read_bytes()) for file, name in files]


def _stored(doc: dict[str, Any]) -> StoredDocument:
    """A saved workflow as the API serialises it: the document with its source and timestamps beside it."""
    doc = dict(doc)
    created, updated, source = doc.pop("created_at"), doc.pop("updated_at"), doc.pop("source", None)
    return StoredDocument(doc["id"], doc, _timestamp(created), _timestamp(updated), source)


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def event_from_json(doc: dict[str, Any]) -> Event:
    """An event message (REST or WebSocket) as the engine's own :class:`Event`."""
    return Event(
        doc["seq"], doc["type"], doc["run_id"], doc.get("step_id"), _timestamp(doc["ts"]), doc.get("data") or {}
    )


def _decode(response: HTTPResponse) -> Any:
    if response.code >= 400:
        raise ClarionAPIError.from_response(response.code, response.body, response.reason)
    if response.code == 204 or not response.body:
        return None
    return json.loads(response.body)


UPLOAD_CHUNK = 1024 * 1024
"""Bytes read from the disk and sent at a time when a file is streamed."""
UPLOAD_TIMEOUT_S = 3600.0
"""How long a streamed upload and its import may take: sending and reading a large database
takes minutes, where ``timeout`` bounds ordinary calls."""


def _file_producer(path: Path) -> Callable[[Callable[[bytes], Any]], Any]:
    """A tornado ``body_producer`` that sends ``path`` chunk by chunk, reading through a thread."""

    async def produce(write: Callable[[bytes], Any]) -> None:
        with await asyncio.to_thread(path.open, "rb") as file:
            while chunk := await asyncio.to_thread(file.read, UPLOAD_CHUNK):
                await write(chunk)

    return produce


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
