"""What a run view shows, folded from the run's events, and its static renderings.

:class:`RunState` is plain data: the widget, the ``Run`` handle's ``_repr_html_`` and its
text form all render it, so a terminal, nbconvert, GitHub's viewer and a saved notebook
show the same information as the live widget. Events are applied in ``seq`` order and an
event already applied is ignored, so catching up after a reconnect (replaying from an
earlier ``since``) never counts anything twice.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..core.protocol import EventType, RunStatus, StepStatus
from ..storage.records import Event, utcnow
from ..workflow.models import Workflow, WorkflowRun

ROW_LIMIT = 200
"""Rows rendered at most (per run and per map); the rest are counted by status."""
TEXT_LIMIT = 4000
"""Characters of a step's output or streamed text rendered at most."""
ICONS = {
    StepStatus.pending: "○", StepStatus.waiting: "⏸", StepStatus.running: "◔", StepStatus.retrying: "↻",
    StepStatus.succeeded: "✓", StepStatus.failed: "✗", StepStatus.skipped: "↷", StepStatus.cancelled: "⊘",
}  # fmt: skip
COLORS = {
    "pending": "#888", "queued": "#888", "waiting": "#d08700", "running": "#1a73e8", "retrying": "#d08700",
    "succeeded": "#1e8e3e", "failed": "#d93025", "skipped": "#888", "cancelled": "#888",
}  # fmt: skip


@dataclass(slots=True)
class StepRow:
    key: str
    step_id: str
    status: StepStatus = StepStatus.pending
    task: str | None = None
    group: int | None = None
    """Index of the parallel group the step belongs to (None: not in one)."""
    item_index: int | None = None
    items: int | None = None
    """For a ``for_each`` step: how many items it maps over."""
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    text: str = ""
    """LLM text streamed so far (``llm_token`` events)."""
    preview: Any = None
    message: str | None = None
    decision: str | None = None

    @property
    def tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


@dataclass(slots=True)
class RunState:
    run_id: str
    workflow_id: str = ""
    workflow_name: str = ""
    status: RunStatus = RunStatus.queued
    where: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    last_seq: int = 0
    steps: dict[str, StepRow] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    """``for_each`` items' keys by their step's id."""

    # -- building ------------------------------------------------------------------

    @classmethod
    def for_workflow(cls, run_id: str, workflow: Workflow, where: str = "") -> RunState:
        """A state with a pending row per step, in the document's order (groups marked)."""
        state = cls(run_id, workflow.id, workflow.name, where=where)
        for index, entry in enumerate(workflow.to_document().get("steps", [])):
            members = entry.get("parallel") if isinstance(entry, dict) else None
            for step in members if isinstance(members, list) else [entry]:
                row = state.row(step["id"], step["id"])
                row.task = step.get("task")
                row.group = index if members else None
        return state

    def row(self, key: str, step_id: str | None = None, item_index: int | None = None) -> StepRow:
        found = self.steps.get(key)
        if found is None:
            base = step_id or key.split("[", 1)[0]
            found = self.steps[key] = StepRow(key, base, item_index=item_index)
            if item_index is not None or key != base:
                self.children.setdefault(base, []).append(key)
                parent = self.steps.get(base)
                found.task = parent.task if parent else None
        return found

    def load(self, run: WorkflowRun) -> None:
        """Take the state a run document shows (for a run already under way or finished)."""
        self.workflow_id, self.workflow_name, self.status = run.workflow_id, run.workflow_name, run.status
        self.created_at, self.started_at, self.finished_at = run.created_at, run.started_at, run.finished_at
        self.outputs, self.error, self.last_seq = run.outputs, run.error, max(self.last_seq, run.last_seq)
        for step in run.steps:
            row = self.row(step.key, step.step_id, step.item_index)
            row.status, row.attempt, row.output, row.error = step.status, step.attempt, step.output, step.error
            row.started_at, row.finished_at, row.duration_ms = step.started_at, step.finished_at, step.duration_ms
            if step.usage is not None:
                row.prompt_tokens, row.completion_tokens = step.usage.prompt_tokens, step.usage.completion_tokens
                row.cost_usd = step.usage.cost_usd
        for approval in run.approvals:
            row = self.row(approval.step_key)
            row.status, row.preview, row.message = StepStatus.waiting, approval.preview, approval.message

    def apply(self, event: Event) -> bool:
        """Fold one event in; False when it was applied before (a replay after a reconnect)."""
        if event.seq <= self.last_seq:
            return False
        self.last_seq = event.seq
        data = event.data or {}
        try:
            kind = EventType(event.type)
        except ValueError:
            return True  # a type this version does not know: counted, not shown
        if event.step_id is None:
            self._apply_run(kind, event.ts, data)
        else:
            self._apply_step(kind, self.row(event.step_id, item_index=data.get("item_index")), event.ts, data)
        return True

    def _apply_run(self, kind: EventType, ts: datetime, data: dict[str, Any]) -> None:
        if kind == EventType.run_queued:
            self.created_at = self.created_at or ts
        elif kind == EventType.run_started:
            self.status, self.started_at = RunStatus.running, self.started_at or ts
        elif kind.terminal:
            self.status = {EventType.workflow_succeeded: RunStatus.succeeded, EventType.workflow_failed: RunStatus.failed,
                           EventType.workflow_cancelled: RunStatus.cancelled}[kind]  # fmt: skip
            self.finished_at, self.outputs, self.error = ts, data.get("outputs"), data.get("error")
            for row in self.steps.values():
                if not row.status.terminal and self.status == RunStatus.cancelled:
                    row.status = StepStatus.cancelled

    def _apply_step(self, kind: EventType, row: StepRow, ts: datetime, data: dict[str, Any]) -> None:
        if kind == EventType.step_started:
            row.status, row.started_at, row.finished_at = StepStatus.running, ts, None
            row.attempt = data.get("attempt", row.attempt + 1)
            row.task = data.get("task", row.task)
            row.items = data.get("items", row.items)
            row.error = None
            if self.status in (RunStatus.queued, RunStatus.waiting):
                self.status = RunStatus.running
        elif kind == EventType.step_retrying:
            row.status, row.error = StepStatus.retrying, data.get("error")
        elif kind in (EventType.step_completed, EventType.step_failed, EventType.step_skipped):
            row.status = {EventType.step_completed: StepStatus.succeeded, EventType.step_failed: StepStatus.failed,
                          EventType.step_skipped: StepStatus.skipped}[kind]  # fmt: skip
            row.finished_at, row.duration_ms = ts, data.get("duration_ms", row.duration_ms)
            row.output, row.error, row.reason = data.get("output", row.output), data.get("error"), data.get("reason")
            usage = data.get("usage") or {}
            if usage:
                row.prompt_tokens, row.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
                row.cost_usd = usage.get("cost_usd")
            row.preview = None
        elif kind == EventType.llm_token:
            row.text += str(data.get("text", ""))
        elif kind == EventType.approval_requested:
            row.status, row.preview, row.message = StepStatus.waiting, data.get("preview"), data.get("message")
            if not any(r.status == StepStatus.running for r in self.steps.values()):
                self.status = RunStatus.waiting
        elif kind in (EventType.approval_granted, EventType.approval_rejected):
            row.decision = (
                ("approved" if kind == EventType.approval_granted else "rejected")
                + (f" by {data['by']}" if data.get("by") else "")
                + (f": {data['comment']}" if data.get("comment") else "")
            )
            row.preview = None
            if row.status == StepStatus.waiting:
                row.status = StepStatus.pending
            if self.status == RunStatus.waiting:
                self.status = RunStatus.running

    # -- reading -------------------------------------------------------------------

    @property
    def waiting(self) -> list[StepRow]:
        return [row for row in self.steps.values() if row.status == StepStatus.waiting]

    def elapsed_s(self, now: datetime | None = None) -> float | None:
        start = self.started_at or self.created_at
        if start is None:
            return None
        end = self.finished_at or (None if self.status.terminal else now or utcnow())
        return None if end is None else max(0.0, (end - start).total_seconds())

    def top_rows(self) -> list[StepRow]:
        """Rows of steps (``for_each`` items are under their step)."""
        return [row for row in self.steps.values() if row.item_index is None and "[" not in row.key]

    def counts(self, rows: list[StepRow]) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in rows:
            found[row.status.value] = found.get(row.status.value, 0) + 1
        return found

    # -- rendering -------------------------------------------------------------------

    def header_html(self, now: datetime | None = None) -> str:
        elapsed = self.elapsed_s(now)
        parts = [
            f"<b>{_e(self.workflow_name or self.workflow_id or 'run')}</b>",
            f"<code>{_e(self.run_id)}</code>",
            _badge(self.status.value),
            f"<span data-role='elapsed'>{_seconds(elapsed)}</span>" if elapsed is not None else "",
            f"<span style='opacity:.7'>on {_e(self.where)}</span>" if self.where else "",
        ]
        return f"<div class='clarion-run-header' data-status='{self.status.value}'>{' · '.join(p for p in parts if p)}</div>"

    def steps_html(self) -> str:
        rows = self.top_rows()
        shown = rows[:ROW_LIMIT]
        body = "".join(self._row_html(row, self._previous_group(rows, i)) for i, row in enumerate(shown))
        if len(rows) > len(shown):
            body += _more(self.counts(rows[len(shown) :]))
        return f"<div class='clarion-steps' style='font-family:var(--jp-code-font-family,monospace);font-size:12px'>{body}</div>"

    @staticmethod
    def _previous_group(rows: list[StepRow], index: int) -> int | None:
        return rows[index - 1].group if index else None

    def _row_html(self, row: StepRow, previous_group: int | None) -> str:
        children = [self.steps[k] for k in self.children.get(row.key, []) if k != row.key]
        label = ""
        if row.group is not None and row.group != previous_group:
            label = "<div style='opacity:.6;margin-top:2px'>parallel</div>"
        indent = "border-left:2px solid var(--jp-border-color2,#ccc);padding-left:6px;" if row.group is not None else ""
        details = self._details_html(row)
        if children:
            counts = self.counts(children)
            total = row.items if row.items is not None else len(children)
            done = sum(v for k, v in counts.items() if StepStatus(k).terminal)
            summary_extra = f" · {done}/{total} items" + "".join(
                f" · {n} {k}" for k, n in sorted(counts.items()) if k != StepStatus.succeeded.value
            )
            items = "".join(self._row_html(child, None) for child in children[:ROW_LIMIT])
            if len(children) > ROW_LIMIT:
                items += _more(self.counts(children[ROW_LIMIT:]))
            details += f"<div style='padding-left:12px'>{items}</div>"
        else:
            summary_extra = ""
        opened = " open" if row.text and row.status == StepStatus.running else ""
        return (
            f"{label}<details class='clarion-step' data-key='{_e(row.key)}' data-status='{row.status.value}'"
            f" style='{indent}'{opened}><summary>{_row_summary(row)}{summary_extra}</summary>{details}</details>"
        )

    @staticmethod
    def _details_html(row: StepRow) -> str:
        parts = []
        if row.text:
            parts.append(_pre(row.text, "streamed"))
        if row.error:
            parts.append(_pre(row.error.get("message", row.error), "error", COLORS["failed"]))
        if row.reason:
            parts.append(f"<div style='opacity:.7'>{_e(row.reason)}</div>")
        if row.output is not None:
            parts.append(_pre(row.output, "output"))
        if row.decision:
            parts.append(f"<div style='opacity:.7'>{_e(row.decision)}</div>")
        return "".join(parts) or "<div style='opacity:.6'>no output yet</div>"

    def result_html(self) -> str:
        if self.status == RunStatus.succeeded and self.outputs:
            return f"<div class='clarion-outputs'><b>outputs</b>{_pre(self.outputs, 'outputs')}</div>"
        if self.error:
            return f"<div class='clarion-error'>{_pre(self.error.get('message', self.error), 'error', COLORS['failed'])}</div>"
        return ""

    def to_html(self) -> str:
        """The whole view as static HTML (the widget's fallback and a saved notebook's final state)."""
        return f"<div class='clarion-run'>{self.header_html()}{self.steps_html()}{self.result_html()}</div>"

    def to_text(self) -> str:
        elapsed = self.elapsed_s()
        lines = [
            f"run {self.run_id}: {self.workflow_name or self.workflow_id} — {self.status.value}"
            + (f" in {_seconds(elapsed)}" if elapsed is not None and self.status.terminal else "")
        ]
        for row in self.steps.values():
            lines.append(f"  {ICONS[row.status]} {row.key:<24} {row.status.value:<10} {_duration(row)}".rstrip())
        if self.outputs:
            lines.append(f"  outputs: {json.dumps(self.outputs, default=str)[:TEXT_LIMIT]}")
        if self.error:
            lines.append(f"  error: {self.error.get('message', self.error)}")
        return "\n".join(lines)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: str) -> str:
    color = COLORS.get(status, "#888")
    return (
        f"<span class='clarion-badge' data-status='{status}' style='background:{color};color:#fff;"
        f"border-radius:8px;padding:0 6px'>{status}</span>"
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _duration(row: StepRow) -> str:
    return "" if row.duration_ms is None else _seconds(row.duration_ms / 1000)


def _row_summary(row: StepRow) -> str:
    color = COLORS[row.status.value]
    bits = [_duration(row)]
    if row.attempt > 1:
        bits.append(f"attempt {row.attempt}")
    if row.tokens is not None:
        bits.append(f"{row.tokens} tokens")
    if row.cost_usd is not None:
        bits.append(f"${row.cost_usd:.4f}")
    meta = " · ".join(b for b in bits if b)
    return (
        f"<span style='color:{color}'>{ICONS[row.status]}</span> <b>{_e(row.key)}</b>"
        f" <span style='color:{color}'>{row.status.value}</span>"
        + (f" <span style='opacity:.6'>{_e(row.task)}</span>" if row.task else "")
        + (f" <span style='opacity:.8'>· {meta}</span>" if meta else "")
    )


def _pre(value: Any, role: str, color: str | None = None) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f"\n… ({len(text) - TEXT_LIMIT} more characters)"
    style = "margin:2px 0;white-space:pre-wrap;max-height:20em;overflow:auto" + (f";color:{color}" if color else "")
    return f"<pre data-role='{role}' style='{style}'>{_e(text)}</pre>"


def _more(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"<div class='clarion-more' style='opacity:.7'>… and {total} more ({detail})</div>"
