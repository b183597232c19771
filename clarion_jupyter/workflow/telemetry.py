"""Telemetry: Prometheus metrics and OpenTelemetry spans of runs and steps.

Both are derived from the committed event stream, the one record of what happened, so they
never disagree with the run history and the executor's hot path knows nothing of them.

Metrics live in prometheus-client's default registry, which Jupyter's own ``/metrics``
endpoint serves (behind its auth), beside the server's metrics. Spans go to whatever tracer
provider the host configured (OpenTelemetry's API is a no-op until an SDK is set up): one
span per run, with a child span per step attempt, timed from the events' timestamps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from prometheus_client import Counter, Gauge, Histogram

from ..core.protocol import EventType
from ..storage.records import Event

RUNS = Counter("clarion_runs", "Runs that ended, by workflow and final status.", ["workflow_id", "status"])
RUN_SECONDS = Histogram(
    "clarion_run_duration_seconds",
    "Wall time of finished runs, from start to end (waits for approval included).",
    ["workflow_id"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
RUNS_ACTIVE = Gauge("clarion_runs_active", "Runs queued, running or waiting in this engine.")
STEPS = Counter("clarion_steps", "Step attempts that ended, by task type and status.", ["task", "status"])
STEP_SECONDS = Histogram(
    "clarion_step_duration_seconds",
    "Duration of step attempts, by task type.",
    ["task"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
RETRIES = Counter("clarion_step_retries", "Step attempts that failed and will be tried again.", ["task"])
APPROVALS_WAITING = Gauge("clarion_approvals_waiting", "Steps waiting for a person's decision.")
LLM_TOKENS = Counter("clarion_llm_tokens", "Tokens of LLM steps, by kind.", ["kind"])
LLM_COST = Counter("clarion_llm_cost_usd", "Cost of LLM steps, where litellm could price the model.")
QUEUE_UP = Gauge(
    "clarion_queue_up", "1 while the engine's queue reaches its broker (the local queue always does), else 0."
)
QUEUE_DROPPED = Gauge(
    "clarion_queue_dropped_messages",
    "Broker messages the engine's queue dropped since it started (unsigned, badly signed, replayed, ...), by reason.",
    ["reason"],
)

_RUN_END = {
    EventType.workflow_succeeded: "succeeded",
    EventType.workflow_failed: "failed",
    EventType.workflow_cancelled: "cancelled",
}
_STEP_END = {
    EventType.step_completed: "succeeded",
    EventType.step_failed: "failed",
    EventType.step_cancelled: "cancelled",
}


@dataclass(slots=True)
class _Run:
    workflow_id: str
    span: Span
    steps: dict[str, tuple[str, Span]] = field(default_factory=dict)
    """Running step attempts, by step key: their task type and span."""


class Telemetry:
    """Turns each committed event into metric updates and span starts or ends."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self._tracer = tracer or trace.get_tracer("clarion_jupyter")
        self._runs: dict[str, _Run] = {}
        self._waiting: set[tuple[str, str | None]] = set()

    def observe(self, events: list[Event]) -> None:
        for event in events:
            run = self._runs.get(event.run_id)
            if event.type in (EventType.run_queued, EventType.run_started):
                if run is None:
                    self._begin(event)
            elif run is None:
                continue  # a run this engine never began (imported history)
            elif event.type == EventType.step_started:
                self._step_started(run, event)
            elif event.type in _STEP_END or event.type == EventType.step_retrying:
                self._step_ended(run, event)
            elif event.type == EventType.approval_requested:
                self._waiting.add((event.run_id, event.step_id))
                APPROVALS_WAITING.set(len(self._waiting))
                run.span.add_event("approval_requested", {"step": event.step_id or ""}, _ns(event.ts))
            elif event.type in (EventType.approval_granted, EventType.approval_rejected):
                self._waiting.discard((event.run_id, event.step_id))
                APPROVALS_WAITING.set(len(self._waiting))
                run.span.add_event(event.type, {"step": event.step_id or ""}, _ns(event.ts))
            elif event.type in _RUN_END:
                self._end(run, event)

    @staticmethod
    def watch_queue(health: Callable[[], dict[str, Any]], reasons: tuple[str, ...]) -> None:
        """The queue metrics, read from the queue's health when scraped (so never stale)."""
        QUEUE_UP.set_function(lambda: 1.0 if health().get("up", True) else 0.0)
        for reason in reasons:
            QUEUE_DROPPED.labels(reason=reason).set_function(
                lambda reason=reason: health().get("dropped", {}).get(reason, 0)
            )

    def close(self) -> None:
        """End the spans of runs still in flight (they resume, in a new span, at the next start)."""
        for run in self._runs.values():
            for _, span in run.steps.values():
                span.end()
            run.span.end()
        self._runs.clear()
        RUNS_ACTIVE.set(0)

    def _begin(self, event: Event) -> None:
        workflow_id = str(event.data.get("workflow_id", ""))
        span = self._tracer.start_span(
            f"clarion.run {workflow_id}",
            attributes={"clarion.run_id": event.run_id, "clarion.workflow_id": workflow_id},
            start_time=_ns(event.ts),
        )
        self._runs[event.run_id] = _Run(workflow_id, span)
        RUNS_ACTIVE.set(len(self._runs))

    def _step_started(self, run: _Run, event: Event) -> None:
        key = event.step_id or ""
        task = str(event.data.get("task", ""))
        if not run.span.is_recording():
            # No tracing set up, or the run not sampled: its steps' spans would not be recorded
            # either, and the run's own non-recording span serves them (its calls do nothing).
            run.steps[key] = (task, run.span)
            return
        span = self._tracer.start_span(
            f"clarion.step {key}",
            context=trace.set_span_in_context(run.span),
            attributes={"clarion.step": key, "clarion.task": task, "clarion.attempt": event.data.get("attempt", 1)},
            start_time=_ns(event.ts),
        )
        run.steps[key] = (task, span)

    def _step_ended(self, run: _Run, event: Event) -> None:
        started = run.steps.pop(event.step_id or "", None)
        if started is None:
            return  # a for_each parent's own end, or a step that never started here
        task, span = started
        duration = event.data.get("duration_ms")
        if event.type == EventType.step_retrying:
            _labelled(RETRIES, task).inc()
        else:
            _labelled(STEPS, task, _STEP_END[event.type]).inc()
            if duration is not None:
                _labelled(STEP_SECONDS, task).observe(duration / 1000)
            _count_usage(event.data.get("usage"))
        error = event.data.get("error")
        if error or event.type == EventType.step_retrying:
            message = (error or {}).get("message", "") if isinstance(error, dict) else str(error)
            span.set_status(Status(StatusCode.ERROR, message))
        span.end(_ns(event.ts))

    def _end(self, run: _Run, event: Event) -> None:
        del self._runs[event.run_id]
        RUNS_ACTIVE.set(len(self._runs))
        self._waiting = {waiting for waiting in self._waiting if waiting[0] != event.run_id}
        APPROVALS_WAITING.set(len(self._waiting))
        status = _RUN_END[event.type]
        RUNS.labels(run.workflow_id, status).inc()
        if event.data.get("duration_ms") is not None:
            RUN_SECONDS.labels(run.workflow_id).observe(event.data["duration_ms"] / 1000)
        for _, span in run.steps.values():
            span.end(_ns(event.ts))
        if status == "failed":
            error = event.data.get("error")
            run.span.set_status(Status(StatusCode.ERROR, error.get("message", "") if isinstance(error, dict) else ""))
        run.span.set_attribute("clarion.status", status)
        run.span.end(_ns(event.ts))


@functools.cache
def _labelled(metric: Any, *values: str) -> Any:
    """The metric's child for these label values, found once: ``labels`` takes a lock and checks
    the values on every call, several times per step. The registry keeps every child anyway."""
    return metric.labels(*values)


def _count_usage(usage: object) -> None:
    if not isinstance(usage, dict):
        return
    for kind in ("prompt_tokens", "completion_tokens"):
        if usage.get(kind):
            _labelled(LLM_TOKENS, kind.removesuffix("_tokens")).inc(usage[kind])
    if usage.get("cost_usd"):
        LLM_COST.inc(usage["cost_usd"])


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000_000)
