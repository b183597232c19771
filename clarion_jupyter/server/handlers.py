"""The v3 REST API: thin handlers that parse the request, call the engine, and serialise the answer.

Every method is authenticated and authorized against the ``clarion`` resource; errors are
rendered by :class:`~.base.ClarionHandlerMixin` from the exceptions the services raise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import ensure_async
from pydantic import BaseModel, ConfigDict, Field
from tornado import web

from ..agent.models import Agent
from ..agent.v2db import is_sqlite_file
from ..core.documents import DocumentError, DocumentRefused, load_any, off_loop
from ..core.errors import BadRequest, Forbidden, NotFound, Problem, ValidationFailed
from ..core.protocol import RunStatus
from ..storage.records import StoredDocument, isoformat
from ..workflow.agent_run import AgentRunRequest
from ..workflow.budget import Budget
from ..workflow.rerun import RerunRequest
from .base import DOCUMENT_TYPES, YAML_TYPES, ClarionHandler, SpooledUpload

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_PAGE = 500


class RunRequest(BaseModel):
    """The body of ``POST /api/v3/workflows/{id}/run``."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    budget: Budget | None = Field(None, description="This run's budget; its fields replace the workflow's.")
    cache: bool | None = Field(None, description="answer the run's LLM calls from the cache (true) or never (false)")


class AdHocRunRequest(RunRequest):
    """The body of ``POST /api/v3/runs``: a document to run as it is, without saving it."""

    workflow: dict[str, Any] | str = Field(description="the workflow document, or its YAML text")


class HealthHandler(ClarionHandler):
    """``GET /api/v3/health``: storage, queue and broker state, for probes and for ``find_server`` to recognise the extension."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status, doc = await self.clarion.health()
        self.reply(doc, status)


class RunStarter(ClarionHandler):
    """What starting a run needs, whether the document is saved or sent along."""

    async def require_terminal_permission(self, doc: dict[str, Any], workflow_id: str | None) -> None:
        """A ``shell`` step is code execution: running one needs what opening a terminal needs,
        so Clarion never grants more than Jupyter's own authorizer does."""
        if "shell" not in step_tasks(doc):
            return
        allowed = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "execute", "terminals"))
        if not allowed:
            raise Forbidden(
                "this workflow has shell steps: running it needs the permission to execute terminals",
                details={"workflow_id": workflow_id, "permission": "execute terminals"},
            )

    async def run_request(self, model: type[RunRequest] = RunRequest) -> RunRequest:
        """The body, with the ``Idempotency-Key`` header standing in for ``idempotency_key``."""
        doc = await self.body_document(required=False)
        header = self.request.headers.get("Idempotency-Key")
        if header:
            if doc.get("idempotency_key") not in (None, header):
                raise BadRequest("the Idempotency-Key header and the body's idempotency_key differ")
            doc = {**doc, "idempotency_key": header}
        return await self.body_model(model, "run request", doc)

    def started(self, run_id: str) -> None:
        self.reply({"run_id": run_id, "status": RunStatus.queued.value}, 202, self.api_url("runs", run_id))


class DocumentHandler(ClarionHandler):
    """Agents and workflows have the same CRUD; they differ in their service and JSON form."""

    kind: str
    """The URL segment and the list's key: ``agents`` or ``workflows``."""

    async def call(self, action: str, *args: Any) -> Any:
        """``Engine.<action>_agent(...)`` or ``_workflow`` (``list_agents`` for the collection)."""
        name = f"list_{self.kind}" if action == "list" else f"{action}_{self.kind[:-1]}"
        return await getattr(await self.engine(), name)(*args)

    def serialise(self, item: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def source(self) -> str | dict[str, Any]:
        return await self.body_document()


class CollectionHandler(DocumentHandler):
    """``GET`` lists, ``POST`` creates: the collection half of agents' and workflows' identical CRUD."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        items = await self.call("list")
        self.reply({self.kind: [self.serialise(item) for item in items]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        item = await self.call("create", await self.source())
        self.reply(self.serialise(item), 201, self.api_url(self.kind, item.id))


class ItemHandler(DocumentHandler):
    """``GET``, ``PUT`` and ``DELETE`` of one document: the item half of the shared CRUD."""

    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        self.reply(self.serialise(await self.call("get", item_id)))

    @web.authenticated
    @authorized
    async def put(self, item_id: str) -> None:
        self.reply(self.serialise(await self.call("replace", item_id, await self.source())))

    @web.authenticated
    @authorized
    async def delete(self, item_id: str) -> None:
        await self.call("delete", item_id)
        self.set_status(204)
        self.finish()


class AgentDocuments(DocumentHandler):
    """Agents as the API shows them: the validated model as JSON (a key variable's name, never a key)."""

    kind = "agents"

    def serialise(self, item: Agent) -> dict[str, Any]:
        return item.model_dump(mode="json")


class WorkflowDocuments(DocumentHandler):
    """Workflows as the API shows them: the document, its source text and its timestamps."""

    kind = "workflows"

    def serialise(self, item: StoredDocument) -> dict[str, Any]:
        """The saved document, its YAML text when it was sent as YAML, and its timestamps."""
        extra = {"source": item.source} if item.source is not None else {}
        return {**item.doc, **extra, "created_at": isoformat(item.created_at), "updated_at": isoformat(item.updated_at)}

    async def source(self) -> str | dict[str, Any]:
        """YAML bodies go on as text (after a syntax check) so the service keeps the source."""
        doc = await self.body_document()
        return self.body_text() if self.media_type in YAML_TYPES else doc


class AgentsHandler(AgentDocuments, CollectionHandler):
    """``GET`` lists the agents, ``POST`` creates one."""


class AgentHandler(AgentDocuments, ItemHandler):
    """``GET``, ``PUT`` (replace; the path's id wins) and ``DELETE`` one agent."""


class WorkflowsHandler(WorkflowDocuments, CollectionHandler):
    """``GET`` lists the saved workflows, ``POST`` validates and saves one."""


class WorkflowHandler(WorkflowDocuments, ItemHandler):
    """``GET``, ``PUT`` (replace; the path's id wins) and ``DELETE`` (refused while runs are active)."""


@web.stream_request_body
class AgentImportHandler(SpooledUpload):
    """Clarion v2 data in the body: agent documents (YAML blocks, JSON profiles, the v2 agent
    list) as text, a ``clarion.db`` as ``application/octet-stream`` (agents and run history;
    streamed to a file, so up to ``max_import_bytes``), or several such files as
    ``multipart/form-data`` (a folder: the report names each file).
    ``?dry_run=true`` reports what would change and changes nothing."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.spooled()
        dry_run = self.get_query_argument("dry_run", "false").lower() in ("1", "true", "yes")
        body: Path | bytes | list[tuple[str, bytes]]
        if self.media_type == "application/octet-stream":
            # A database is read from its file; other bytes are the importer's to judge, as sent.
            is_database = await asyncio.to_thread(is_sqlite_file, self.upload_path)
            body = self.upload_path if is_database else await self.spooled_body()
        elif self.media_type == "multipart/form-data":
            # Each file's documents are read with the same bounds by the importer, and a file
            # beyond them is that file's error (reported), not the whole upload's.
            body = [(part.filename or name, part.body) for name, parts in self.request.files.items() for part in parts]
            if not body:
                raise BadRequest("the multipart body holds no file parts")
        else:
            text = self.body_text(accept=DOCUMENT_TYPES | {"text/plain"})
            try:
                await off_loop(
                    len(text), load_any, text
                )  # the bounds of every document body; syntax errors are the importer's to report
            except DocumentRefused as exc:
                raise BadRequest(f"the request body is {exc}", details={"where": exc.where}) from None
            except DocumentError:
                pass
            body = text.encode()
        report = await (await self.engine()).import_v2(body, dry_run=dry_run)
        if not report.agents and not report.runs.found:
            problems = [Problem(loc=e.source, message=e.message) for e in report.errors]
            raise ValidationFailed(problems or [Problem(loc="body", message="no Clarion v2 agents found")], "import")
        self.reply(report.as_dict(), 200 if dry_run else 201)


class AgentRunHandler(RunStarter):
    """An agent run (v2's main action) starts at once (202); follow it like any run."""

    @web.authenticated
    @authorized
    async def post(self, agent_id: str) -> None:
        request = await self.body_model(AgentRunRequest, "agent run")
        self.started(await (await self.engine()).run_agent(agent_id, request))


class AgentPromptHandler(ClarionHandler):
    """The exact messages an agent run would send, with their token count; no model is called."""

    @web.authenticated
    @authorized
    async def post(self, agent_id: str) -> None:
        request = await self.body_model(AgentRunRequest, "agent prompt")
        self.reply(await (await self.engine()).prompt_agent(agent_id, request))


class WorkflowRunHandler(RunStarter):
    """Starts a run of a saved workflow and answers at once (202); the work happens on the engine's workers."""

    @web.authenticated
    @authorized
    async def post(self, workflow_id: str) -> None:
        engine = await self.engine()
        request = await self.run_request()
        stored = await engine.get_workflow(workflow_id)
        await self.require_terminal_permission(stored.doc, stored.id)
        self.started(
            await engine.submit_saved(
                workflow_id,
                request.inputs,
                idempotency_key=request.idempotency_key,
                budget=request.budget,
                cache=request.cache,
            )
        )


class RunsHandler(RunStarter):
    """``GET`` lists runs, newest first (``next_cursor``, null on the last page, is passed back
    as ``cursor``); ``POST`` runs a document without saving it (202), validated as a saved one."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        page = await (await self.engine()).list_runs(
            workflow_id=self.get_query_argument("workflow_id", None),
            status=self.status_argument(),
            limit=self.int_argument("limit", 50, 1, MAX_PAGE),
            cursor=self.get_query_argument("cursor", None),
        )
        self.reply({"runs": [run.model_dump(mode="json") for run in page.runs], "next_cursor": page.next_cursor})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        engine = await self.engine()
        request = await self.run_request(AdHocRunRequest)
        source = request.workflow
        plan = await off_loop(len(source) if isinstance(source, str) else 0, engine.compile, source)
        await self.require_terminal_permission(plan.document, plan.workflow.id)
        self.started(
            await engine.submit(
                plan,
                request.inputs,
                idempotency_key=request.idempotency_key,
                budget=request.budget,
                cache=request.cache,
            )
        )

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        """Deletes the finished runs matching ``workflow_id`` and ``status``; all of them only with ``all=true``."""
        workflow_id, status = self.get_query_argument("workflow_id", None), self.status_argument()
        if workflow_id is None and status is None and self.get_query_argument("all", "false") != "true":
            raise BadRequest(
                "give workflow_id or status to choose the runs to delete, or all=true for every finished run"
            )
        deleted = await (await self.engine()).delete_runs(workflow_id=workflow_id, status=status)
        self.reply({"deleted": deleted})

    def status_argument(self) -> str | None:
        status = self.get_query_argument("status", None)
        if status is not None and status not in RunStatus.__members__:
            raise BadRequest(f"unknown status '{status}'", details={"allowed": list(RunStatus.__members__)})
        return status


class RunHandler(ClarionHandler):
    """``GET /api/v3/runs/{run_id}``: the run document (a unique id prefix names it too)."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run = await (await self.engine()).get_run(run_id)
        self.reply(run.model_dump(mode="json"))

    @web.authenticated
    @authorized
    async def delete(self, run_id: str) -> None:
        """204; 409 while the run has not finished (cancel it first)."""
        await (await self.engine()).delete_runs(run_id=run_id)
        self.set_status(204)
        self.finish()


class RunCancelHandler(ClarionHandler):
    """202: the cancel is under way; the run ends with ``workflow_cancelled`` once its steps stop."""

    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        await (await self.engine()).cancel(run_id)
        self.reply({"run_id": run_id}, 202, self.api_url("runs", run_id))


class RunRerunHandler(RunStarter):
    """``POST /api/v3/runs/{run_id}/rerun``: 202 with the new run's document (``parent_run_id``,
    ``changes``); its steps that no change reaches are copied, not run again."""

    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        request = await self.body_model(RerunRequest, "re-run")
        engine = await self.engine()
        parent = await engine.get_run(run_id)
        await self.require_terminal_permission(parent.workflow or {}, parent.workflow_id)
        run = await engine.rerun(
            parent.run_id,
            from_step=request.from_step,
            inputs=request.inputs,
            overrides=request.overrides.model_dump(by_alias=True, exclude_none=True),
            budget=request.budget,
            cache=request.cache,
        )
        self.reply(run.model_dump(mode="json"), 202, self.api_url("runs", run.run_id))


class RunCompareHandler(ClarionHandler):
    """``GET /api/v3/runs/compare?ids=A,B[,...]``: the runs side by side, step by step."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        ids = [i for i in self.get_query_argument("ids", "").split(",") if i]
        comparison = await (await self.engine()).compare_runs(ids)
        self.reply(comparison.model_dump(mode="json"))


class CacheHandler(ClarionHandler):
    """``GET /api/v3/cache``: what the LLM cache holds; ``DELETE`` clears it (``agent`` and/or
    ``older_than``, e.g. ``7d``: the entries that match both; neither: every entry)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply((await (await self.engine()).cache_stats()).model_dump(mode="json"))

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        deleted = await (await self.engine()).clear_cache(
            agent_id=self.get_query_argument("agent", None), older_than=self.get_query_argument("older_than", None)
        )
        self.reply({"deleted": deleted})


class DecisionRequest(BaseModel):
    """The body of ``POST /api/v3/runs/{run_id}/approvals/{step_key}``."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=10_000)


class RunApprovalHandler(ClarionHandler):
    """Decide a step that waits for approval; 409 when it is not waiting."""

    @web.authenticated
    @authorized
    async def post(self, run_id: str, step_key: str) -> None:
        request = await self.body_model(DecisionRequest, "decision")
        engine = await self.engine()
        decide = engine.approve if request.decision == "approve" else engine.reject
        decision = await decide(run_id, step_key, comment=request.comment, by=self.user_name)
        self.reply(decision.model_dump(mode="json"))


class RunEventsHandler(ClarionHandler):
    """``GET /api/v3/runs/{run_id}/events?since=N``: stored events, for clients that poll or fill a gap."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        events = await (await self.engine()).events(run_id, self.int_argument("since", 0, 0))
        self.reply({"events": [event.as_dict() for event in events]})


class TasksHandler(ClarionHandler):
    """The task types a workflow may use on this server (``shell`` only when ``allow_shell``)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply({"tasks": await (await self.engine()).task_types()})


class OpenAPIHandler(ClarionHandler):
    """``GET /api/v3/openapi.yaml``: the spec this server answers by, behind the same auth as the API."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        if not OPENAPI_PATH.is_file():
            raise NotFound("the OpenAPI document is not installed on this server")
        self.finish(OPENAPI_PATH.read_bytes(), set_content_type="application/yaml")


class QueryRequest(BaseModel):
    """The body of ``POST /api/v3/query``."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=100_000)


class QueryHandler(ClarionHandler):
    """Read-only SQL over the run history views; a refused or failing statement is a 400.
    The answer is capped at the ``max_query_bytes`` trait, and arrives encoded (on the query's
    thread), so a large one costs the event loop no encoding."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        request = await self.body_model(QueryRequest, "query request", await self.body_document())
        result = await (await self.engine()).query(request.sql, max_bytes=self.clarion.max_query_bytes)
        self.set_header("Content-Type", "application/json")
        self.finish(result.body)


class UnknownPathHandler(ClarionHandler):
    """Anything else under /api/v3 answers a JSON 404 rather than Jupyter's HTML page."""

    @web.authenticated
    @authorized
    async def get(self, path: str | None) -> None:
        raise NotFound(f"no such endpoint: {self.request.method} {self.request.path}")

    post = put = patch = delete = get


def step_tasks(doc: dict[str, Any]) -> set[str]:
    """The task types a (validated) workflow document uses, parallel groups included."""
    tasks = set()
    for item in doc.get("steps", []):
        for step in item.get("parallel", [item]):
            tasks.add(step.get("task"))
    return tasks


_ID = r"([^/]+)"
default_handlers: list[tuple[str, type[ClarionHandler]]] = [
    (r"/api/v3/health", HealthHandler),
    (r"/api/v3/agents", AgentsHandler),
    (r"/api/v3/agents/import", AgentImportHandler),
    (rf"/api/v3/agents/{_ID}", AgentHandler),
    (rf"/api/v3/agents/{_ID}/run", AgentRunHandler),
    (rf"/api/v3/agents/{_ID}/prompt", AgentPromptHandler),
    (r"/api/v3/workflows", WorkflowsHandler),
    (rf"/api/v3/workflows/{_ID}", WorkflowHandler),
    (rf"/api/v3/workflows/{_ID}/run", WorkflowRunHandler),
    (r"/api/v3/runs", RunsHandler),
    (r"/api/v3/runs/compare", RunCompareHandler),
    (rf"/api/v3/runs/{_ID}", RunHandler),
    (rf"/api/v3/runs/{_ID}/cancel", RunCancelHandler),
    (rf"/api/v3/runs/{_ID}/rerun", RunRerunHandler),
    (rf"/api/v3/runs/{_ID}/events", RunEventsHandler),
    (rf"/api/v3/runs/{_ID}/approvals/{_ID}", RunApprovalHandler),
    (r"/api/v3/tasks", TasksHandler),
    (r"/api/v3/openapi.yaml", OpenAPIHandler),
    (r"/api/v3/query", QueryHandler),
    (r"/api/v3/cache", CacheHandler),
    (r"/api/v3(/.*)?", UnknownPathHandler),
]
