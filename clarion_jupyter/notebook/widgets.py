"""The live run widget (an ipywidgets composition, no custom JavaScript) and the agent view.

The widget renders a :class:`~.state.RunState` that a follower on the background loop
feeds with the run's events. Updates are coalesced by :class:`Throttle`: however fast events
arrive, the browser gets at most one update per ``interval`` (20 a second by default), so a
1,000-step run does not flood it; the header's elapsed time ticks once a second while the
run is going. Buttons call the ``actions`` they are given (the ``Run`` handle). The widget's
display data also carries the static HTML and text of its state, for the places widgets do
not render (nbconvert, GitHub's viewer, a terminal).
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as widgets

from ..core.protocol import StepStatus
from .state import RunState, StepRow

UPDATE_INTERVAL_S = 0.05
"""At most this often (20 updates a second) does a widget send its new state to the browser."""
TICK_S = 1.0


class RunActions(Protocol):
    def cancel(self) -> None: ...
    def approve(self, step: str, comment: str | None = None) -> None: ...
    def reject(self, step: str, comment: str | None = None) -> None: ...


class Throttle:
    """Calls ``flush`` on ``loop`` at most once per ``interval``; :meth:`poke` from that loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, flush: Callable[[], None], interval: float) -> None:
        self._loop = loop
        self._flush = flush
        self._interval = interval
        self._last = 0.0
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def poke(self, delay: float | None = None) -> None:
        if self._handle is not None:
            return
        wait = max(0.0, self._last + self._interval - time.monotonic()) if delay is None else delay
        self._handle = self._loop.call_later(wait, self._run)

    def now(self) -> None:
        """Flush at once (the run ended: its final state must not wait)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._run()

    def _run(self) -> None:
        self._handle = None
        self._last = time.monotonic()
        self._flush()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class RunWidget(widgets.VBox):
    """Header (name, run id, status badge, elapsed, where), one row per step, the Cancel button,
    Approve / Reject with the preview for each waiting step, and the outputs once it ends."""

    def __init__(self, state: RunState, actions: RunActions | None = None) -> None:
        self.state = state
        self.actions = actions
        self.updates = 0
        """How many times this widget sent new state to the browser."""
        self.header = widgets.HTML()
        self.steps = widgets.HTML()
        self.result = widgets.HTML()
        self.message = widgets.HTML()
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            tooltip="Cancel this run", layout=widgets.Layout(width="auto"))  # fmt: skip
        self.cancel_button.on_click(lambda _: self._act(lambda a: a.cancel()))
        self.approvals = widgets.VBox()
        self._approval_keys: tuple[str, ...] = ()
        super().__init__(
            [widgets.HBox([self.header, self.cancel_button]), self.steps, self.approvals, self.result, self.message]
        )
        self.add_class("clarion-run-widget")
        self.refresh()

    # -- rendering -------------------------------------------------------------

    def refresh(self) -> None:
        """Render the state; only the parts that changed are sent."""
        state = self.state
        self._set(self.header, state.header_html())
        self._set(self.steps, state.steps_html())
        self._set(self.result, state.result_html())
        done = state.status.terminal
        if self.cancel_button.disabled != done:
            self.cancel_button.disabled = done
            self.cancel_button.layout.display = "none" if done else None
        keys = tuple(row.key for row in state.waiting)
        if keys != self._approval_keys:
            self._approval_keys = keys
            self.approvals.children = [self._approval_box(row) for row in state.waiting]
        self.updates += 1

    def tick(self) -> None:
        """Only the elapsed time changed."""
        self._set(self.header, self.state.header_html())

    @staticmethod
    def _set(widget: widgets.HTML, value: str) -> None:
        if widget.value != value:
            widget.value = value

    def _approval_box(self, row: StepRow) -> widgets.Widget:
        approve = widgets.Button(description=f"Approve {row.key}", button_style="success", icon="check",
                                 layout=widgets.Layout(width="auto"))  # fmt: skip
        reject = widgets.Button(description="Reject", button_style="danger", icon="times",
                                layout=widgets.Layout(width="auto"))  # fmt: skip
        approve.on_click(lambda _: self._decide(approve, reject, lambda a: a.approve(row.key)))
        reject.on_click(lambda _: self._decide(approve, reject, lambda a: a.reject(row.key)))
        message = f"<b>{html.escape(row.key)}</b> waits for approval" + (
            f": {html.escape(row.message)}" if row.message else ""
        )
        box = widgets.VBox(
            [widgets.HTML(message), widgets.HTML(preview_html(row.preview)), widgets.HBox([approve, reject])]
        )
        box.add_class("clarion-approval")
        box.step_key = row.key  # type: ignore[attr-defined]
        return box

    def _decide(self, approve: widgets.Button, reject: widgets.Button, action: Callable[[RunActions], None]) -> None:
        approve.disabled = reject.disabled = True
        self._act(action)

    def _act(self, action: Callable[[RunActions], None]) -> None:
        if self.actions is None:
            return
        try:
            action(self.actions)
        except Exception as exc:  # shown on the widget: a button has no cell to raise into
            self.message.value = f"<span style='color:#d93025'>{html.escape(str(exc))}</span>"

    # -- display ---------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/html": self.state.to_html(), "text/plain": self.state.to_text()}


def preview_html(preview: Any) -> str:
    """What a waiting step shows: a diff per file (create/modify/delete), a command, or its config."""
    if preview is None:
        return ""
    if isinstance(preview, str):
        return diff_html(preview)
    if isinstance(preview, dict) and isinstance(preview.get("files"), list):
        return "".join(_file_html(f) for f in preview["files"] if isinstance(f, dict)) or diff_html(
            str(preview.get("diff", ""))
        )
    if isinstance(preview, dict) and isinstance(preview.get("diff"), str):
        return diff_html(preview["diff"])
    return f"<pre style='white-space:pre-wrap'>{html.escape(json.dumps(preview, indent=2, default=str))}</pre>"


def _file_html(change: dict[str, Any]) -> str:
    action = str(change.get("action", "modify"))
    color = {"create": "#1e8e3e", "delete": "#d93025"}.get(action, "#1a73e8")
    return (
        f"<details open class='clarion-file' data-action='{html.escape(action)}'><summary>"
        f"<span style='color:{color}'>{html.escape(action)}</span> <code>{html.escape(str(change.get('path', '')))}</code>"
        f"</summary>{diff_html(str(change.get('diff', '')))}</details>"
    )


def diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        color = "#1e8e3e" if line.startswith("+") else "#d93025" if line.startswith("-") else None
        if line.startswith(("+++", "---", "@@")):
            color = "#888"
        escaped = html.escape(line)
        lines.append(f"<span style='color:{color}'>{escaped}</span>" if color else escaped)
    return (
        "<pre class='clarion-diff' style='font-size:12px;white-space:pre;overflow:auto;max-height:30em'>"
        + "\n".join(lines)
        + "</pre>"
    )


class AgentWidget(RunWidget):
    """The v2 flow in a cell: the reply rendered (Markdown, or JSON as a tree), its file
    changes as a diff with Apply / Discard (the approval of the ``apply`` step)."""

    REPLY_STEP = "reply"
    APPLY_STEP = "apply"

    def __init__(self, state: RunState, actions: RunActions | None = None) -> None:
        self.reply = widgets.Output()
        self.changes = widgets.HTML()
        self.apply_button = widgets.Button(description="Apply", button_style="success", icon="check",
                                           layout=widgets.Layout(width="auto", display="none"))  # fmt: skip
        self.discard_button = widgets.Button(description="Discard", button_style="danger", icon="times",
                                             layout=widgets.Layout(width="auto", display="none"))  # fmt: skip
        self._shown_reply = False
        super().__init__(state, actions)
        self.apply_button.on_click(lambda _: self._decide_apply(lambda a: a.approve(self.APPLY_STEP)))
        self.discard_button.on_click(lambda _: self._decide_apply(lambda a: a.reject(self.APPLY_STEP)))
        self.children = [
            widgets.HBox([self.header, self.cancel_button]), self.reply, self.changes,
            widgets.HBox([self.apply_button, self.discard_button]), self.steps, self.result, self.message,
        ]  # fmt: skip

    def refresh(self) -> None:
        super().refresh()
        self.approvals.children = []  # the apply step's approval is Apply / Discard here
        reply = self.state.steps.get(self.REPLY_STEP)
        if reply is not None and reply.status == StepStatus.succeeded and not self._shown_reply:
            self._shown_reply = True
            self._show_reply(reply.output or {})
        apply = self.state.steps.get(self.APPLY_STEP)
        waiting = apply is not None and apply.status == StepStatus.waiting
        self._set(self.changes, self._changes_html(reply, apply))
        display = None if waiting else "none"
        for button in (self.apply_button, self.discard_button):
            if button.layout.display != display:
                button.layout.display = display
                button.disabled = False

    def _show_reply(self, output: dict[str, Any]) -> None:
        """The reply as display data the frontend renders: JSON as a collapsible tree, text as Markdown."""
        data = output.get("json")
        if data is not None:
            bundle = {"application/json": data, "text/plain": json.dumps(data, indent=2, default=str)}
            metadata = {"application/json": {"expanded": False, "root": "reply"}}
        else:
            text = str(output.get("text", ""))
            bundle, metadata = {"text/markdown": text, "text/plain": text}, {}
        self.reply.outputs = ({"output_type": "display_data", "data": bundle, "metadata": metadata},)

    def _changes_html(self, reply: StepRow | None, apply: StepRow | None) -> str:
        if apply is not None and apply.preview is not None:
            return preview_html(apply.preview)
        if apply is not None and apply.status == StepStatus.succeeded:
            written = (apply.output or {}).get("written", [])
            return (
                "<div class='clarion-applied'>applied: "
                + ", ".join(
                    f"{html.escape(str(w.get('action', '')))} <code>{html.escape(str(w.get('path', '')))}</code>"
                    for w in written
                )
                + "</div>"
            )
        if apply is not None and (apply.decision or "").startswith("rejected"):
            return "<div class='clarion-discarded' style='opacity:.7'>file changes discarded</div>"
        changes = ((reply.output or {}).get("json") or {}).get("file_changes") if reply else None
        if isinstance(changes, list) and changes:
            return preview_html({"files": [{"action": c.get("action"), "path": c.get("path"),
                                            "diff": "\n".join("+" + line for line in str(c.get("new_content", "")).splitlines())}
                                           for c in changes if isinstance(c, dict)]})  # fmt: skip
        return ""

    def _decide_apply(self, action: Callable[[RunActions], None]) -> None:
        self.apply_button.disabled = self.discard_button.disabled = True
        self._act(action)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs)
        reply = self.state.steps.get(self.REPLY_STEP)
        text = ((reply.output or {}).get("text") if reply else None) or ""
        extra = (
            f"<div class='clarion-reply'><pre style='white-space:pre-wrap'>{html.escape(text)}</pre></div>"
            if text
            else ""
        )
        return {
            **bundle,
            "text/html": extra + self._changes_html(reply, self.state.steps.get(self.APPLY_STEP)) + bundle["text/html"],
        }
