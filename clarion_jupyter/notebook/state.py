"""What a run view shows, folded from the run's events, and its static renderings.

:class:`RunState` holds the state of :func:`~clarion_jupyter.workflow.fold.fold` (the one
fold the sidebar's reducer is tested against too) and the workflow's layout (step order,
parallel groups, task names: from the document the cell ran, or the run's snapshot). The
widget, the ``Run`` handle's ``_repr_html_`` and its text form all render it, so a terminal,
nbconvert, GitHub's viewer and a saved notebook show what the live widget showed. Every
piece of HTML is built with :mod:`.markup`: what a run holds is text, never markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.protocol import RunStatus, StepStatus
from ..llm.cache import is_cached
from ..storage.records import Event, utcnow
from ..workflow.budget import describe
from ..workflow.fold import State, fold, initial
from ..workflow.models import Workflow, WorkflowRun
from .markup import Markup, join, style, tag

ROW_LIMIT = 200
"""Rows rendered at most (per run and per map); the rest are counted by status."""
TEXT_LIMIT = 4000
"""Characters of a step's output or streamed text rendered at most."""
ICONS = {
    StepStatus.pending: "○", StepStatus.waiting: "‖", StepStatus.running: "●", StepStatus.retrying: "↻",
    StepStatus.succeeded: "✓", StepStatus.failed: "✗", StepStatus.skipped: "→", StepStatus.cancelled: "×",
}  # fmt: skip
"""Glyphs that every monospace font has (Chromium draws a missing one as an empty box)."""
COLORS = {
    "pending": "#888", "queued": "#888", "waiting": "#d08700", "running": "#1a73e8", "retrying": "#d08700",
    "succeeded": "#1e8e3e", "failed": "#d93025", "skipped": "#888", "cancelled": "#888",
}  # fmt: skip


@dataclass(slots=True)
class StepRow:
    """One step (or ``for_each`` item) as the views show it."""

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

    def duration_s(self, now: datetime | None = None) -> float | None:
        """Its duration; for a step still running, the time since it started (it ticks)."""
        if self.duration_ms is not None and self.status.terminal:
            return self.duration_ms / 1000
        if self.started_at is not None and self.status in (StepStatus.running, StepStatus.retrying):
            return max(0.0, ((now or utcnow()) - self.started_at).total_seconds())
        return None if self.duration_ms is None else self.duration_ms / 1000


@dataclass(frozen=True, slots=True)
class Slot:
    """A step of the workflow's document: its place, task and parallel group."""

    key: str
    task: str | None
    group: int | None


def layout(document: dict[str, Any] | None) -> list[Slot]:
    """The steps of a workflow document in its order, members of a ``parallel`` group marked."""
    slots: list[Slot] = []
    for index, entry in enumerate((document or {}).get("steps") or []):
        members = entry.get("parallel") if isinstance(entry, dict) else None
        for step in members if isinstance(members, list) else [entry]:
            if isinstance(step, dict) and isinstance(step.get("id"), str):
                slots.append(Slot(step["id"], step.get("task"), index if isinstance(members, list) else None))
    return slots


class RunState:
    """The fold's state of one run plus the workflow's layout, and every rendering of them."""

    def __init__(self, run_id: str, workflow_id: str = "", workflow_name: str = "", where: str = "") -> None:
        self.run_id = run_id
        self.where = where
        self.slots: list[Slot] = []
        self.fold: State = initial({
            "run_id": run_id, "workflow_id": workflow_id, "workflow_name": workflow_name,
            "status": RunStatus.queued.value, "inputs": {}, "outputs": None, "error": None,
            "created_at": None, "started_at": None, "finished_at": None,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None},
            "last_seq": 0, "steps": [], "approvals": [],
        })  # fmt: skip
        self._rows: tuple[int, dict[str, StepRow]] | None = None

    # -- building ------------------------------------------------------------------

    @classmethod
    def for_workflow(cls, run_id: str, workflow: Workflow, where: str = "") -> RunState:
        """A state with a pending row per step, in the document's order (groups marked)."""
        state = cls(run_id, workflow.id, workflow.name, where=where)
        state.slots = layout(workflow.to_document())
        return state

    def load(self, run: WorkflowRun) -> None:
        """Take the state a run document shows (for a run already under way or finished),
        and the layout of the workflow it ran, when the cell did not give one."""
        if not self.slots:
            self.slots = layout(run.workflow)
        if run.last_seq >= self.last_seq:
            self.fold = {**self.fold, "run": run.model_dump(mode="json", exclude={"workflow"})}
            self._rows = None

    def apply(self, event: Event) -> bool:
        """Fold one event in; False when it was applied before (a replay after a reconnect)."""
        before = self.fold
        self.fold = fold(before, event.as_dict())
        if self.fold is before:
            return False
        self._rows = None
        return True

    # -- reading -------------------------------------------------------------------

    @property
    def run(self) -> dict[str, Any]:
        return self.fold["run"]

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.run["status"])

    @property
    def last_seq(self) -> int:
        return int(self.run.get("last_seq") or 0)

    @property
    def workflow_id(self) -> str:
        return str(self.run.get("workflow_id") or "")

    @property
    def workflow_name(self) -> str:
        return str(self.run.get("workflow_name") or "")

    @property
    def outputs(self) -> dict[str, Any] | None:
        return self.run.get("outputs")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.run.get("error")

    @property
    def budget(self) -> dict[str, Any] | None:
        """The run's budget as the events last told it (None: the run has none)."""
        return self.run.get("budget")

    def document(self) -> WorkflowRun | None:
        """The run document the events gave (None before its ``run_queued`` was seen)."""
        if not self.run.get("created_at"):
            return None
        return WorkflowRun.model_validate(self.run)

    @property
    def steps(self) -> dict[str, StepRow]:
        """Every row by key: the workflow's steps in order, then what only the events named."""
        if self._rows is None or self._rows[0] != self.last_seq:
            self._rows = (self.last_seq, self._build_rows())
        return self._rows[1]

    def _build_rows(self) -> dict[str, StepRow]:
        extras = self.fold
        rows = {slot.key: StepRow(slot.key, slot.key, task=slot.task, group=slot.group) for slot in self.slots}
        approvals = {a["step_key"]: a for a in self.run.get("approvals") or []}
        for step in self.run.get("steps") or []:
            key = step["key"]
            row = rows.get(key)
            if row is None:
                parent = rows.get(step["step_id"])
                row = rows[key] = StepRow(key, step["step_id"], task=parent.task if parent else None)
            usage = step.get("usage") or {}
            row.status, row.attempt, row.item_index = StepStatus(step["status"]), step["attempt"], step["item_index"]
            row.started_at, row.finished_at = _time(step.get("started_at")), _time(step.get("finished_at"))
            row.duration_ms, row.output, row.error = step.get("duration_ms"), step.get("output"), step.get("error")
            if usage:
                row.prompt_tokens, row.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
                row.cost_usd = usage.get("cost_usd")
        for key, row in rows.items():
            row.text = extras["text"].get(key, "")
            row.reason = extras["reasons"].get(key)
            row.items = extras["items"].get(key)
            decision = extras["decisions"].get(key)
            if decision:
                row.decision = (
                    decision["decision"]
                    + (f" by {decision['by']}" if decision.get("by") else "")
                    + (f": {decision['comment']}" if decision.get("comment") else "")
                )
            if key in approvals:
                row.preview, row.message = approvals[key].get("preview"), approvals[key].get("message")
        return rows

    @property
    def waiting(self) -> list[StepRow]:
        return [row for row in self.steps.values() if row.status == StepStatus.waiting]

    def children(self, row: StepRow) -> list[StepRow]:
        """A ``for_each`` step's items."""
        return [r for r in self.steps.values() if r.step_id == row.key and r.item_index is not None]

    def elapsed_s(self, now: datetime | None = None) -> float | None:
        start = _time(self.run.get("started_at")) or _time(self.run.get("created_at"))
        if start is None:
            return None
        end = _time(self.run.get("finished_at")) or (None if self.status.terminal else now or utcnow())
        return None if end is None else max(0.0, (end - start).total_seconds())

    def top_rows(self) -> list[StepRow]:
        """Rows of steps (``for_each`` items are under their step)."""
        return [row for row in self.steps.values() if row.item_index is None]

    @staticmethod
    def counts(rows: list[StepRow]) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in rows:
            found[row.status.value] = found.get(row.status.value, 0) + 1
        return found

    # -- rendering -------------------------------------------------------------------

    def header_html(self, now: datetime | None = None) -> Markup:
        elapsed = self.elapsed_s(now)
        parts = [
            tag("b", self.workflow_name or self.workflow_id or "run"),
            tag("code", self.run_id),
            _badge(self.status.value),
            tag("span", _seconds(elapsed), data_role="elapsed") if elapsed is not None else None,
            tag("span", f"on {self.where}", style="opacity:.7") if self.where else None,
        ]
        header = tag("div", join(parts, " · "), class_="clarion-run-header", data_status=self.status.value)
        return join([header, self.budget_html()])

    def budget_html(self) -> Markup:
        """Spent against the budget, with a bar of the tightest limit (held calls lighter)."""
        budget = self.budget
        if not budget:
            return Markup()
        share, held = _used_share(budget)
        color = COLORS["failed"] if share >= 0.9 else COLORS["waiting"] if share >= 0.7 else COLORS["succeeded"]
        bar = tag(
            "span",
            tag("span", style=style(flex="none", width=f"{share * 100:.1f}%", background=color)),
            tag("span", style=style(flex="none", width=f"{held * 100:.1f}%", background=color, opacity=".35")),
            style=style(display="inline-flex", width="80px", height="6px", vertical_align="middle",
                        background="var(--jp-border-color2,#ddd)", border_radius="3px", overflow="hidden"),
        )  # fmt: skip
        return tag("div", "budget ", bar, " ", describe(budget), class_="clarion-budget", data_role="budget",
                   style=style(font_size="12px", opacity=".85", margin="2px 0"))  # fmt: skip

    def steps_html(self, now: datetime | None = None) -> Markup:
        rows = self.top_rows()
        shown = rows[:ROW_LIMIT]
        body = [self._row_html(row, rows[i - 1].group if i else None, now) for i, row in enumerate(shown)]
        if len(rows) > len(shown):
            body.append(_more(self.counts(rows[len(shown) :])))
        return tag("div", *body, class_="clarion-steps",
                   style=style(font_family="var(--jp-code-font-family,monospace)", font_size="12px"))  # fmt: skip

    def _row_html(self, row: StepRow, previous_group: int | None, now: datetime | None) -> Markup:
        children = self.children(row)
        label = None
        if row.group is not None and row.group != previous_group:
            label = tag("div", "parallel", class_="clarion-group", style="opacity:.6;margin-top:2px")
        indent = (
            "border-left:2px solid var(--jp-border-color2,#ccc);padding-left:6px" if row.group is not None else None
        )
        details = [self._details_html(row)]
        summary_extra = ""
        if children:
            counts = self.counts(children)
            total = row.items if row.items is not None else len(children)
            done = sum(v for k, v in counts.items() if StepStatus(k).terminal)
            summary_extra = f" · {done}/{total} items" + "".join(
                f" · {n} {k}" for k, n in sorted(counts.items()) if k != StepStatus.succeeded.value
            )
            items = [self._row_html(child, None, now) for child in children[:ROW_LIMIT]]
            if len(children) > ROW_LIMIT:
                items.append(_more(self.counts(children[ROW_LIMIT:])))
            details.append(tag("div", *items, style="padding-left:12px"))
        summary = tag("summary", _row_summary(row, now), summary_extra)
        return join([label, tag("details", summary, *details, class_="clarion-step", data_key=row.key,
                                data_status=row.status.value, data_group=row.group, style=indent,
                                open=bool(row.text and row.status == StepStatus.running))])  # fmt: skip

    @staticmethod
    def _details_html(row: StepRow) -> Markup:
        parts = []
        if row.text:
            parts.append(_pre(row.text, "streamed"))
        if row.error:
            parts.append(_pre(row.error.get("message", row.error), "error", COLORS["failed"]))
        if row.reason:
            parts.append(tag("div", row.reason, style="opacity:.7", data_role="reason"))
        if row.output is not None:
            parts.append(_pre(row.output, "output"))
        if row.decision:
            parts.append(tag("div", row.decision, style="opacity:.7", data_role="decision"))
        return join(parts) or tag("div", "no output yet", style="opacity:.6")

    def result_html(self) -> Markup:
        if self.status == RunStatus.succeeded and self.outputs:
            return tag("div", tag("b", "outputs"), _pre(self.outputs, "outputs"), class_="clarion-outputs")
        if self.error:
            return tag("div", _pre(self.error.get("message", self.error), "error", COLORS["failed"]),
                       class_="clarion-error")  # fmt: skip
        return Markup()

    def to_html(self) -> Markup:
        """The whole view as static HTML (the widget's fallback and a saved notebook's final state)."""
        return tag("div", self.header_html(), self.steps_html(), self.result_html(), class_="clarion-run")

    def to_text(self) -> str:
        elapsed = self.elapsed_s()
        lines = [
            f"run {self.run_id}: {self.workflow_name or self.workflow_id} — {self.status.value}"
            + (f" in {_seconds(elapsed)}" if elapsed is not None and self.status.terminal else "")
        ]
        for row in self.steps.values():
            cached = " cached" if is_cached(row.output) else ""
            lines.append(
                f"  {ICONS[row.status]} {row.key:<24} {row.status.value:<10} {_seconds(row.duration_s())}{cached}".rstrip()
            )
        if self.budget:
            lines.append(f"  budget: {describe(self.budget)}")
        if self.outputs:
            lines.append(f"  outputs: {json.dumps(self.outputs, default=str)[:TEXT_LIMIT]}")
        if self.error:
            lines.append(f"  error: {self.error.get('message', self.error)}")
        return "\n".join(lines)


def _used_share(budget: dict[str, Any]) -> tuple[float, float]:
    """The shares of the tightest limit spent and held by calls in flight (each 0..1)."""
    shares = []
    if budget.get("usd"):
        shares.append((budget["spent_usd"] / budget["usd"], budget["reserved_usd"] / budget["usd"]))
    if budget.get("tokens"):
        shares.append((budget["spent_tokens"] / budget["tokens"], budget["reserved_tokens"] / budget["tokens"]))
    spent, held = max(shares, default=(0.0, 0.0), key=lambda pair: pair[0] + pair[1])
    spent = min(spent, 1.0)
    return spent, min(held, 1.0 - spent)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _badge(status: str) -> Markup:
    return tag("span", status, class_="clarion-badge", data_status=status,
               style=style(background=COLORS.get(status, "#888"), color="#fff", border_radius="8px", padding="0 6px"))  # fmt: skip


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _row_summary(row: StepRow, now: datetime | None) -> Markup:
    color = COLORS[row.status.value]
    bits = [_seconds(row.duration_s(now))]
    if row.attempt > 1:
        bits.append(f"attempt {row.attempt}")
    if row.tokens is not None:
        bits.append(f"{row.tokens} tokens")
    if row.cost_usd is not None:
        bits.append(f"${row.cost_usd:.4f}")
    meta = " · ".join(b for b in bits if b)
    return join([
        tag("span", ICONS[row.status], style=f"color:{color}", data_role="icon"), " ", tag("b", row.key), " ",
        tag("span", row.status.value, style=f"color:{color}"),
        join([" ", tag("span", row.task, style="opacity:.6", data_role="task")]) if row.task else None,
        join([" ", _cached_badge()]) if is_cached(row.output) else None,
        join([" ", tag("span", f"· {meta}", style="opacity:.8", data_role="duration")]) if meta else None,
    ])  # fmt: skip


def _cached_badge() -> Markup:
    """Marks a step the LLM cache answered: no model was called and it cost nothing."""
    return tag("span", "cached", class_="clarion-cached", data_role="cached",
               title="answered from the LLM cache: no model call, no cost (the tokens are the first call's)",
               style=style(border="1px solid currentColor", border_radius="8px", padding="0 5px",
                           font_size="10px", opacity=".75"))  # fmt: skip


def _pre(value: Any, role: str, color: str | None = None) -> Markup:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f"\n… ({len(text) - TEXT_LIMIT} more characters)"
    return tag("pre", text, data_role=role,
               style=style(margin="2px 0", white_space="pre-wrap", max_height="20em", overflow="auto", color=color))  # fmt: skip


def _more(counts: dict[str, int]) -> Markup:
    total = sum(counts.values())
    detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return tag("div", f"… and {total} more ({detail})", class_="clarion-more", style="opacity:.7")
