"""Rows of the run log, as the engine produces them and the stores persist them.

These are plain slotted dataclasses rather than pydantic models because the engine makes
several of them per step on its hot path; the API's pydantic run document is built from
them at the edge.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, TypeVar

from pydantic_core import PydanticSerializationError, to_json

from ..core.protocol import TERMINAL_EVENT_TYPES

T = TypeVar("T")


def digest(document: dict[str, Any]) -> str:
    """Content address of a document (canonical JSON), to store each distinct one once."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Event:
    """A stored, numbered transition of one run; ``seq`` is gap-free per run."""

    seq: int
    type: str
    run_id: str
    step_id: str | None
    ts: datetime
    data: dict[str, Any] = field(default_factory=dict)
    _json: str | None = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "ts": isoformat(self.ts),
            "data": self.data,
        }

    def to_json(self) -> str:
        """Encoded once, however many sockets send it and the journal too (events are not
        changed once made)."""
        if self._json is None:
            self._json = json_text(self.as_dict())
        return self._json


def json_text(value: Any) -> str:
    """Compact JSON text of a value the engine made, encoded by pydantic-core (four to five
    times faster than ``json`` here, where every step encodes its rows and events). Anything
    that is not JSON becomes its ``str``. A lone surrogate (``json.loads`` makes one of a
    model's ``"\\ud800"``) is no Unicode text: UTF-8 cannot hold it and DuckDB refuses it even
    escaped, so it becomes U+FFFD, the replacement character."""
    try:
        return to_json(value, fallback=str).decode()
    except PydanticSerializationError:
        return to_json(without_surrogates(value), fallback=str).decode()


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(value: Any) -> Any:
    """A copy of a JSON value with U+FFFD for every lone surrogate: ``json.loads`` of
    ``"\\ud800"`` makes one, and no UTF-8 text (DuckDB's, a socket's) can hold it."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_surrogates(v) for v in value]
    return value


@dataclass(slots=True)
class RunRecord:
    """A run as stored: the row the engine keeps current in memory and writes through the group commit."""

    run_id: str
    workflow_id: str
    workflow_name: str
    workflow: dict[str, Any]
    inputs: dict[str, Any]
    status: str
    created_at: datetime
    workflow_digest: str = ""
    idempotency_key: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    parent_run_id: str | None = None
    """A re-run's: the run it was made from."""
    changes: dict[str, Any] | None = None
    """A re-run's: what differs from its parent (``from_step``, ``inputs``, ``overrides``)."""
    budget: dict[str, Any] | None = None
    """With a budget: its limits, what was spent, and the holds of the LLM calls in flight."""
    cache: bool | None = None
    """Whether the run asked for the LLM cache (None: it did not say; steps and agents decide)."""


@dataclass(slots=True)
class StepRecord:
    """One attempt of one step execution (``key`` is ``id`` or ``id[i]`` for map items)."""

    run_id: str
    key: str
    step_id: str
    item_index: int | None
    attempt: int
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    """While ``waiting`` (and after): ``preview``, ``message``, ``requested_at``, ``timeout_s``;
    once approved also ``decision`` {approved, by, at}, which later attempts carry alone."""
    reused_from: dict[str, Any] | None = None
    """A re-run's step copied from its parent without calling its task: ``{run_id, attempt}``."""


def _copier(cls: type[T]) -> Callable[[T], T]:
    """A shallow copy of a record, field by field in one C call: ``copy.copy`` of a slotted
    dataclass goes through ``__reduce_ex__`` and costs several times more, per record per commit."""
    values = attrgetter(*(f.name for f in fields(cls)))
    return lambda record: cls(*values(record))


_copy_run = _copier(RunRecord)
_copy_step = _copier(StepRecord)


def latest_attempts(records: list[StepRecord]) -> dict[str, StepRecord]:
    """The newest attempt of each step execution, by key, in first-seen order."""
    latest: dict[str, StepRecord] = {}
    for record in records:
        current = latest.get(record.key)
        if current is None or record.attempt >= current.attempt:
            latest[record.key] = record
    return latest


def duration_ms(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds() * 1000, 3)


@dataclass(slots=True)
class StoredDocument:
    """An agent or workflow as stored: the validated document plus bookkeeping."""

    id: str
    doc: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    source: str | None = None


@dataclass(slots=True)
class Batch:
    """What one group commit writes: latest snapshot per run and per attempt, new events."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    steps: dict[tuple[str, str, int], StepRecord] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    prepared: Any = None
    """The store's rows for this batch, built once so that a retried commit writes the same."""

    def snapshot(self) -> tuple[list[RunRecord], list[StepRecord]]:
        """Copies of the records as this batch writes them (the engine goes on changing its own)."""
        return [_copy_run(r) for r in self.runs.values()], [_copy_step(s) for s in self.steps.values()]

    def run_ids(self) -> set[str]:
        """Every run this batch has a record or an event of."""
        return {*self.runs, *(step.run_id for step in self.steps.values()), *(e.run_id for e in self.events)}

    def split_by_run(self) -> dict[str, Batch]:
        """One batch per run, in this batch's order (to store every run a bad record does not touch)."""
        parts: dict[str, Batch] = {}
        for run_id, run in self.runs.items():
            parts.setdefault(run_id, Batch()).runs[run_id] = run
        for key, step in self.steps.items():
            parts.setdefault(step.run_id, Batch()).steps[key] = step
        for event in self.events:
            parts.setdefault(event.run_id, Batch()).events.append(event)
        return parts

    def __bool__(self) -> bool:
        return bool(self.runs or self.steps or self.events)
