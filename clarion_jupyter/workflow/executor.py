"""RunExecutor: drives one run through its DAG.

Each run is one coroutine that owns the run's state in memory and reacts to messages in
its inbox (job results, retry timers, cancellation), so no locks are needed and the hot
path is a dictionary update plus a few records handed to the group-commit writer. It
never waits for a commit: the writer makes transitions durable before announcing them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Undefined

from ..core.protocol import STEP_DONE, EventType, RunStatus, StepStatus
from ..core.secrets import reread_environment
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
from ..task.base import TaskFailed
from ..task.queue import Job, JobResult, Queue
from .compiler import Node, Plan
from .llm_cache import LLMCache
from .templates import TemplateError, truthy

log = logging.getLogger(__name__)

AgentResolver = Callable[[str], Awaitable[dict[str, Any] | None]]
Previewer = Callable[[Job], Awaitable[dict[str, Any]]]
"""Builds what a person reviews before a step with ``approval:`` runs (raises TaskFailed)."""
_BLOCKING = frozenset({StepStatus.failed, StepStatus.skipped, StepStatus.cancelled})


@dataclass(slots=True)
class _Retry:
    key: str


@dataclass(slots=True)
class _Cancel:
    reason: str = "cancelled"


@dataclass(slots=True)
class _Decision:
    """A person's decision (or a timeout's) on a waiting step, already announced."""

    key: str
    approve: bool
    reason: str
    by: str | None


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
    ) -> None:
        """``reused``: a re-run's nodes taken over from its parent, with the parent's records."""
        self.plan = plan
        self.run = run
        self._writer = writer
        self._queue = queue
        self._agents = agents
        self._preview = preview
        self._cache = cache
        self._max_output_bytes = max_output_bytes
        self._seq = last_seq
        self._inbox: asyncio.Queue[JobResult | _Retry | _Cancel | _Decision] = asyncio.Queue()
        self._status: dict[str, StepStatus] = {node_id: StepStatus.pending for node_id in plan.nodes}
        self._steps_ctx: dict[str, dict[str, Any]] = {}
        self._waiting = {node_id: len(node.waits_for) for node_id, node in plan.nodes.items()}
        self._executions: dict[str, _Execution] = {}
        self._maps: dict[str, _Map] = {}
        self._running: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._approvals: dict[str, _Execution] = {}
        """Executions waiting for a decision, by step key; they hold no worker slot."""
        self._approval_timers: dict[str, asyncio.TimerHandle] = {}
        self._unfinished = len(plan.nodes)
        self._prior = latest_attempts(prior or [])
        self._reused = reused or {}
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

        The decision is announced here, synchronously, so two concurrent decisions cannot
        both be accepted; the run acts on it when it takes the message from its inbox."""
        execution = self._approvals.pop(key, None)
        if execution is None:
            return False
        timer = self._approval_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        reason = f"rejected by {by or 'a reviewer'}" + (f": {comment}" if comment else "")
        # Posted before the event is added, so the run acts on it (its step_started joins the
        # pending batch) before the writer wakes: decision and start then share one commit.
        self._inbox.put_nowait(_Decision(key, approve, reason, by))
        kind = EventType.approval_granted if approve else EventType.approval_rejected
        self._emit(kind, key, {"by": by, "comment": comment})
        return True

    @property
    def waiting_for(self) -> list[str]:
        return list(self._approvals)

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
            elif isinstance(message, _Decision):
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
                reused_from = {"run_id": parent.run_id, "attempt": parent.attempt}
                record = dataclasses.replace(parent, run_id=self.run.run_id, attempt=1, reused_from=reused_from)
                self._writer.add_step(record)
                data = {"attempt": 1, "duration_ms": _ms(record), "output": record.output, "reused_from": reused_from}
                self._emit(EventType.step_completed, record.key, data)
            self._unfinished -= 1
            self._status[node_id] = StepStatus.succeeded
            self._steps_ctx[node_id] = {"output": records[0].output, "status": StepStatus.succeeded.value}
        return self._ready_pending()

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
            config = node.config.render(context)
            _check_storable(config, "with", limit=None)
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
        if not held and not execution.approved and self._asks_approval(node, context):
            return await self._request_approval(execution, job)
        execution.record = self._record(
            execution.key, node.id, execution.item_index, attempt, StepStatus.running, approval=execution.approval
        )
        await self._start(execution, job, send=not held)
        return []

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
            await self._cache.look_up(job, self.run.cache)
            execution.job = job
            await self._queue.put(job)

    # -- approvals -----------------------------------------------------------------

    @staticmethod
    def _asks_approval(node: Node, context: dict[str, Any]) -> bool:
        """A condition that cannot be evaluated asks: when in doubt, a person looks."""
        if node.approval_if is None:
            return False
        try:
            return truthy(node.approval_if.render(context))
        except TemplateError:
            return True

    async def _request_approval(self, execution: _Execution, job: Job) -> list[str]:
        """Build the preview, record the attempt as waiting and ask; no worker slot is taken."""
        node = execution.node
        policy = node.step.approval
        try:
            preview = await self._preview(job)
            _check_storable({"preview": preview}, "approval", self._max_output_bytes)
        except (TaskFailed, TemplateError) as exc:
            execution.record = self._record(
                execution.key, node.id, execution.item_index, job.attempt, StepStatus.failed
            )
            error = _error("preview_failed", f"the approval preview could not be built: {_message(exc)}")
            return self._attempt_failed(execution, error, retryable=False)
        record = self._record(execution.key, node.id, execution.item_index, job.attempt, StepStatus.waiting)
        message = _with_warning(policy.message, preview)
        record.approval = {
            "preview": preview,
            "message": message,
            "requested_at": isoformat(record.started_at),
            "timeout_s": policy.timeout_s,
        }
        execution.record = record
        self._writer.add_step(record)
        self._emit(
            EventType.approval_requested,
            execution.key,
            {"attempt": job.attempt, "preview": preview, "message": message, "timeout_s": policy.timeout_s},
        )
        self._hold(execution, job)
        return []

    def _hold(self, execution: _Execution, job: Job) -> None:
        """Wait for the decision on ``execution`` (asked now, or before a restart)."""
        execution.held = job
        self._approvals[execution.key] = execution
        if execution.item_index is None:
            self._status[execution.node.id] = StepStatus.waiting
        timeout = execution.node.step.approval.timeout_s
        if timeout is not None:
            asked = execution.record.approval["requested_at"]
            left = timeout - (utcnow() - datetime.fromisoformat(asked.replace("Z", "+00:00"))).total_seconds()
            self._approval_timers[execution.key] = asyncio.get_running_loop().call_later(
                max(left, 0.0), self.decide, execution.key, False, "timeout", f"no decision within {timeout:g} s"
            )

    async def _on_decision(self, decision: _Decision) -> None:
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
        if result.kind == "ok":
            await self._cache.remember(execution.job, result.output)  # durable before the step's success
            ready = self._attempt_succeeded(execution, result.output, result.deliveries)
        else:
            ready = self._attempt_failed(execution, result.error or _error("failed", "failed"), result.retryable)
        await self._begin_all(ready)

    def _attempt_succeeded(self, execution: _Execution, output: Any, deliveries: int = 1) -> list[str]:
        try:
            _check_storable({"output": output}, "output", self._max_output_bytes)
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
            outputs = self.plan.outputs.render(self._context)
            _check_storable(outputs, "outputs", self._max_output_bytes)
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
        for timer in [*self._timers.values(), *self._approval_timers.values()]:
            timer.cancel()
        self._timers.clear()
        self._approval_timers.clear()
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
        self._seq += 1
        (writer or self._writer).add_event(Event(self._seq, type_, self.run.run_id, step_id, utcnow(), data))

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


def _with_warning(message: str | None, preview: Any) -> str | None:
    """The message a person deciding sees, led by the preview's warning (e.g. protected paths):
    every client shows the message, not every one knows the preview's fields."""
    warning = preview.get("warning") if isinstance(preview, dict) else None
    if not isinstance(warning, str):
        return message
    return f"⚠ {warning}" + (f"\n\n{message}" if message else "")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _ms(record: StepRecord) -> float | None:
    return duration_ms(record.started_at, record.finished_at)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, TaskFailed) else str(exc)


def _check_storable(value: Any, where: str, limit: int | None) -> None:
    """Every value a run stores must encode as JSON (within ``limit`` bytes when given), checked
    in the step that made it, so a bad value fails that step with a message naming its field
    instead of reaching the group commit, where it would fail a batch of other runs' work."""
    items = value.items() if isinstance(value, dict) else [("", value)]
    for key, item in items:
        name = f"{where}.{key}" if key else where
        try:
            size = len(_ENCODER.encode(item))
        except (TypeError, ValueError, RecursionError) as exc:
            raise TemplateError(f"field '{name}' is not a JSON value: {exc}") from None
        if limit is not None and size > limit:
            raise TemplateError(f"field '{name}' is {size} bytes, more than the limit of {limit} (max_output_bytes)")


def _json_default(value: Any) -> Any:
    """What the store writes besides JSON's own types; anything else (an undefined template
    value, an object) is refused."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Undefined):
        raise TypeError(f"a template gave an undefined value ({value._undefined_message})")
    raise TypeError(f"{type(value).__name__} is not JSON")


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))
"""Built once: ``json.dumps`` with options builds an encoder per call, twice per step."""
