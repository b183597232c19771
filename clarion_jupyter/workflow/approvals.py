"""Approvals: the steps of one run that wait for a person, and how a decision reaches the run.

A step with ``approval:`` stops before its task is called: the run builds what a person
reviews (the diff, the command, the rendered config), records the attempt as ``waiting``
and holds the job without a worker slot until someone decides, anywhere (a widget, the
sidebar, the CLI) or its ``timeout_s`` decides for them. This module is that waiting room;
what a decision then does to the DAG (start the step, skip it, fail it) stays with the
:class:`~clarion_jupyter.workflow.executor.RunExecutor`, which receives the decision as a
message in its inbox like any job result, so one coroutine still owns the run's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from ..storage.records import utcnow
from ..task.base import TaskFailed
from ..task.queue import Job
from .compiler import Node
from .storable import storable
from .templates import TemplateError, truthy

T = TypeVar("T")
Previewer = Callable[[Job], Awaitable[dict[str, Any]]]
"""Builds what a person reviews before a step with ``approval:`` runs (raises TaskFailed)."""


@dataclass(slots=True)
class Decision:
    """A person's decision (or a timeout's) on a waiting step, already announced."""

    key: str
    approve: bool
    reason: str
    by: str | None


class PreviewFailed(Exception):
    """What a person would review could not be built: the step fails rather than asks blind."""


def asks_approval(node: Node, context: dict[str, Any]) -> bool:
    """Whether the step asks, this time; a condition that cannot be evaluated asks (when in
    doubt, a person looks)."""
    if node.approval_if is None:
        return False
    try:
        return truthy(node.approval_if.render(context))
    except TemplateError:
        return True


async def request(previewer: Previewer, job: Job, node: Node, max_output_bytes: int) -> dict[str, Any]:
    """What a person is asked, as the approval event says it: preview, message and timeout."""
    policy = node.step.approval
    try:
        preview = storable({"preview": await previewer(job)}, "approval", max_output_bytes)["preview"]
    except (TaskFailed, TemplateError) as exc:
        message = exc.message if isinstance(exc, TaskFailed) else str(exc)
        raise PreviewFailed(f"the approval preview could not be built: {message}") from None
    return {"preview": preview, "message": _with_warning(policy.message, preview), "timeout_s": policy.timeout_s}


class WaitingRoom(Generic[T]):
    """One run's steps that wait for a decision, by step key, with their timeouts.

    :meth:`decide` takes a step out synchronously and hands the decision on at once, so
    two concurrent decisions on one step cannot both be accepted."""

    def __init__(self, on_decided: Callable[[T, Decision, str | None], None]) -> None:
        self._on_decided = on_decided
        self._waiting: dict[str, T] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def hold(self, key: str, waiting: T, requested_at: str, timeout_s: float | None) -> None:
        """Wait for the decision on ``key`` (asked now, or before a restart: the timeout
        counts from when it was first asked)."""
        self._waiting[key] = waiting
        if timeout_s is not None:
            asked = datetime.fromisoformat(requested_at.replace("Z", "+00:00"))
            left = timeout_s - (utcnow() - asked).total_seconds()
            self._timers[key] = asyncio.get_running_loop().call_later(
                max(left, 0.0), self.decide, key, False, "timeout", f"no decision within {timeout_s:g} s"
            )

    def decide(self, key: str, approve: bool, by: str | None, comment: str | None) -> bool:
        """Decide a waiting step; False when ``key`` is not waiting (or already decided)."""
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return False
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        reason = f"rejected by {by or 'a reviewer'}" + (f": {comment}" if comment else "")
        self._on_decided(waiting, Decision(key, approve, reason, by), comment)
        return True

    def clear(self) -> None:
        """The run is ending: nothing waits any more, no timeout will decide."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()

    @property
    def keys(self) -> list[str]:
        return list(self._waiting)

    def __bool__(self) -> bool:
        return bool(self._waiting)


def _with_warning(message: str | None, preview: Any) -> str | None:
    """The message a person deciding sees, led by the preview's warning (e.g. protected paths):
    every client shows the message, not every one knows the preview's fields."""
    warning = preview.get("warning") if isinstance(preview, dict) else None
    if not isinstance(warning, str):
        return message
    return f"⚠ {warning}" + (f"\n\n{message}" if message else "")
