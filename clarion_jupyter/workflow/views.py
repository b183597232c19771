"""RunViews: the committed state of recent runs, kept in memory for reads.

Reading a run from DuckDB costs two queries on a reader thread; clients poll runs they just
started. The group-commit writer hands every state it made durable to :meth:`RunViews.stored`,
so a view never shows more than the database holds (nothing is announced before it is
stored), and reads of recent runs need no query at all. Older runs fall out (least recently
used first) and are read from the database again.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from datetime import datetime

from ..storage.records import Event, RunRecord, StepRecord
from .models import WorkflowRun
from .runs import run_document


class _View:
    __slots__ = ("last_seq", "run", "steps")

    def __init__(self, run: RunRecord) -> None:
        self.run = run
        self.steps: dict[str, StepRecord] = {}
        self.last_seq = 0


class RunViews:
    """The committed state of recent runs in memory, fed by the writer after each commit, so reads of live runs cost no query."""

    def __init__(self, maxsize: int = 2000) -> None:
        self._maxsize = maxsize
        self._views: OrderedDict[str, _View] = OrderedDict()

    def stored(self, runs: list[RunRecord], steps: list[StepRecord], events: list[Event]) -> None:
        for run in runs:
            view = self._views.get(run.run_id)
            if view is None:
                view = self._views[run.run_id] = _View(run)
            view.run = run
            self._views.move_to_end(run.run_id)
        for step in steps:
            view = self._views.get(step.run_id)
            if view is None:
                continue  # evicted, or a run this engine never loaded: the database has it
            current = view.steps.get(step.key)
            if current is None or step.attempt >= current.attempt:
                view.steps[step.key] = step
        for event in events:
            view = self._views.get(event.run_id)
            if view is not None and event.seq > view.last_seq:
                view.last_seq = event.seq
        while len(self._views) > self._maxsize:
            self._views.popitem(last=False)

    def seed(self, run: RunRecord, steps: list[StepRecord], last_seq: int) -> None:
        """Start from what the database holds (a resumed run); copies, as the engine goes on."""
        self.stored([copy.copy(run)], [copy.copy(s) for s in steps], [])
        self._views[run.run_id].last_seq = last_seq

    def forget(self, run_ids: list[str]) -> None:
        """Runs deleted from the database: reads must not find them here either."""
        for run_id in run_ids:
            self._views.pop(run_id, None)

    def document(self, run_id: str) -> WorkflowRun | None:
        view = self._views.get(run_id)
        if view is None:
            return None
        self._views.move_to_end(run_id)
        steps = sorted(view.steps.values(), key=_started_order)
        return run_document(view.run, steps, view.last_seq)


def _started_order(step: StepRecord) -> tuple[bool, datetime | None, str, int]:
    """The order the database lists steps in: by start time (never-started last), key, attempt."""
    return (step.started_at is None, step.started_at, step.key, step.attempt)
