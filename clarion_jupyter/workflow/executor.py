"""RunExecutor: drives one run through its DAG.

Each run is one coroutine that owns the run's state in memory and reacts to messages in
its inbox (job results, retry timers, cancellation), so no locks are needed and the hot
path is a dictionary update plus a few records handed to the group-commit writer. It
never waits for a commit: the writer makes transitions durable before announcing them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..core.protocol import STEP_DONE, EventType, RunStatus, StepStatus
from ..core.secrets import reread_environment
from ..llm.cache import CACHE_RESOURCE
from ..storage.records import (
    Event,
    RunRecord,
    StepRecord,
    duration_ms,
    isoformat,
    latest_attempts,
    utcnow,
)
from ..storage.writer import GroupCommitWriter
from ..task.queue import Job, JobResult, Queue, job_id
from . import approvals
from .approvals import Decision, Previewer, PreviewFailed, WaitingRoom
from .budget import BudgetLedger
from .compiler import Node, Plan
from .llm_cache import LLMCache
from .storable import storable
from .templates import TemplateError, truthy

log = logging.getLogger(__name__)

AgentResolver = Callable[[str], Awaitable[dict[str, Any] | None]]
_BLOCKING = frozenset({StepStatus.failed, StepStatus.skipped, StepStatus.cancelled})


@dataclass(slots=True)
class _Retry:
    key: str


@dataclass(slots=True)
class _Cancel:
    reason: str = "cancelled"


@dataclass(slots=True)
class _Map:
    """A ``for_each`` node in flight: one child execution per item, gathered in order."""

    items: list[Any]
    results: list[Any]
    remaining: int
    failed: bool = False
    skipped: int = 0


@dataclass(slots=True)
class _Execution:
    node: Node
    key: str
    item_index: int | None
    item: Any = None
    next_attempt: int = 1
    record: StepRecord | None = None
    approved: bool = False
    """Approved once, it runs (and retries) without asking again."""
    approval: dict[str, Any] | None = None
    """Once approved, ``{"decision": {approved, by, at}}``, stored on every later attempt, so
    that a restart runs the step again without asking (its first run may have acted already)."""
    approved_before_restart: bool = False
    """Its next ``step_started`` says that the decision was taken before a restart."""
    held: Job | None = None
    """While waiting for approval: the job that runs once approved."""
    adopted: bool = False
    """Its job, sent before a restart, is still in the broker: its result is awaited, not sent again."""
    job: Job | None = None
    """The job last sent to a worker: its cache lookup says whether the reply is to be stored."""


class RunExecutor:
    """Drives one run: starts ready steps, takes their results from one inbox, decides retries, skips and approvals, and records every transition before it is announced."""

    def __init__(
        self,
        plan: Plan,
        run: RunRecord,
        writer: GroupCommitWriter,
        queue: Queue,
        agents: AgentResolver,
        preview: Previewer,
        *,
        cache: LLMCache,
        max_output_bytes: int,
        last_seq: int = 0,
        prior: list[StepRecord] | None = None,
        reused: dict[str, list[StepRecord]] | None = None,
        reused_items: dict[str, list[tuple[Any, StepRecord]]] | None = None,
        budget: BudgetLedger | None = None,
    ) -> None:
        """``reused``: a re-run's nodes taken over from its parent, with the parent's records;
        ``reused_items``: the parent's succeeded items of the ``for_each`` nodes that run again,
        by the value each mapped over (an item of the same value is copied, not run);
        ``budget``: the run's ledger, when it has a budget (every LLM call reserves from it)."""
        self.plan = plan
        self.run = run
        self._writer = writer
        self._queue = queue
        self._agents = agents
        self._preview = preview
        self._cache = cache
        self._max_output_bytes = max_output_bytes
        self._seq = last_seq
        self._inbox: asyncio.Queue[JobResult | _Retry | _Cancel | Decision] = asyncio.Queue()
        self._status: dict[str, StepStatus] = {node_id: StepStatus.pending for node_id in plan.nodes}
        self._steps_ctx: dict[str, dict[str, Any]] = {}
        self._waiting = {node_id: len(node.waits_for) for node_id, node in plan.nodes.items()}
        self._executions: dict[str, _Execution] = {}
        self._maps: dict[str, _Map] = {}
        self._running: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._approvals: WaitingRoom[_Execution] = WaitingRoom(self._decided)
        """Executions waiting for a decision; they hold no worker slot."""
        self._unfinished = len(plan.nodes)
        self._prior = latest_attempts(prior or [])
        self._reused = reused or {}
        self._reused_items = reused_items or {}
        self._budget = budget
        self._context = {
            "inputs": run.inputs,
            "steps": self._steps_ctx,
            "run": {"id": run.run_id, "started_at": run.started_at},
        }
        self._usage = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None}
        self.finished = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the run has begun (a resumed run holds its waiting steps again by then)."""

    def queued(self, submissions: GroupCommitWriter) -> None:
        """Record the new run through the engine's ``submissions`` writer, which commits
        beside the busy main one. The engine calls this once and starts :meth:`execute`
        only once that is stored, so no later transition of the run can be stored first."""
        reread_environment()  # its inputs are masked as they are stored: against the secrets set now
        submissions.add_run(self.run)
        self._emit(
            EventType.run_queued, None, {"workflow_id": self.run.workflow_id, "inputs": self.run.inputs}, submissions
        )

    def abort(self, error: dict[str, Any]) -> None:
        """End the run as failed after an engine error, so it is not left running forever."""
        if not self.finished.is_set():
            self._fail_run(error)

    def post(self, message: JobResult) -> None:
        self._inbox.put_nowait(message)

    def cancel(self) -> None:
        self._inbox.put_nowait(_Cancel())

    def decide(self, key: str, approve: bool, by: str | None, comment: str | None) -> bool:
        """Decide a waiting step; False when ``key`` is not waiting (or already decided).
        The decision is announced at once; the run acts on it when it takes it from its inbox."""
        return self._approvals.decide(key, approve, by, comment)

    def _decided(self, _execution: _Execution, decision: Decision, comment: str | None) -> None:
        # Posted before the event is added, so the run acts on it (its step_started joins the
        # pending batch) before the writer wakes: decision and start then share one commit.
        self._inbox.put_nowait(decision)
        kind = EventType.approval_granted if decision.approve else EventType.approval_rejected
        self._emit(kind, decision.key, {"by": decision.by, "comment": comment})

    @property
    def waiting_for(self) -> list[str]:
        return self._approvals.keys

    # -- lifecycle ---------------------------------------------------------------

    async def execute(self) -> None:
        resumed = self.run.status in (RunStatus.running, RunStatus.waiting)
        self.run.status = RunStatus.running
        self.run.started_at = self.run.started_at or utcnow()
        self._context["run"]["started_at"] = self.run.started_at
        self._writer.add_run(self.run)
        self._emit(
            EventType.run_started, None, {"workflow_id": self.run.workflow_id, **({"resumed": True} if resumed else {})}
        )
        if resumed:
            ready = self._restore()
        elif self._reused:
            ready = self._reuse()
        else:
            ready = [n for n, count in self._waiting.items() if count == 0]
        try:
            await self._begin_all(ready)
        finally:
            self.started.set()
        while not self.finished.is_set():
            self._check_complete()
            if self.finished.is_set():
                break
            self._note_waiting()
            message = await self._inbox.get()
            if isinstance(message, JobResult):
                await self._on_result(message)
            elif isinstance(message, _Retry):
                await self._on_retry(message.key)
            elif isinstance(message, Decision):
                await self._on_decision(message)
            else:
                await self._on_cancel()

    def _restore(self) -> list[str]:
        """Take back finished steps of an interrupted run; return the nodes now ready."""
        for node_id in self.plan.nodes:
            record = self._prior.get(node_id)
            if record is not None and record.status in STEP_DONE:
                self._unfinished -= 1
                self._status[node_id] = StepStatus(record.status)
                self._steps_ctx[node_id] = {"output": record.output, "status": record.status}
        failed = [
            n
            for n, s in self._status.items()
            if s == StepStatus.failed and not self.plan.nodes[n].step.continue_on_error
        ]
        if failed:
            self._fail_run(
                {"code": EventType.step_failed, "message": f"step '{failed[0]}' failed", "step_id": failed[0]}
            )
            return []
        return self._ready_pending()

    def _reuse(self) -> list[str]:
        """A re-run: copy each reused node's records (and items') from the parent as they
        finished there, without calling its task; return the nodes now ready."""
        for node_id, records in self._reused.items():
            for parent in records:
                self._copy_from_parent(parent, parent.key, parent.item_index)
            self._unfinished -= 1
            self._status[node_id] = StepStatus.succeeded
            self._steps_ctx[node_id] = {"output": records[0].output, "status": StepStatus.succeeded.value}
        return self._ready_pending()

    def _copy_from_parent(self, parent: StepRecord, key: str, item_index: int | None) -> None:
        """Store the parent's finished record as this run's ``key``, marked reused, without calling its task."""
        reused_from = {"run_id": parent.run_id, "attempt": parent.attempt}
        record = dataclasses.replace(
            parent, run_id=self.run.run_id, key=key, item_index=item_index, attempt=1, reused_from=reused_from
        )
        self._writer.add_step(record)
        data = {"attempt": 1, "duration_ms": _ms(record), "output": record.output, "reused_from": reused_from}
        if item_index is not None:
            data["item_index"] = item_index
        self._emit(EventType.step_completed, key, data)

    def _reused_item(self, node_id: str, item: Any) -> StepRecord | None:
        """The parent's succeeded item of the same value, taken so no other item copies it too."""
        candidates = self._reused_items.get(node_id)
        for position, (value, record) in enumerate(candidates or ()):
            if value == item:
                del candidates[position]
                return record
        return None

    def _ready_pending(self) -> list[str]:
        """Count again what each node waits for, after some finished at once; the pending ones ready now."""
        for node_id, node in self.plan.nodes.items():
            self._waiting[node_id] = sum(1 for dep in node.waits_for if self._status[dep] not in STEP_DONE)
        return [n for n, s in self._status.items() if s == StepStatus.pending and self._waiting[n] == 0]

    # -- starting steps ----------------------------------------------------------

    async def _begin_all(self, node_ids: list[str]) -> None:
        queue = list(node_ids)
        while queue and not self.finished.is_set():
            node_id = queue.pop(0)
            node = self.plan.nodes[node_id]
            if self._status[node_id] != StepStatus.pending:
                continue
            skip_reason = self._skip_reason(node)
            if skip_reason is not None:
                queue.extend(self._finish_node(node_id, StepStatus.skipped, None, reason=skip_reason))
            elif node.for_each is not None:
                queue.extend(await self._begin_map(node))
            else:
                queue.extend(await self._dispatch(self._execution(node, node_id, None)))

    def _skip_reason(self, node: Node) -> str | None:
        if node.condition is not None:
            if node.for_each is not None and "item" in node.condition.refs.names:
                return None
            try:
                return None if truthy(node.condition.render(self._context)) else "condition is false"
            except TemplateError as exc:
                return f"condition could not be evaluated: {exc}"
        for dep in sorted(node.data_deps):
            if self._status[dep] in _BLOCKING:
                return f"dependency '{dep}' {self._status[dep].value}"
        return None

    def _execution(self, node: Node, key: str, item_index: int | None, item: Any = None) -> _Execution:
        prior = self._prior.get(key)
        adopted = (
            prior is not None
            and prior.status == StepStatus.running
            and self._queue.adopt(self.run.run_id, key, prior.attempt)
        )
        if prior is not None and prior.status == StepStatus.running and not adopted:
            # Interrupted by a crash or a stop: this attempt ends here, the next one follows.
            prior.status, prior.finished_at = StepStatus.failed, utcnow()
            prior.error = _error("interrupted", "the engine stopped during this attempt")
            self._writer.add_step(prior)
            if self._budget is not None:
                self._budget.release(job_id(self.run.run_id, key, prior.attempt))
        execution = _Execution(node, key, item_index, item, next_attempt=prior.attempt + 1 if prior else 1)
        if prior is not None and prior.status in (StepStatus.waiting, StepStatus.running):
            execution.record = prior  # still waiting for its decision, or still in the broker: the same attempt goes on
            execution.adopted = adopted
        elif prior is not None and (prior.approval or {}).get("decision", {}).get("approved"):
            execution.approved = execution.approved_before_restart = True
            execution.approval = {"decision": prior.approval["decision"]}
        self._executions[key] = execution
        return execution

    async def _begin_map(self, node: Node) -> list[str]:
        try:
            items = node.for_each.render(self._context)
        except TemplateError as exc:
            return self._fail_before_start(node, f"for_each could not be evaluated: {exc}")
        if not isinstance(items, list):
            return self._fail_before_start(node, f"for_each must give a list, got {type(items).__name__}")
        self._status[node.id] = StepStatus.running
        parent = self._prior.get(node.id)
        if parent is None:
            parent = self._record(node.id, node.id, None, attempt=1, status=StepStatus.running)
        else:
            # A resumed map: its row exists already, so take it back rather than insert it twice.
            parent.status, parent.finished_at, parent.error = StepStatus.running, None, None
            self._writer.add_step(parent)
        self._emit(
            EventType.step_started, node.id, {"attempt": parent.attempt, "items": len(items), "task": node.step.task}
        )
        self._executions[node.id] = _Execution(node, node.id, None, record=parent)
        state = self._maps[node.id] = _Map(items=items, results=[None] * len(items), remaining=len(items))
        if not items:
            return self._complete_map(node)
        ready: list[str] = []
        for index, item in enumerate(items):
            key = f"{node.id}[{index}]"
            prior = self._prior.get(key)
            finished_before = prior is not None and prior.status in STEP_DONE
            execution = self._execution(node, key, index, item)
            if finished_before:
                state.remaining -= 1
                state.results[index] = prior.output
                state.failed |= prior.status == StepStatus.failed
                state.skipped += prior.status == StepStatus.skipped
                continue
            if (reused := self._reused_item(node.id, item)) is not None:
                self._copy_from_parent(reused, key, index)
                ready.extend(self._child_done(execution, StepStatus.succeeded, reused.output, None))
                continue
            if node.condition is not None and "item" in node.condition.refs.names:
                try:
                    keep = truthy(node.condition.render(self._item_context(item)))
                except TemplateError as exc:
                    ready.extend(self._child_done(execution, StepStatus.failed, None, _error("template", str(exc))))
                    continue
                if not keep:
                    self._record(key, node.id, index, attempt=0, status=StepStatus.skipped)
                    self._emit(EventType.step_skipped, key, {"reason": "condition is false", "item_index": index})
                    ready.extend(self._child_done(execution, StepStatus.skipped, None, None))
                    continue
            ready.extend(await self._dispatch(execution))
        if state.remaining == 0 and self._status[node.id] == StepStatus.running:
            ready.extend(self._complete_map(node))
        return ready

    def _item_context(self, item: Any) -> dict[str, Any]:
        return {**self._context, "item": item}

    async def _dispatch(self, execution: _Execution) -> list[str]:
        node = execution.node
        if execution.adopted:
            execution.adopted = False
            if execution.item_index is None:
                self._status[node.id] = StepStatus.running
            self._running.add(execution.key)
            return []
        context = self._context if execution.item_index is None else self._item_context(execution.item)
        still_waiting = execution.record is not None and execution.record.status == StepStatus.waiting
        attempt = execution.record.attempt if still_waiting else execution.next_attempt
        execution.next_attempt = attempt + 1
        if execution.item_index is None:
            self._status[node.id] = StepStatus.running
        try:
            config = storable(node.config.render(context), "with", limit=None)
            resources = await self._resources(node, config)
        except (TemplateError, LookupError) as exc:
            if not still_waiting:
                execution.record = self._record(
                    execution.key, node.id, execution.item_index, attempt, StepStatus.failed
                )
            return self._attempt_failed(execution, _error("template", str(exc)), retryable=False)
        job = Job(
            self.run.run_id, execution.key, node.id, attempt, node.step.task, config, node.step.timeout_s, resources,
            allow_protected=node.step.allow_protected,
        )  # fmt: skip
        if still_waiting:
            self._hold(execution, job)
            return []
        # Sent before a restart whose record of it was lost: the broker still holds it.
        held = self._queue.adopt(self.run.run_id, execution.key, attempt)
        if not held and not execution.approved and approvals.asks_approval(node, context):
            return await self._request_approval(execution, job)
        refused = await self._reserve(node, job, force=held)
        execution.record = self._record(
            execution.key, node.id, execution.item_index, attempt,
            StepStatus.failed if refused else StepStatus.running, approval=execution.approval,
        )  # fmt: skip
        if refused is not None:
            return self._attempt_failed(execution, *refused)
        await self._start(execution, job, send=not held)
        return []

    async def _reserve(self, node: Node, job: Job, force: bool = False) -> tuple[dict[str, Any], bool] | None:
        """Before an LLM call is sent: look it up in the LLM cache (a hit costs nothing), else
        hold its worst case against the run's budget; the step error (and whether to retry)
        when it may not be sent. ``force``: a broker has it already (nothing to look up)."""
        if not force:
            await self._cache.look_up(job, self.run.cache)
        if self._budget is None or not self._budget.applies(node.task) or _answered_from_cache(job):
            return None
        return await self._budget.reserve(job, node.task, force=force)

    async def _start(self, execution: _Execution, job: Job, send: bool = True) -> None:
        data: dict[str, Any] = {"attempt": job.attempt, "task": job.task}
        if execution.item_index is not None:
            data["item_index"] = execution.item_index
        if execution.approved_before_restart:
            execution.approved_before_restart = False
            decided = execution.approval["decision"]
            data["approval"] = {
                **decided,
                "message": "approved before the engine restarted: runs again as a new attempt, without asking again",
            }
        self._emit(EventType.step_started, execution.key, data)
        self._running.add(execution.key)
        if send:
            execution.job = job
            await self._queue.put(job)

    # -- approvals -----------------------------------------------------------------

    async def _request_approval(self, execution: _Execution, job: Job) -> list[str]:
        """Build the preview, record the attempt as waiting and ask; no worker slot is taken."""
        node = execution.node
        try:
            approval = await approvals.request(self._preview, job, node, self._max_output_bytes)
        except PreviewFailed as exc:
            execution.record = self._record(
                execution.key, node.id, execution.item_index, job.attempt, StepStatus.failed
            )
            return self._attempt_failed(execution, _error("preview_failed", str(exc)), retryable=False)
        record = self._record(execution.key, node.id, execution.item_index, job.attempt, StepStatus.waiting)
        record.approval = {**approval, "requested_at": isoformat(record.started_at)}
        execution.record = record
        self._writer.add_step(record)
        self._emit(EventType.approval_requested, execution.key, {"attempt": job.attempt, **approval})
        self._hold(execution, job)
        return []

    def _hold(self, execution: _Execution, job: Job) -> None:
        """Wait for the decision on ``execution`` (asked now, or before a restart)."""
        execution.held = job
        if execution.item_index is None:
            self._status[execution.node.id] = StepStatus.waiting
        asked = execution.record.approval["requested_at"]
        self._approvals.hold(execution.key, execution, asked, execution.node.step.approval.timeout_s)

    async def _on_decision(self, decision: Decision) -> None:
        execution = self._executions.get(decision.key)
        if execution is None or execution.held is None or self.finished.is_set():
            return
        job, execution.held = execution.held, None
        record = execution.record
        if decision.approve:
            execution.approved = True
            decided = {"approved": True, "by": decision.by, "at": isoformat(utcnow())}
            record.approval = {**(record.approval or {}), "decision": decided}
            execution.approval = {"decision": decided}  # later attempts need the decision, not the preview
            record.status, record.started_at = StepStatus.running, utcnow()
            self._writer.add_step(record)
            if execution.item_index is None:
                self._status[execution.node.id] = StepStatus.running
            if (refused := await self._reserve(execution.node, job)) is not None:
                await self._begin_all(self._attempt_failed(execution, *refused))
                return
            await self._start(execution, job)
            return
        if execution.node.step.approval.on_reject == "skip":
            record.status, record.finished_at = StepStatus.skipped, utcnow()
            self._writer.add_step(record)
            self._emit(EventType.step_skipped, execution.key, {"reason": decision.reason})
            if execution.item_index is not None:
                ready = self._child_done(execution, StepStatus.skipped, None, None)
            else:
                ready = self._finish_node(execution.node.id, StepStatus.skipped, None, recorded=True)
        else:
            ready = self._attempt_failed(execution, _error("rejected", decision.reason), retryable=False)
        await self._begin_all(ready)

    def _note_waiting(self) -> None:
        """The run is ``waiting`` while some step waits for a person and nothing else goes on."""
        waiting = bool(self._approvals) and not self._running and not self._timers
        status = RunStatus.waiting if waiting else RunStatus.running
        if self.run.status != status and not self.finished.is_set():
            self.run.status = status
            self._writer.add_run(self.run)

    async def _resources(self, node: Node, config: dict[str, Any]) -> dict[str, Any]:
        if not node.task.needs_agent:
            return {}
        agent_id = config.get("agent")
        agent = await self._agents(agent_id) if isinstance(agent_id, str) else None
        if agent is None:
            raise LookupError(f"unknown agent '{agent_id}'")
        return {"agent": agent}

    # -- results -----------------------------------------------------------------

    async def _on_result(self, result: JobResult) -> None:
        execution = self._executions.get(result.key)
        record = execution.record if execution else None
        if record is None or record.attempt != result.attempt or record.status != StepStatus.running:
            return  # a duplicate or stale delivery: results are de-duplicated by attempt
        if result.kind == "progress":
            self._emit(result.event_type or "progress", result.key, result.data or {})
            return
        self._running.discard(result.key)
        if self._budget is not None:
            self._budget.settle(result.job_id, result.output if result.kind == "ok" else None, result.error)
        if result.kind == "ok":
            await self._cache.remember(execution.job, result.output)  # durable before the step's success
            ready = self._attempt_succeeded(execution, result.output, result.deliveries)
        else:
            ready = self._attempt_failed(execution, result.error or _error("failed", "failed"), result.retryable)
        await self._begin_all(ready)

    def _attempt_succeeded(self, execution: _Execution, output: Any, deliveries: int = 1) -> list[str]:
        try:
            output = storable({"output": output}, "output", self._max_output_bytes)["output"]
        except TemplateError as exc:
            return self._attempt_failed(execution, _error("output", str(exc)), retryable=False)
        record = execution.record
        record.status = StepStatus.succeeded
        record.finished_at = utcnow()
        record.output = output
        record.usage = _usage_of(output)
        self._add_usage(record.usage)
        self._writer.add_step(record)
        data = {"attempt": record.attempt, "duration_ms": _ms(record), "output": output}
        if record.usage:
            data["usage"] = record.usage
        if deliveries > 1:  # its job went to workers that were lost before this one
            data["deliveries"] = deliveries
        self._emit(EventType.step_completed, execution.key, data)
        if execution.item_index is not None:
            return self._child_done(execution, StepStatus.succeeded, output, None)
        return self._finish_node(execution.node.id, StepStatus.succeeded, output)

    def _attempt_failed(self, execution: _Execution, error: dict[str, Any], retryable: bool) -> list[str]:
        record = execution.record
        record.finished_at = utcnow()
        record.error = error
        policy = execution.node.step.retry
        if retryable and record.attempt < policy.max_attempts:
            delay = policy.delay(record.attempt, random.random())
            record.status = StepStatus.retrying
            self._writer.add_step(record)
            self._emit(
                EventType.step_retrying,
                execution.key,
                {"attempt": record.attempt, "error": error, "delay_s": round(delay, 3)},
            )
            loop = asyncio.get_running_loop()
            self._timers[execution.key] = loop.call_later(delay, self._inbox.put_nowait, _Retry(execution.key))
            return []
        record.status = StepStatus.failed
        self._writer.add_step(record)
        self._emit(
            EventType.step_failed,
            execution.key,
            {"attempt": record.attempt, "error": error, "duration_ms": _ms(record)},
        )
        if execution.item_index is not None:
            return self._child_done(execution, StepStatus.failed, None, error)
        return self._finish_node(execution.node.id, StepStatus.failed, None, error=error)

    async def _on_retry(self, key: str) -> None:
        execution = self._executions.get(key)
        if execution is None or execution.record is None or execution.record.status != StepStatus.retrying:
            return
        self._timers.pop(key, None)
        await self._begin_all(await self._dispatch(execution))

    def _child_done(
        self, execution: _Execution, status: StepStatus, output: Any, error: dict[str, Any] | None
    ) -> list[str]:
        node = execution.node
        state = self._maps[node.id]
        state.results[execution.item_index] = output
        state.remaining -= 1
        state.failed |= status == StepStatus.failed
        state.skipped += status == StepStatus.skipped
        if state.remaining or self._status[node.id] != StepStatus.running:
            return []
        return self._complete_map(node)

    def _complete_map(self, node: Node) -> list[str]:
        state = self._maps[node.id]
        parent = self._executions[node.id].record
        parent.finished_at = utcnow()
        if state.failed:
            error = _error("items_failed", "one or more for_each items failed")
            parent.status, parent.error = StepStatus.failed, error
            self._writer.add_step(parent)
            self._emit(EventType.step_failed, node.id, {"attempt": 1, "error": error, "duration_ms": _ms(parent)})
            return self._finish_node(node.id, StepStatus.failed, state.results, error=error)
        if state.items and state.skipped == len(state.items):
            parent.status = StepStatus.skipped
            self._writer.add_step(parent)
            self._emit(EventType.step_skipped, node.id, {"reason": "every item was skipped"})
            return self._finish_node(node.id, StepStatus.skipped, None, recorded=True)
        parent.status, parent.output = StepStatus.succeeded, state.results
        self._writer.add_step(parent)
        self._emit(
            EventType.step_completed, node.id, {"attempt": 1, "duration_ms": _ms(parent), "output": state.results}
        )
        return self._finish_node(node.id, StepStatus.succeeded, state.results)

    def _fail_before_start(self, node: Node, message: str) -> list[str]:
        error = _error("template", message)
        record = self._record(node.id, node.id, None, attempt=1, status=StepStatus.failed)
        record.error = error
        record.finished_at = record.started_at
        self._writer.add_step(record)
        self._emit(EventType.step_failed, node.id, {"attempt": 1, "error": error})
        return self._finish_node(node.id, StepStatus.failed, None, error=error)

    def _finish_node(
        self,
        node_id: str,
        status: StepStatus,
        output: Any,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
        recorded: bool = False,
    ) -> list[str]:
        """Mark a node done and return the dependants that became ready."""
        self._status[node_id] = status
        self._unfinished -= 1
        self._steps_ctx[node_id] = {"output": output, "status": status.value}
        if status == StepStatus.skipped and not recorded:
            self._record(node_id, node_id, None, attempt=0, status=StepStatus.skipped)
            self._emit(EventType.step_skipped, node_id, {"reason": reason})
        node = self.plan.nodes[node_id]
        if status == StepStatus.failed and not node.step.continue_on_error:
            message = (error or {}).get("message", "failed")
            self._fail_run(
                {"code": EventType.step_failed, "message": f"step '{node_id}' failed: {message}", "step_id": node_id}
            )
            return []
        ready = []
        for dependant in node.dependants:
            self._waiting[dependant] -= 1
            if self._waiting[dependant] == 0:
                ready.append(dependant)
        return ready

    # -- run end -----------------------------------------------------------------

    def _check_complete(self) -> None:
        if self.finished.is_set() or self._running or self._timers or self._unfinished:
            return
        try:
            outputs = storable(self.plan.outputs.render(self._context), "outputs", self._max_output_bytes)
        except TemplateError as exc:
            self._fail_run(_error("outputs", f"workflow outputs could not be evaluated: {exc}"))
            return
        self._end(RunStatus.succeeded, EventType.workflow_succeeded, {"outputs": outputs}, outputs=outputs)

    def _fail_run(self, error: dict[str, Any]) -> None:
        self._stop_running("the run failed")
        self._end(RunStatus.failed, EventType.workflow_failed, {"error": error}, error=error)

    async def _on_cancel(self) -> None:
        if self.finished.is_set():
            return
        self._stop_running("the run was cancelled")
        self._end(RunStatus.cancelled, EventType.workflow_cancelled, {})

    def _stop_running(self, reason: str) -> None:
        """Cancel what is in flight or waiting, each step with its own event; the run is ending."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._approvals.clear()
        for execution in self._executions.values():
            record = execution.record
            if record is not None and record.status in (StepStatus.running, StepStatus.retrying, StepStatus.waiting):
                record.status = StepStatus.cancelled
                record.finished_at = utcnow()
                self._writer.add_step(record)
                self._emit(EventType.step_cancelled, record.key, {"attempt": record.attempt, "reason": reason})
        if self._running:
            self._running.clear()
            asyncio.get_running_loop().create_task(self._queue.cancel(self.run.run_id))
        if self._budget is not None:
            self._budget.release_all()

    def _end(self, status: RunStatus, event: str, data: dict[str, Any], **fields: Any) -> None:
        run = self.run
        run.status = status
        run.finished_at = utcnow()
        run.usage = dict(self._usage)
        for name, value in fields.items():
            setattr(run, name, value)
        self._writer.add_run(run)
        data["duration_ms"] = round((run.finished_at - run.started_at).total_seconds() * 1000, 3)
        data["usage"] = run.usage
        self._emit(event, None, data)
        self.finished.set()

    # -- records -----------------------------------------------------------------

    def _record(
        self,
        key: str,
        step_id: str,
        item_index: int | None,
        attempt: int,
        status: StepStatus,
        approval: dict[str, Any] | None = None,
    ) -> StepRecord:
        now = utcnow()
        record = StepRecord(
            run_id=self.run.run_id, key=key, step_id=step_id, item_index=item_index, attempt=attempt,
            status=status, started_at=now if status != StepStatus.skipped else None,
            finished_at=now if status in STEP_DONE else None, approval=approval,
        )  # fmt: skip
        self._writer.add_step(record)
        return record

    def _emit(
        self, type_: str, step_id: str | None, data: dict[str, Any], writer: GroupCommitWriter | None = None
    ) -> None:
        """Record an event; after a change of the run's budget, with the run (in the same
        commit) and the budget as the event's ``data.budget``, which every view folds in."""
        self._seq += 1
        writer = writer or self._writer
        if self._budget is not None and self._budget.changed:
            self._budget.changed = False
            self.run.budget = self._budget.record()
            writer.add_run(self.run)
            data = {**data, "budget": self._budget.snapshot()}
        writer.add_event(Event(self._seq, type_, self.run.run_id, step_id, utcnow(), data))

    def _add_usage(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self._usage["prompt_tokens"] += usage.get("prompt_tokens") or 0
        self._usage["completion_tokens"] += usage.get("completion_tokens") or 0
        if usage.get("cost_usd") is not None:
            self._usage["cost_usd"] = (self._usage["cost_usd"] or 0.0) + usage["cost_usd"]


def _usage_of(output: Any) -> dict[str, Any] | None:
    """Tasks report tokens as ``output.usage`` and cost as ``output.cost_usd``."""
    if not isinstance(output, dict) or not isinstance(output.get("usage"), dict):
        return None
    usage = output["usage"]
    return {
        "prompt_tokens": usage.get("prompt_tokens") or 0,
        "completion_tokens": usage.get("completion_tokens") or 0,
        "cost_usd": output.get("cost_usd"),
    }


def _answered_from_cache(job: Job) -> bool:
    return "reply" in (job.resources.get(CACHE_RESOURCE) or {})


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _ms(record: StepRecord) -> float | None:
    return duration_ms(record.started_at, record.finished_at)
