"""The one event fold: ``(run state, event) -> run state``, for every view of a run.

A run's events (``seq`` order, gap-free) are the truth every view shows: the notebook's
widget and ``Run`` handle, the CLI's live progress, and, in TypeScript, the sidebar
(``labextension/src/fold.ts``'s ``reduceRun``). Both folds are tested against the same
golden files (``tests/fixtures/folds/*.json``: an event stream and the state it must
give), so the Python and TypeScript views cannot drift apart.

The state is plain JSON, as it travels: ``run`` is the run document (what
``GET /api/v3/runs/{id}`` returns, one entry per step key, in the order the steps first
appeared), and beside it what a document does not hold but the events do: the streamed LLM
``text`` per step, the ``decisions`` taken on approvals, why steps were skipped
(``reasons``) and how many items a ``for_each`` step maps over (``items``).

A run with a budget announces it on every event that changed it (``data.budget``: the
document's ``budget``, whole), so the fold takes the newest one, whatever the event's type.

:func:`fold` never changes its arguments: it returns a new state sharing what did not
change, or the same state for an event already applied (a replay after a reconnect), so
callers may keep older states and compare by identity.

The statuses follow what the engine stores: an approved step is ``running`` from the
decision on (its ``step_started`` comes in the same commit), a run is ``waiting`` while a
step waits for a person and no step is running or retrying, and a run that fails or is
cancelled stops the steps still in flight (``cancelled``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..core.protocol import EventType, RunStatus, StepStatus

State = dict[str, Any]
"""``{"run": <run document>, "text": {}, "decisions": {}, "reasons": {}, "items": {}}``."""

EXTRAS = ("text", "decisions", "reasons", "items")
_ITEM_KEY = re.compile(r"^(?P<step>.*)\[(?P<index>\d+)\]$")
_TERMINAL = {
    EventType.workflow_succeeded: RunStatus.succeeded,
    EventType.workflow_failed: RunStatus.failed,
    EventType.workflow_cancelled: RunStatus.cancelled,
}
_STOPPED = frozenset({StepStatus.running, StepStatus.retrying, StepStatus.waiting})
"""What a failed or cancelled run stops (the engine marks them ``cancelled``)."""
_ACTIVE = frozenset({StepStatus.running, StepStatus.retrying})


def initial(document: dict[str, Any]) -> State:
    """The state of a run document (JSON, as ``WorkflowRun.model_dump(mode="json")`` gives it)."""
    return {"run": document, **{name: {} for name in EXTRAS}}


def fold(state: State, event: dict[str, Any]) -> State:
    """The state after ``event`` (JSON, as the REST API and the WebSocket send it)."""
    run = state["run"]
    if event.get("run_id") != run["run_id"] or event["seq"] <= run.get("last_seq", 0):
        return state
    run = {**run, "last_seq": event["seq"]}
    next_state = {**state, "run": run}
    data = event.get("data") or {}
    if isinstance(data.get("budget"), dict):
        run["budget"] = data["budget"]
    try:
        kind = EventType(event["type"])
    except ValueError:
        return next_state  # a type this version does not know: its seq counts, nothing else
    key = event.get("step_id")
    if key is None:
        _run_event(run, kind, event["ts"], data)
    else:
        _step_event(next_state, kind, key, event["ts"], data)
        if not RunStatus(run["status"]).terminal:
            run["status"] = _live_status(run)
    return next_state


def _run_event(run: dict[str, Any], kind: EventType, ts: str, data: dict[str, Any]) -> None:
    if kind == EventType.run_queued:
        run["status"] = RunStatus.queued.value
        run["created_at"] = run.get("created_at") or ts
        for name in ("workflow_id", "inputs"):
            if name in data:
                run[name] = data[name]
    elif kind == EventType.run_started:
        run["status"] = RunStatus.running.value
        run["started_at"] = run.get("started_at") or ts
    elif kind in _TERMINAL:
        status = _TERMINAL[kind]
        run["status"], run["finished_at"], run["approvals"] = status.value, ts, []
        for name in ("outputs", "error", "usage"):
            if data.get(name) is not None:
                run[name] = data[name]
        if status != RunStatus.succeeded:
            run["steps"] = [
                {**s, "status": StepStatus.cancelled.value, "finished_at": ts,
                 "duration_ms": _between(s.get("started_at"), ts)}
                if s["status"] in _STOPPED else s
                for s in run.get("steps", [])
            ]  # fmt: skip


def _step_event(state: State, kind: EventType, key: str, ts: str, data: dict[str, Any]) -> None:
    run = state["run"]
    if kind == EventType.llm_token:
        state["text"] = {**state["text"], key: state["text"].get(key, "") + str(data.get("text", ""))}
        return
    if kind == EventType.step_started:
        change: dict[str, Any] = {
            "status": StepStatus.running.value, "attempt": data.get("attempt", 1), "started_at": ts,
            "finished_at": None, "duration_ms": None, "error": None,
        }  # fmt: skip
        if "items" in data:
            state["items"] = {**state["items"], key: data["items"]}
        state["text"] = {k: v for k, v in state["text"].items() if k != key}
    elif kind == EventType.step_retrying:
        change = {"status": StepStatus.retrying.value, "error": data.get("error"), "finished_at": ts}
    elif kind == EventType.step_completed:
        change = {"status": StepStatus.succeeded.value, "output": data.get("output"), "finished_at": ts}
        if data.get("reused_from"):  # a re-run copied it from its parent: no task was called
            change["reused_from"] = data["reused_from"]
        if data.get("usage"):
            change["usage"] = data["usage"]
            run["usage"] = _add_usage(run.get("usage"), data["usage"])
    elif kind == EventType.step_failed:
        change = {"status": StepStatus.failed.value, "error": data.get("error"), "finished_at": ts}
    elif kind == EventType.step_cancelled:
        change = {"status": StepStatus.cancelled.value, "finished_at": ts}
    elif kind == EventType.step_skipped:
        change = {"status": StepStatus.skipped.value, "finished_at": ts}
        if data.get("reason"):
            state["reasons"] = {**state["reasons"], key: data["reason"]}
    elif kind == EventType.approval_requested:
        change = {"status": StepStatus.waiting.value, "started_at": ts, "finished_at": None}
        approval = {"step_key": key, "preview": data.get("preview"), "message": data.get("message"),
                    "requested_at": ts, "timeout_s": data.get("timeout_s")}  # fmt: skip
        run["approvals"] = [*(a for a in run.get("approvals", []) if a["step_key"] != key), approval]
    elif kind in (EventType.approval_granted, EventType.approval_rejected):
        granted = kind == EventType.approval_granted
        run["approvals"] = [a for a in run.get("approvals", []) if a["step_key"] != key]
        decision = {"decision": "approved" if granted else "rejected", "by": data.get("by"),
                    "comment": data.get("comment")}  # fmt: skip
        state["decisions"] = {**state["decisions"], key: decision}
        # Approved, the stored step is running from the decision on; rejected, the step's
        # end (skipped or failed) follows in the same commit.
        change = {"status": StepStatus.running.value, "started_at": ts} if granted else {}
    else:
        return
    if "attempt" in data and kind != EventType.step_started:
        change["attempt"] = data["attempt"]
    if "item_index" in data:
        change["item_index"] = data["item_index"]
    _change_step(run, key, change, data)


def _change_step(run: dict[str, Any], key: str, change: dict[str, Any], data: dict[str, Any]) -> None:
    steps = list(run.get("steps", []))
    index = next((i for i, s in enumerate(steps) if s["key"] == key), None)
    step = {**(_empty_step(key) if index is None else steps[index]), **change}
    if change.get("finished_at") is not None:
        given = data.get("duration_ms")
        step["duration_ms"] = given if given is not None else _between(step.get("started_at"), change["finished_at"])
    if index is None:
        steps.append(step)
    else:
        steps[index] = step
    run["steps"] = steps


def _empty_step(key: str) -> dict[str, Any]:
    match = _ITEM_KEY.match(key)
    return {
        "key": key, "step_id": match["step"] if match else key, "item_index": int(match["index"]) if match else None,
        "attempt": 0, "status": StepStatus.pending.value, "started_at": None, "finished_at": None,
        "duration_ms": None, "output": None, "error": None, "usage": None,
    }  # fmt: skip


def _live_status(run: dict[str, Any]) -> str:
    """``waiting`` while a step waits for a person and none runs (a ``for_each`` step is not
    itself running: its items are); else ``running`` once any step began."""
    steps = run.get("steps", [])
    if not run.get("approvals"):
        return RunStatus.running.value if steps else run["status"]
    parents = {s["step_id"] for s in steps if s.get("item_index") is not None}
    active = any(s["status"] in _ACTIVE and s["key"] not in parents for s in steps)
    return RunStatus.running.value if active else RunStatus.waiting.value


def _add_usage(total: dict[str, Any] | None, usage: dict[str, Any]) -> dict[str, Any]:
    total = total or {}
    cost = total.get("cost_usd")
    if usage.get("cost_usd") is not None:
        cost = (cost or 0.0) + usage["cost_usd"]
    return {
        "prompt_tokens": (total.get("prompt_tokens") or 0) + (usage.get("prompt_tokens") or 0),
        "completion_tokens": (total.get("completion_tokens") or 0) + (usage.get("completion_tokens") or 0),
        "cost_usd": cost,
    }


def _between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(max(0.0, delta.total_seconds() * 1000), 3)
