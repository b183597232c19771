"""Engine: the object that the server extension, the kernel's embedded mode and the CLI host.

It owns the DuckDB file (as its only writer), the queue and the in-process workers, the
group-commit writer and the event bus, and one :class:`RunExecutor` per active run. On
start it resumes every run that a crash or a stop left ``queued`` or ``running``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.trace import Tracer

from ..agent.migration import ImportSource, V2ImportReport, V2Migration
from ..agent.models import Agent
from ..agent.service import AgentService
from ..core.errors import Conflict, NotFound, Problem, ValidationFailed
from ..core.ids import local_user, new_run_id
from ..core.protocol import EventType, RunStatus
from ..core.secrets import SecretMasker, SecretPolicy
from ..core.workspace import Workspace
from ..storage.database import default_db_path
from ..storage.duckdb_store import DuckDBStorage
from ..storage.protocols import ActiveRun, Storage
from ..storage.query import MAX_BYTES, MAX_ROWS, TIMEOUT_S, QueryResult
from ..storage.records import Event, RunRecord, StoredDocument, utcnow
from ..storage.writer import GroupCommitWriter
from ..task.base import DEFAULT_MAX_OUTPUT_BYTES, TaskFailed, TaskSettings
from ..task.broker import DROP_REASONS, redact
from ..task.builtin.llm_call import LLMCallTask, chosen_file_problem, prepare_call
from ..task.local import LocalQueue
from ..task.preview import Previewer
from ..task.queue import JobResult, Queue
from ..task.queues import make_queue
from ..task.registry import TaskRegistry
from ..task.worker import Worker
from .agent_run import AGENT_RUN_WORKFLOW, AGENT_RUN_WORKFLOW_ID, AgentRunRequest
from .bus import EventBus, Subscription
from .compiler import Plan, compile_workflow
from .executor import RunExecutor
from .models import Decision, RunPage, WorkflowRun, parse_workflow
from .plans import PlanCache
from .runs import run_document
from .service import WorkflowService
from .telemetry import Telemetry
from .validation import DEFAULT_MAX_STEPS, WorkflowSource, WorkflowValidator
from .views import RunViews

log = logging.getLogger(__name__)

MIN_RUN_ID_PREFIX = 6
"""How short a run id may be given (run ids are 26 characters; the first 12 are the time)."""


class Engine:
    """Durable asynchronous workflow engine. Use as ``async with Engine(...) as engine``."""

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        workers: int = 8,
        workspace_root: str | os.PathLike[str] = ".",
        queue_url: str = "local",
        allow_shell: bool = True,
        secrets: SecretPolicy | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        registry: TaskRegistry | None = None,
        run_workers: bool | None = None,
        storage: Storage | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """``storage`` defaults to the DuckDB file at ``db_path``. ``run_workers``: whether this
        process runs steps itself (default: only with the local queue; a broker's jobs go to
        ``clarion worker`` processes). ``tracer`` (OpenTelemetry's) defaults to the global
        tracer provider's, which records nothing until the host sets up an SDK."""
        self.db_path = str(db_path or default_db_path())
        self.workspace = Workspace(workspace_root)
        self.registry = registry or TaskRegistry.from_entry_points()
        self.settings = TaskSettings(
            allow_shell=allow_shell, max_output_bytes=max_output_bytes, secrets=secrets or SecretPolicy()
        )
        self.queue_url = queue_url
        self.validator = WorkflowValidator(
            self.registry, max_steps=max_steps, allow_shell=allow_shell, secrets=self.settings.secrets
        )
        self._workers = workers
        self._run_workers = queue_url in ("", "local") if run_workers is None else run_workers
        self.storage: Storage = storage or DuckDBStorage(self.db_path)
        self.runs = self.storage.runs
        self.agents = AgentService(self.storage.agents, self.settings.secrets)
        self.workflows = WorkflowService(self.storage.workflows, self.runs, self.validator)
        self._previewer = Previewer(self.registry, self.workspace, self.settings)
        self.bus = EventBus()
        self._telemetry = Telemetry(tracer)
        self._views = RunViews()
        self._writer: GroupCommitWriter | None = None
        self._submissions: GroupCommitWriter | None = None
        self._queue: Queue | None = None
        self._worker: Worker | None = None
        self._router: asyncio.Task[None] | None = None
        self._active: dict[str, RunExecutor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idempotency: dict[tuple[str, str], str] = {}
        self._plans = PlanCache(self.validator)
        """Compiled plans by document digest, for ad-hoc and saved documents alike."""
        self.started = False
        self.resumed: list[str] = []

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        # The broker first: when it cannot be reached, nothing else was opened.
        self._queue = make_queue(self.queue_url, maxsize=max(64, self._workers * 16))
        await self._queue.start()
        self._telemetry.watch_queue(self._queue.health, DROP_REASONS)
        try:
            await self.storage.open()
        except BaseException:
            await self._queue.close()
            raise
        masker = SecretMasker(self.settings.secrets)
        self._writer = GroupCommitWriter(
            self.runs, self._published, self._views.stored, on_unstorable=self._unstorable, masker=masker
        )
        self._submissions = GroupCommitWriter(
            self.runs,
            self._published,
            self._views.stored,
            on_unstorable=self._unstorable,
            submissions=True,
            masker=masker,
        )
        self._writer.start()
        self._submissions.start()
        if self._run_workers:
            self._worker = Worker(self._queue, self.registry, self.workspace, self.settings, self._workers)
            await self._worker.start()
        self.started = True
        await self._install_agent_run()
        await self._queue.take_stock()  # jobs still in a broker are adopted by the runs resumed now, not sent again
        self.resumed = await self.resume()
        # Results are routed once the resumed runs can take them (an adopted job's may be waiting).
        self._router = asyncio.create_task(self._route_results(), name="clarion-results")
        if isinstance(self._queue, LocalQueue):
            self._queue.deliver_to(self._route)
        if self.resumed:
            log.info("resumed %d interrupted run(s)", len(self.resumed))

    def __str__(self) -> str:
        return f"an embedded engine on {self.db_path}"

    async def aclose(self) -> None:
        """:meth:`stop`, under the name every implementation of the interface shares."""
        await self.stop()

    async def stop(self) -> None:
        """Stop without finishing runs: whatever is in flight resumes at the next start."""
        if not self.started:
            return
        self.started = False
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._worker is not None:
            await self._worker.stop()
        if self._router is not None:
            self._router.cancel()
            await asyncio.gather(self._router, return_exceptions=True)
        await self._submissions.close()
        await self._writer.close()
        await self._queue.close()
        await self.storage.close()
        self._telemetry.close()

    def _published(self, events: list[Event]) -> None:
        """Committed events: to their subscribers, and to the metrics and traces."""
        self.bus.publish(events)
        self._telemetry.observe(events)

    async def _route_results(self) -> None:
        async for result in self._queue.results():
            self._route(result)

    def _route(self, result: JobResult) -> None:
        executor = self._active.get(result.run_id)
        if executor is not None:
            executor.post(result)

    # -- runs --------------------------------------------------------------------

    def compile(self, workflow: WorkflowSource) -> Plan:
        return self.validator.compile(workflow)

    async def submit(
        self,
        workflow: WorkflowSource | Plan,
        inputs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate and start a run of a document, without saving it; returns its id once the
        run is durably queued. A :class:`Plan` from :meth:`compile` is not compiled again."""
        plan = workflow if isinstance(workflow, Plan) else self._plans.plan(workflow)
        return await self._start(plan, inputs, idempotency_key)

    async def submit_saved(
        self, workflow_id: str, inputs: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> str:
        stored = await self.workflows.get(workflow_id)
        return await self._start(self._plans.plan(stored.doc), inputs, idempotency_key)

    async def _start(self, plan: Plan, inputs: dict[str, Any] | None, key: str | None) -> str:
        self._require_started()
        workflow = plan.workflow
        if key is not None:
            existing = await self._find_idempotent(workflow.id, key)
            if existing is not None:
                await self._submissions.flush()  # the first submit may not have committed it yet
                return existing
        resolved = plan.resolve_inputs(inputs)
        await self._check_agents(plan)
        if key is not None and (claimed := self._idempotency.get((workflow.id, key))) is not None:
            # A concurrent submit with the same key claimed it while we awaited the agent check.
            await self._submissions.flush()
            return claimed
        run = RunRecord(
            run_id=new_run_id(), workflow_id=workflow.id, workflow_name=workflow.name, workflow=plan.document,
            workflow_digest=plan.digest, inputs=resolved, status=RunStatus.queued.value,
            created_at=utcnow(), idempotency_key=key,
        )  # fmt: skip
        if key is not None:
            self._idempotency[(workflow.id, key)] = run.run_id
        executor = self._executor(plan, run)
        self._active[run.run_id] = executor  # cancellable from here on
        executor.queued(self._submissions)
        await self._submissions.flush()
        if self.started:  # else the engine is stopping, and the next start resumes the stored run
            self._launch(executor)
        return run.run_id

    async def _find_idempotent(self, workflow_id: str, key: str) -> str | None:
        found = self._idempotency.get((workflow_id, key))
        if found is None:
            found = await self.runs.find_idempotent(workflow_id, key)
        # Re-check after the await: a concurrent submit with the same key may have won.
        return self._idempotency.get((workflow_id, key)) or found

    async def _check_agents(self, plan: Plan) -> None:
        problems = []
        for node_id, node in plan.nodes.items():
            agent_id = node.step.with_.get("agent")
            if agent_id in plan.agent_ids and await self.agents.resolve(agent_id) is None:
                problems.append(Problem(loc=f"step '{node_id}' field 'with.agent'", message=f"unknown agent '{agent_id}'", step=node_id, field="with.agent"))  # fmt: skip
        if problems:
            raise ValidationFailed(problems)

    def _launch(self, executor: RunExecutor) -> None:
        run_id = executor.run.run_id
        self._active[run_id] = executor
        self._tasks[run_id] = asyncio.create_task(self._drive(executor), name=f"clarion-run-{run_id}")

    async def _drive(self, executor: RunExecutor) -> None:
        run_id = executor.run.run_id
        try:
            await executor.execute()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: engine error", run_id)
            executor.abort({"code": "internal", "message": "internal engine error (see the server log)"})
        finally:
            executor.started.set()  # never leave a decision waiting on a run that ended early
            self._active.pop(run_id, None)
            self._tasks.pop(run_id, None)

    def _unstorable(self, run_id: str, error: str) -> None:
        """The database refused this run's transitions: it ends ``failed`` with that error, in
        a record small enough to store, rather than go on with a state nobody can read back."""
        executor = self._active.get(run_id)
        if executor is not None:
            executor.abort({"code": "storage", "message": f"the run's state could not be stored: {error}"})

    async def resume(self, run_ids: list[str] | None = None) -> list[str]:
        """Restart interrupted runs; finished steps keep their outputs and do not run again."""
        resumed = []
        for active in await self.runs.active_runs():
            run_id = active.run.run_id
            if run_id in self._active or (run_ids is not None and run_id not in run_ids):
                continue
            executor = self._resumed_executor(active)
            if executor is not None:
                self._launch(executor)
                resumed.append(run_id)
        return resumed

    def _resumed_executor(self, active: ActiveRun) -> RunExecutor | None:
        run = active.run
        try:
            plan = compile_workflow(parse_workflow(run.workflow), self.registry)
        except ValidationFailed as exc:
            log.error("run %s cannot resume: %s", run.run_id, exc.message)
            run.status, run.finished_at = RunStatus.failed.value, utcnow()
            run.error = {"code": "cannot_resume", "message": exc.message}
            self._writer.add_run(run)
            self._writer.add_event(
                Event(active.last_seq + 1, EventType.workflow_failed, run.run_id, None, utcnow(), {"error": run.error})
            )
            return None
        self._views.seed(run, active.steps, active.last_seq)
        return self._executor(plan, run, last_seq=active.last_seq, prior=active.steps)

    def _executor(self, plan: Plan, run: RunRecord, **resumed: Any) -> RunExecutor:
        return RunExecutor(
            plan, run, self._writer, self._queue, self.agents.resolve, self._previewer,
            max_output_bytes=self.settings.max_output_bytes, **resumed,
        )  # fmt: skip

    async def cancel(self, run_id: str) -> None:
        """Cancel a queued or running run; running steps are stopped (processes killed)."""
        executor = self._active.get(run_id)
        if executor is not None:
            executor.cancel()
            return
        run = await self.get_run(run_id)
        raise Conflict(
            f"run '{run_id}' already {run.status.value}", details={"run_id": run_id, "status": run.status.value}
        )

    async def delete_runs(
        self, *, run_id: str | None = None, workflow_id: str | None = None, status: str | None = None
    ) -> int:
        """Delete finished runs with all they stored; answers how many. One run (``run_id``):
        :class:`NotFound` when unknown, :class:`Conflict` while it has not finished."""
        if run_id is not None:
            run = await self.get_run(run_id)
            run_id = run.run_id  # a unique prefix named it
            if not run.status.terminal:
                raise Conflict(
                    f"run '{run_id}' is {run.status.value}: cancel it first, or wait for it to finish",
                    details={"run_id": run_id, "status": run.status.value},
                )
        deleted = await self.runs.delete_finished(run_id=run_id, workflow_id=workflow_id, status=status)
        self._views.forget(deleted)
        return len(deleted)

    async def approve(
        self, run_id: str, step_key: str, *, comment: str | None = None, by: str | None = None
    ) -> Decision:
        """Let a ``waiting`` step run; answers once the decision is stored. ``by``: who decided
        (the server passes the Jupyter identity's name; embedded, the local user's).

        :class:`Conflict` when the step is not waiting (never asked, decided already, or the
        run ended), :class:`NotFound` when there is no such run."""
        return await self._decide(run_id, step_key, True, by, comment)

    async def reject(
        self, run_id: str, step_key: str, *, comment: str | None = None, by: str | None = None
    ) -> Decision:
        """Refuse a ``waiting`` step: it fails, or is skipped when its approval says ``on_reject: skip``."""
        return await self._decide(run_id, step_key, False, by, comment)

    async def _decide(self, run_id: str, step_key: str, approve: bool, by: str | None, comment: str | None) -> Decision:
        by = by if by is not None else local_user()
        executor = self._active.get(run_id)
        if executor is not None:
            await executor.started.wait()  # a run resumed just now takes back its waiting steps first
        if executor is None or not executor.decide(step_key, approve, by, comment):
            run = await self.get_run(run_id)
            step = next((s for s in run.steps if s.key == step_key), None)
            state = f"is {step.status.value}" if step else "does not exist"
            raise Conflict(
                f"step '{step_key}' of run '{run_id}' is not waiting for approval (it {state})",
                details={"run_id": run_id, "step_key": step_key, "status": step.status.value if step else None},
            )
        await self._writer.flush()
        decision = "approve" if approve else "reject"
        return Decision(run_id=run_id, step_key=step_key, decision=decision, by=by, comment=comment)

    # -- agents ----------------------------------------------------------------------

    async def list_agents(self) -> list[Agent]:
        return await self.agents.list()

    async def get_agent(self, agent_id: str) -> Agent:
        return await self.agents.get(agent_id)

    async def create_agent(self, doc: dict[str, Any] | Agent) -> Agent:
        return await self.agents.create(doc)

    async def replace_agent(self, agent_id: str, doc: dict[str, Any] | Agent) -> Agent:
        return await self.agents.replace(agent_id, doc)

    async def delete_agent(self, agent_id: str) -> None:
        await self.agents.delete(agent_id)

    # -- saved workflows ---------------------------------------------------------------

    async def list_workflows(self) -> list[StoredDocument]:
        return await self.workflows.list()

    async def get_workflow(self, workflow_id: str) -> StoredDocument:
        return await self.workflows.get(workflow_id)

    async def create_workflow(self, source: str | bytes | dict[str, Any]) -> StoredDocument:
        return await self.workflows.create(source)

    async def replace_workflow(self, workflow_id: str, source: str | bytes | dict[str, Any]) -> StoredDocument:
        return await self.workflows.replace(workflow_id, source)

    async def delete_workflow(self, workflow_id: str) -> None:
        await self.workflows.delete(workflow_id)

    async def task_types(self) -> list[dict[str, Any]]:
        """The task types workflows may use here, with their config schemas (``shell`` only when allowed)."""
        return [t for t in self.registry.describe() if self.settings.allow_shell or t["name"] != "shell"]

    def feed(self, maxsize: int = 0) -> Subscription:
        """Every run's live events, as they are stored (for the sidebar's list); close it when done."""
        return self.bus.subscribe(None, maxsize)

    # -- agent runs ----------------------------------------------------------------

    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str:
        """Start an agent run (the built-in ``agent-run`` workflow); its id once durably queued.

        What can be checked before the model is called is: the agent, its required user
        variables and the chosen files, so a typo costs no tokens and names its field."""
        agent = await self.agents.get(agent_id)
        problems = [
            Problem(loc=f"variables.{v.name}", message=f"required by agent '{agent_id}'", field=f"variables.{v.name}")
            for v in agent.user_variables
            if v.required and v.name not in request.variables
        ]
        problems += await asyncio.to_thread(self._unreadable, request.files)
        if problems:
            raise ValidationFailed(problems, what="agent run")
        await self._install_agent_run()
        return await self.submit_saved(AGENT_RUN_WORKFLOW_ID, request.inputs(agent_id))

    async def warm_up_llm(self) -> None:
        """With agents defined, LLM calls are coming: start the provider now (litellm's import
        takes seconds, in its own process), so the first call does not wait for it."""
        if await self.list_agents():
            await LLMCallTask.provider.warm()

    async def prompt_agent(self, agent_id: str, request: AgentRunRequest) -> dict[str, Any]:
        """The exact messages an agent run would send, their token count, and the codebase
        context's files with their bytes and tokens, its total and its cap; no model call."""
        agent = await self.agents.get(agent_id)
        if problems := await asyncio.to_thread(self._unreadable, request.files):
            raise ValidationFailed(problems, what="agent prompt")
        config = request.reply_config(agent_id)
        try:
            prepared = await prepare_call(agent, config, self.workspace, LLMCallTask.provider)
        except TaskFailed as exc:
            raise ValidationFailed([Problem(loc="request", message=exc.message)], what="agent prompt") from None
        return {
            "agent_id": agent_id,
            "model": prepared.request.model,
            "messages": prepared.request.messages,
            "response_format": prepared.request.response_format,
            "parameters": prepared.request.parameters,
            "tokens": await LLMCallTask.provider.count_tokens(prepared.request),
            "context": prepared.context_report(),
        }

    def _unreadable(self, files: list[str]) -> list[Problem]:
        """The files chosen by hand that cannot be sent (missing, outside, credentials), by index."""
        return [
            Problem(loc=f"files.{index}", message=problem, field=f"files.{index}")
            for index, path in enumerate(files)
            if (problem := chosen_file_problem(self.workspace, path)) is not None
        ]

    async def _install_agent_run(self) -> None:
        if all(self.registry.get(task) for task in ("llm_call", "file_write")):
            await self.workflows.install(AGENT_RUN_WORKFLOW)

    async def get_run(self, run_id: str) -> WorkflowRun:
        """The run document; a unique prefix of ``MIN_RUN_ID_PREFIX`` or more characters names a
        run too (the CLI and the widgets show ids shortened), :class:`Conflict` if it is ambiguous."""
        view = self._views.document(run_id)
        if view is not None:
            return view
        found = await self.runs.get_run(run_id)
        if found is None and len(run_id) >= MIN_RUN_ID_PREFIX:
            matches = await self.runs.run_ids_starting(run_id)
            if len(matches) > 1:
                raise Conflict(f"run id '{run_id}' is ambiguous: give more of it", details={"matches": matches})
            if matches:
                return await self.get_run(matches[0])
        if found is None:
            raise NotFound(f"run '{run_id}' not found", details={"run_id": run_id})
        return run_document(*found, await self.runs.last_seq(run_id))

    async def list_runs(
        self, *, workflow_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        page = await self.runs.list_runs(workflow_id, status, limit, cursor)
        return RunPage([run_document(r, [], with_workflow=False) for r in page.runs], page.next_cursor)

    async def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        events = await self.runs.events(run_id, since, limit)
        if not events:
            await self.get_run(run_id)
        return events

    async def subscribe(self, run_id: str, since: int = 0, *, maxsize: int = 0) -> AsyncIterator[Event]:
        """Stored events after ``since``, then live ones, in order, ending with the terminal one."""
        with self.bus.subscribe(run_id, maxsize) as live:
            run = await self.get_run(run_id)
            last = since
            for event in await self.runs.events(run_id, since):
                yield event
                last = event.seq
                if event.terminal:
                    return
            if run.status.terminal:
                return
            while True:
                event = await live.get()
                if event.seq <= last:
                    continue
                yield event
                last = event.seq
                if event.terminal:
                    return

    async def wait(self, run_id: str) -> WorkflowRun:
        """The run document once the run has ended."""
        with self.bus.subscribe(run_id) as live:
            run = await self.get_run(run_id)
            while not run.status.terminal:
                if (await live.get()).terminal:
                    run = await self.get_run(run_id)
            return run

    @property
    def active_runs(self) -> int:
        return len(self._active)

    def _require_started(self) -> None:
        if not self.started:
            raise RuntimeError("the engine is not started: use `async with Engine(...)` or `await engine.start()`")

    def health(self) -> dict[str, Any]:
        """``status`` is ``degraded`` while the broker cannot be reached (runs wait for it)."""
        writers = [w for w in (self._writer, self._submissions) if w is not None]
        queue = self._queue.health() if self._queue else {"url": redact(self.queue_url)}
        return {
            "status": "ok" if queue.get("up", True) else "degraded",
            "storage": {
                **self.storage.health(),
                "commits": sum(w.batches for w in writers),
                "unstorable_runs": [r for w in writers for r in w.unstorable_runs],
                "last_error": next((w.last_error for w in writers if w.last_error), None),
            },
            "queue": {
                **queue,
                "workers": self._workers if self._worker else 0,
                "busy": self._worker.busy if self._worker else 0,
            },
            "active_runs": self.active_runs,
        }

    async def import_agents(self, source: ImportSource, *, dry_run: bool = False) -> dict[str, Any]:
        """:meth:`import_v2`'s report as ``POST /api/v3/agents/import`` answers it (what the interface returns)."""
        return (await self.import_v2(source, dry_run=dry_run)).as_dict()

    async def import_v2(self, source: ImportSource, *, dry_run: bool = False) -> V2ImportReport:
        """Import what Clarion v2 left (a ``clarion.db``, its YAML store, exported agent files,
        an uploaded body, or uploaded files): agents created or updated in place, run history as finished runs."""
        return await V2Migration(self.agents, self.runs).run(source, dry_run=dry_run)

    # -- history -----------------------------------------------------------------

    async def query(
        self, sql: str, *, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_BYTES
    ) -> QueryResult:
        """One read-only SQL statement over the history views (``runs``, ``steps``, ``events``,
        ``llm_calls``); the journal is projected first, so every committed run is seen."""
        self._require_started()
        return await self.storage.query(sql, max_rows, timeout_s, max_bytes)
