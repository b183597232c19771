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
from ..agent.v2runs import V2_RUN_WORKFLOW, V2_RUN_WORKFLOW_ID
from ..core.errors import Conflict, NotFound, Problem, StorageUnavailable, ValidationFailed
from ..core.ids import local_user, new_run_id
from ..core.protocol import EventType, RunStatus
from ..core.secrets import SecretMasker, SecretPolicy
from ..core.workspace import Workspace
from ..storage.database import DEFAULT_MEMORY_LIMIT, default_db_path
from ..storage.duckdb_storage import DuckDBStorage
from ..storage.llm_cache import DEFAULT_MAX_BYTES as DEFAULT_LLM_CACHE_MAX_BYTES
from ..storage.protocols import ActiveRun, Storage
from ..storage.query import MAX_BYTES, MAX_ROWS, TIMEOUT_S, QueryResult
from ..storage.records import Event, RunRecord, StoredDocument, utcnow
from ..storage.writer import GroupCommitWriter, refusal
from ..task.base import DEFAULT_MAX_OUTPUT_BYTES, TaskSettings
from ..task.broker import DROP_REASONS, redact
from ..task.local import LocalQueue
from ..task.preview import Previewer
from ..task.queue import JobResult, Queue
from ..task.queues import make_queue
from ..task.registry import TaskRegistry
from ..task.worker import Worker
from .agent_run import AgentRunRequest
from .agent_runs import AgentRuns
from .budget import Budget, BudgetLedger, effective_budget, limits_of, llm_quoter, parse_budget
from .bus import EventBus, Subscription
from .compare import RunComparison, compare_runs
from .compiler import Plan, compile_workflow
from .executor import RunExecutor
from .llm_cache import CacheStats, LLMCache
from .models import Decision, RunPage, WorkflowRun, parse_workflow
from .plans import PlanCache
from .rerun import Rerun, agent_overrides, plan_rerun, rerun_request
from .runs import run_document
from .service import WorkflowService
from .supervisor import RunSupervisor
from .telemetry import Telemetry
from .v2_rerun import rerun_imported, rerun_inputs
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
        llm_cache: bool = False,
        llm_cache_max_bytes: int = DEFAULT_LLM_CACHE_MAX_BYTES,
        db_memory_limit: str = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        """``storage`` defaults to the DuckDB file at ``db_path``. ``run_workers``: whether this
        process runs steps itself (default: only with the local queue; a broker's jobs go to
        ``clarion worker`` processes). ``tracer`` (OpenTelemetry's) defaults to the global
        tracer provider's, which records nothing until the host sets up an SDK. ``llm_cache``:
        whether LLM calls that no step, run or agent decides for are answered from the cache
        (see :mod:`.llm_cache`); ``llm_cache_max_bytes`` caps the cache's stored replies.
        ``db_memory_limit`` bounds DuckDB's buffer pool for the file (e.g. ``"1GB"``)."""
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
        self.storage: Storage = storage or DuckDBStorage(self.db_path, db_memory_limit)
        self.runs = self.storage.runs
        self.agents = AgentService(self.storage.agents, self.settings.secrets)
        self.workflows = WorkflowService(self.storage.workflows, self.runs, self.validator)
        self._agent_runs = AgentRuns(self.agents, self.workflows, self.registry, self.workspace, self.submit_saved)
        self._previewer = Previewer(self.registry, self.workspace, self.settings)
        self._cache = LLMCache(
            self.storage.llm_cache, self.registry, self.workspace, self.settings,
            default=llm_cache, max_bytes=llm_cache_max_bytes,
        )  # fmt: skip
        self.bus = EventBus()
        self._telemetry = Telemetry(tracer)
        self._views = RunViews()
        self._writer: GroupCommitWriter | None = None
        self._submissions: GroupCommitWriter | None = None
        self._queue: Queue | None = None
        self._worker: Worker | None = None
        self._router: asyncio.Task[None] | None = None
        self._runs_live = RunSupervisor()
        self._plans = PlanCache(self.validator)
        """Compiled plans by document digest, for ad-hoc and saved documents alike."""
        self._quoter = llm_quoter(self.workspace)
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
        await self._agent_runs.install()
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
        await self._runs_live.stop()
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
        executor = self._runs_live.get(result.run_id)
        if executor is not None:
            executor.post(result)

    # -- runs --------------------------------------------------------------------

    def compile(self, workflow: WorkflowSource) -> Plan:
        """The validated plan of a document, compiled once per distinct document."""
        return self._plans.plan(workflow)

    async def submit(
        self,
        workflow: WorkflowSource | Plan,
        inputs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> str:
        """Validate and start a run of a document, without saving it; returns its id once the
        run is durably queued. A :class:`Plan` from :meth:`compile` is not compiled again.
        ``budget``: this run's, its fields over the workflow's ``budget:``; ``cache``: answer
        the run's LLM calls from the cache (True) or never (False); None leaves it to each
        step, agent and the server (see :mod:`.llm_cache`)."""
        plan = workflow if isinstance(workflow, Plan) else self.compile(workflow)
        return await self._start(plan, inputs, idempotency_key, budget=parse_budget(budget), cache=cache)

    async def submit_saved(
        self,
        workflow_id: str,
        inputs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> str:
        if workflow_id == V2_RUN_WORKFLOW_ID:  # a record of v2's runs: running one again is an agent run
            return await self.run_agent(*rerun_inputs(inputs or {}, parse_budget(budget), cache))
        stored = await self.workflows.get(workflow_id)
        return await self._start(
            self._plans.plan(stored.doc), inputs, idempotency_key, budget=parse_budget(budget), cache=cache
        )

    async def rerun(
        self,
        run_id: str,
        *,
        from_step: str | None = None,
        inputs: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> WorkflowRun:
        """Run a finished run again, reusing every step no change reaches (see
        :mod:`.rerun`); the new run's document, with ``parent_run_id`` and ``changes``. It
        holds to the parent's budget limits, ``budget``'s fields over them (reused steps cost
        nothing). ``cache`` is the new run's own choice for the LLM cache, as in :meth:`submit`."""
        budget = parse_budget(budget)
        request = rerun_request(
            {"from_step": from_step, "inputs": inputs or {}, "overrides": overrides or {}, "cache": cache}
        )
        parent = await self.get_run(run_id)
        if not parent.status.terminal:
            raise Conflict(
                f"run '{parent.run_id}' is {parent.status.value}: re-run it once it has finished",
                details={"run_id": parent.run_id, "status": parent.status.value},
            )
        record, steps = await self.runs.get_run(parent.run_id)
        rerun = plan_rerun(record, steps, request, self.compile)
        limits = limits_of(record.budget) if record.budget else rerun.plan.workflow.budget
        limits = effective_budget(limits, budget)
        run_id = await self._start(
            rerun.plan, rerun.inputs, None, rerun, parent.run_id, budget=limits, cache=request.cache
        )
        return await self.get_run(run_id)

    async def _start(
        self,
        plan: Plan,
        inputs: dict[str, Any] | None,
        key: str | None,
        rerun: Rerun | None = None,
        parent_run_id: str | None = None,
        *,
        budget: Budget | None = None,
        cache: bool | None = None,
    ) -> str:
        """``budget``: the run's own, its fields over the workflow's (a re-run gives the one it holds to)."""
        self._require_started()
        # While the main writer retries a failed commit, a new run could neither be stored nor
        # run: refused at once. (A failed submission alone does not refuse the next: each new
        # run's own commit is what notices that space is back.)
        if self._writer.unavailable is not None:
            raise refusal(self._writer.unavailable)
        workflow = plan.workflow
        if key is not None:
            existing = await self._find_idempotent(workflow.id, key)
            if existing is not None:
                await self._submissions.flush()  # the first submit may not have committed it yet
                return existing
        resolved = plan.resolve_inputs(inputs)
        await self._check_agents(plan)
        if key is not None and (claimed := self._runs_live.claimed(workflow.id, key)) is not None:
            # A concurrent submit with the same key claimed it while we awaited the agent check.
            await self._submissions.flush()
            return claimed
        run = RunRecord(
            run_id=new_run_id(), workflow_id=workflow.id, workflow_name=workflow.name, workflow=plan.document,
            workflow_digest=plan.digest, inputs=resolved, status=RunStatus.queued.value,
            created_at=utcnow(), idempotency_key=key, parent_run_id=parent_run_id,
            changes=rerun.changes if rerun else None, cache=cache,
        )  # fmt: skip
        limits = budget if rerun else effective_budget(workflow.budget, budget)
        if limits is not None:
            run.budget = BudgetLedger.initial(limits)
        if key is not None:
            self._runs_live.claim(workflow.id, key, run.run_id)
        executor = self._executor(
            plan, run, reused=rerun.reused if rerun else None, reused_items=rerun.reused_items if rerun else None
        )
        self._runs_live.track(executor)  # cancellable from here on
        executor.queued(self._submissions)
        try:
            await self._submissions.flush()
        except StorageUnavailable:
            self._runs_live.forget(run.run_id, (workflow.id, key) if key is not None else None)
            raise
        if self.started:  # else the engine is stopping, and the next start resumes the stored run
            self._runs_live.launch(executor)
        return run.run_id

    async def _find_idempotent(self, workflow_id: str, key: str) -> str | None:
        found = self._runs_live.claimed(workflow_id, key)
        if found is None:
            found = await self.runs.find_idempotent(workflow_id, key)
        # Re-check after the await: a concurrent submit with the same key may have won.
        return self._runs_live.claimed(workflow_id, key) or found

    async def _check_agents(self, plan: Plan) -> None:
        problems = []
        for node_id, node in plan.nodes.items():
            agent_id = node.step.with_.get("agent")
            if agent_id in plan.agent_ids and await self.agents.resolve(agent_id) is None:
                problems.append(Problem(loc=f"step '{node_id}' field 'with.agent'", message=f"unknown agent '{agent_id}'", step=node_id, field="with.agent"))  # fmt: skip
        if problems:
            raise ValidationFailed(problems)

    def _unstorable(self, run_id: str, error: str) -> None:
        """The database refused this run's transitions: it ends ``failed`` with that error, in
        a record small enough to store, rather than go on with a state nobody can read back."""
        executor = self._runs_live.get(run_id)
        if executor is not None:
            executor.abort({"code": "storage", "message": f"the run's state could not be stored: {error}"})

    async def resume(self, run_ids: list[str] | None = None) -> list[str]:
        """Restart interrupted runs; finished steps keep their outputs and do not run again."""
        resumed = []
        for active in await self.runs.active_runs():
            run_id = active.run.run_id
            if run_id in self._runs_live or (run_ids is not None and run_id not in run_ids):
                continue
            executor = self._resumed_executor(active)
            if executor is not None:
                self._runs_live.launch(executor)
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
        """A run's executor, with its budget's ledger (new, or as the resumed run stored it)."""
        ledger = BudgetLedger(run.budget, self._quoter) if run.budget else None
        return RunExecutor(
            plan, run, self._writer, self._queue, self._agent_resolver(run), self._previewer, cache=self._cache,
            max_output_bytes=self.settings.max_output_bytes, budget=ledger, **resumed,
        )  # fmt: skip

    def _agent_resolver(self, run: RunRecord) -> Any:
        """How a run finds its agents: the saved ones, with a re-run's overrides laid over them."""
        overrides = agent_overrides(run.changes)
        if not overrides:
            return self.agents.resolve

        async def resolve(agent_id: str) -> dict[str, Any] | None:
            agent = await self.agents.resolve(agent_id)
            return agent if agent is None else {**agent, **overrides.get(agent_id, {})}

        return resolve

    async def cancel(self, run_id: str) -> None:
        """Cancel a queued or running run; running steps are stopped (processes killed)."""
        executor = self._runs_live.get(run_id)
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
        executor = self._runs_live.get(run_id)
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
        """Start an agent run (the built-in ``agent-run`` workflow); its id once durably queued."""
        return await self._agent_runs.start(agent_id, request)

    async def warm_up_llm(self) -> None:
        """With agents defined, LLM calls are coming: start the provider now (litellm's import
        takes seconds, in its own process), so the first call does not wait for it."""
        await self._agent_runs.warm_up()

    async def prompt_agent(self, agent_id: str, request: AgentRunRequest) -> dict[str, Any]:
        """The exact messages an agent run would send, their token count, and the codebase
        context's files with their bytes and tokens, its total and its cap; no model call."""
        return await self._agent_runs.prompt(agent_id, request)

    async def rerun_imported(
        self, run_id: str, budget: Budget | dict[str, Any] | None = None, cache: bool | None = None
    ) -> str:
        """Repeat a run imported from Clarion v2: a new agent run with its agent, prompt and files."""
        return await rerun_imported(self, run_id, parse_budget(budget), cache)

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

    async def compare_runs(self, run_ids: list[str]) -> RunComparison:
        """Two or more runs side by side, step by step (ids or unique prefixes)."""
        if len(run_ids) < 2:
            raise ValidationFailed(
                [Problem(loc="ids", message="give two or more run ids to compare", field="ids")], what="comparison"
            )
        return compare_runs([await self.get_run(run_id) for run_id in run_ids])

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
        return len(self._runs_live)

    def _require_started(self) -> None:
        if not self.started:
            raise RuntimeError("the engine is not started: use `async with Engine(...)` or `await engine.start()`")

    def health(self) -> dict[str, Any]:
        """``status`` is ``degraded`` while the broker cannot be reached (runs wait for it) or the
        database cannot write (new runs are refused; ``storage.unavailable`` says why)."""
        writers = [w for w in (self._writer, self._submissions) if w is not None]
        queue = self._queue.health() if self._queue else {"url": redact(self.queue_url)}
        unavailable = next((w.unavailable for w in writers if w.unavailable), None)
        return {
            "status": "ok" if queue.get("up", True) and unavailable is None else "degraded",
            "storage": {
                **self.storage.health(),
                "up": unavailable is None,
                "unavailable": unavailable,
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
        report = await V2Migration(self.agents, self.runs, self._announce_imported).run(source, dry_run=dry_run)
        if report.runs.found and not dry_run:  # the runs' workflow lists (and filters) like any
            await self.workflows.install(V2_RUN_WORKFLOW)
        return report

    async def _announce_imported(self, events: list[Event]) -> None:
        """Imported runs reach live subscribers once their workflow is saved: a sidebar that
        sees a run of a workflow it does not know reads the workflows again, and must find it."""
        await self.workflows.install(V2_RUN_WORKFLOW)
        self.bus.publish(events)

    # -- the LLM cache -----------------------------------------------------------

    async def clear_cache(self, *, agent_id: str | None = None, older_than: str | None = None) -> int:
        """Delete cached LLM replies: those of ``agent_id`` and/or older than ``older_than``
        (``7d``, ``12h``, ...), or every one; how many."""
        self._require_started()
        return await self._cache.clear(agent_id=agent_id, older_than=older_than)

    async def cache_stats(self) -> CacheStats:
        """How many replies the LLM cache holds, their bytes against the cap, and by agent."""
        self._require_started()
        return await self._cache.stats()

    # -- history -----------------------------------------------------------------

    async def query(
        self, sql: str, *, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_BYTES
    ) -> QueryResult:
        """One read-only SQL statement over the history views (``runs``, ``steps``, ``events``,
        ``llm_calls``); the journal is projected first, so every committed run is seen."""
        self._require_started()
        return await self.storage.query(sql, max_rows, timeout_s, max_bytes)
