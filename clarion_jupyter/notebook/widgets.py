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
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as widgets

from ..core.protocol import StepStatus
from ..storage.records import utcnow
from .markup import Markup, join, markdown, tag
from .state import RunState, StepRow

UPDATE_INTERVAL_S = 0.05
"""At most this often (20 updates a second) does a widget send its new state to the browser."""
TICK_S = 1.0


class RunActions(Protocol):
    """What a widget's buttons ask of a run; the Run handle answers, so widgets know no transport."""

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
        self._set(self.steps, state.steps_html(utcnow()))
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
        message = join([tag("b", row.key), " waits for approval", f": {row.message}" if row.message else None])
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
            self.message.value = tag("span", str(exc), style="color:#d93025")

    # -- display ---------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/html": self.state.to_html(), "text/plain": self.state.to_text()}


def preview_html(preview: Any) -> Markup:
    """What a waiting step shows: a diff per file (create/modify/delete), a command, or its config."""
    if preview is None:
        return Markup()
    if isinstance(preview, str):
        return diff_html(preview)
    if isinstance(preview, dict) and isinstance(preview.get("files"), list):
        return join(_file_html(f) for f in preview["files"] if isinstance(f, dict)) or diff_html(
            str(preview.get("diff", ""))
        )
    if isinstance(preview, dict) and isinstance(preview.get("diff"), str):
        return diff_html(preview["diff"])
    return tag("pre", json.dumps(preview, indent=2, default=str), style="white-space:pre-wrap")


def _file_html(change: dict[str, Any]) -> Markup:
    action = str(change.get("action", "modify"))
    color = {"create": "#1e8e3e", "delete": "#d93025"}.get(action, "#1a73e8")
    summary = tag("summary", tag("span", action, style=f"color:{color}"), " ", tag("code", change.get("path", "")))
    return tag("details", summary, diff_html(str(change.get("diff", ""))), open=True, class_="clarion-file",
               data_action=action)  # fmt: skip


def diff_html(diff: str) -> Markup:
    lines = []
    for line in diff.splitlines():
        color = "#1e8e3e" if line.startswith("+") else "#d93025" if line.startswith("-") else None
        if line.startswith(("+++", "---", "@@")):
            color = "#888"
        lines.append(tag("span", line, style=f"color:{color}") if color else line)
    return tag("pre", join(lines, "\n"), class_="clarion-diff",
               style="font-size:12px;white-space:pre;overflow:auto;max-height:30em")  # fmt: skip


class AgentWidget(RunWidget):
    """The v2 flow in a cell: the reply rendered (Markdown, or JSON as a tree), its file
    changes as a diff with Apply / Discard (the approval of the ``apply`` step)."""

    REPLY_STEP = "reply"
    APPLY_STEP = "apply"

    def __init__(self, state: RunState, actions: RunActions | None = None) -> None:
        self.reply = widgets.HTML()
        self.reply_tree = widgets.Output()
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
            widgets.HBox([self.header, self.cancel_button]), self.reply, self.reply_tree, self.changes,
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
        """JSON as a collapsible tree (Lab's JSON viewer shows every value as text, and an
        ``Output`` is a trusted area, so nothing but JSON goes in it); text as Markdown
        converted to sanitised HTML here (in that trusted area, Lab would not sanitise it)."""
        data = output.get("json")
        if data is not None:
            bundle = {"application/json": data, "text/plain": json.dumps(data, indent=2, default=str)}
            metadata = {"application/json": {"expanded": False, "root": "reply"}}
            self.reply_tree.outputs = ({"output_type": "display_data", "data": bundle, "metadata": metadata},)
        else:
            self.reply.value = reply_html(str(output.get("text", "")))

    def _changes_html(self, reply: StepRow | None, apply: StepRow | None) -> Markup:
        if apply is not None and apply.preview is not None:
            return preview_html(apply.preview)
        if apply is not None and apply.status == StepStatus.succeeded:
            written = (apply.output or {}).get("written", [])
            files = join((join([w.get("action", ""), " ", tag("code", w.get("path", ""))]) for w in written), ", ")
            return tag("div", "applied: ", files, class_="clarion-applied")
        if apply is not None and (apply.decision or "").startswith("rejected"):
            return tag("div", "file changes discarded", class_="clarion-discarded", style="opacity:.7")
        data = (reply.output or {}).get("json") if reply and isinstance(reply.output, dict) else None
        changes = data.get("file_changes") if isinstance(data, dict) else None
        if isinstance(changes, list) and changes:
            return preview_html({"files": [{"action": c.get("action"), "path": c.get("path"),
                                            "diff": "\n".join("+" + line for line in str(c.get("new_content", "")).splitlines())}
                                           for c in changes if isinstance(c, dict)]})  # fmt: skip
        return Markup()

    def _decide_apply(self, action: Callable[[RunActions], None]) -> None:
        self.apply_button.disabled = self.discard_button.disabled = True
        self._act(action)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs)
        reply = self.state.steps.get(self.REPLY_STEP)
        text = ((reply.output or {}).get("text") if reply else None) or ""
        shown = tag("div", reply_html(text), class_="clarion-reply") if text else None
        changes = self._changes_html(reply, self.state.steps.get(self.APPLY_STEP))
        return {**bundle, "text/html": join([shown, changes, bundle["text/html"]])}


def reply_html(text: str) -> Markup:
    """A model's reply: its Markdown as sanitised HTML."""
    return tag("div", markdown(text), class_="clarion-markdown jp-RenderedHTMLCommon")
