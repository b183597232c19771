"""The protocol's fixed vocabulary: run and step statuses, event types, WebSocket close codes.

Defined once here and used by the executor, the server, the client and the CLI alike, so a
status or an event type is never a string literal that could drift between them. They are
``StrEnum``/``IntEnum`` members, so they serialise as the plain strings and numbers of the
wire format and compare equal to them.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class RunStatus(StrEnum):
    """A run's lifecycle, defined once: the engine, the API, the client and the sidebar compare against these, never against strings."""

    queued = "queued"
    running = "running"
    waiting = "waiting"
    """Some step waits for a person's decision and nothing else of the run is running."""
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_RUN

    @property
    def active(self) -> bool:
        """Not finished: a restart resumes it."""
        return self not in _TERMINAL_RUN


_TERMINAL_RUN = frozenset({RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled})
ACTIVE_RUN_STATUSES = tuple(s.value for s in RunStatus if s.active)


class StepStatus(StrEnum):
    """A step execution's lifecycle (one per step, ``for_each`` item and attempt), defined once for every door."""

    pending = "pending"
    waiting = "waiting"
    """Ready, but held for an approval."""
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in STEP_DONE


STEP_DONE = frozenset({StepStatus.succeeded, StepStatus.failed, StepStatus.skipped, StepStatus.cancelled})


class EventType(StrEnum):
    """Every kind of stored event: the contract a client folds into run state, so a type outside it is never stored."""

    run_queued = "run_queued"
    run_started = "run_started"
    step_started = "step_started"
    step_retrying = "step_retrying"
    step_completed = "step_completed"
    step_failed = "step_failed"
    step_skipped = "step_skipped"
    step_cancelled = "step_cancelled"
    """A step in flight (or waiting) that the run's cancel or failure stopped."""
    llm_token = "llm_token"
    approval_requested = "approval_requested"
    approval_granted = "approval_granted"
    approval_rejected = "approval_rejected"
    workflow_succeeded = "workflow_succeeded"
    workflow_failed = "workflow_failed"
    workflow_cancelled = "workflow_cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENT_TYPES


TERMINAL_EVENT_TYPES = frozenset(
    {EventType.workflow_succeeded, EventType.workflow_failed, EventType.workflow_cancelled}
)


class CloseCode(IntEnum):
    """Why a Clarion WebSocket closed; every code but ``done`` means: reconnect with ``since``."""

    done = 1000
    """The run ended; its terminal event was the last message."""
    going_away = 1001
    """The server is shutting down."""
    internal_error = 1011
    """A server bug broke the stream (it is logged)."""
    overflow = 4008
    """The client fell more than ``ws_buffer`` events behind."""
    not_found = 4404
    """No run with this id (a close code: browsers cannot tell a refused upgrade from a network error)."""
