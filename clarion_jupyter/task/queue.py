"""The Queue protocol that carries step jobs to workers and their results back.

The engine puts :class:`Job` s and reads :class:`JobResult` s; workers consume deliveries,
report results and ack. The in-process :class:`~.local.LocalQueue` and the broker-backed
queues implement the same protocol, so the engine never knows where a step runs.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

from ..core.workspace import Workspace
from .base import TaskContext, TaskSettings


@dataclass(slots=True)
class Job:
    """One attempt of one step, as a worker needs it: the task, its resolved config, limits and the identity a result must carry."""

    run_id: str
    key: str
    step_id: str
    attempt: int
    task: str
    config: dict[str, Any]
    timeout_s: float | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    allow_protected: bool = False
    """The step opted in to writing protected paths (``allow_protected: true``)."""
    nonce: str = field(default_factory=lambda: secrets.token_hex(12))
    """Names this job among all jobs ever sent: a result must carry it to be accepted, and a
    worker that finished it refuses it again (a replayed message)."""

    @property
    def id(self) -> str:
        """Results are de-duplicated by this: (run, step execution, attempt)."""
        return job_id(self.run_id, self.key, self.attempt)

    def result(self, kind: Literal["ok", "error", "progress"], **fields: Any) -> JobResult:
        """A result or progress message for this job (it carries the job's identity and nonce)."""
        return JobResult(self.run_id, self.key, self.attempt, kind, nonce=self.nonce, **fields)

    def as_dict(self) -> dict[str, Any]:
        return _fields(self)

    def context(
        self, workspace: Workspace, settings: TaskSettings, emit: Callable[[str, dict[str, Any]], None] | None = None
    ) -> TaskContext:
        """What the task sees of this job, where it runs (a worker) or is previewed (the engine)."""
        ctx = TaskContext(
            run_id=self.run_id,
            step_id=self.step_id,
            key=self.key,
            attempt=self.attempt,
            workspace=workspace,
            settings=settings,
            resources=self.resources,
            allow_protected=self.allow_protected,
        )
        if emit is not None:
            ctx.emit = emit
        return ctx


def job_id(run_id: str, key: str, attempt: int) -> str:
    return f"{run_id}/{key}/{attempt}"


@dataclass(slots=True)
class JobResult:
    """``kind`` is ``ok`` (output), ``error`` (error) or ``progress`` (an event to record)."""

    run_id: str
    key: str
    attempt: int
    kind: Literal["ok", "error", "progress"]
    output: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = True
    event_type: str | None = None
    data: dict[str, Any] | None = None
    nonce: str = ""
    deliveries: int = 1
    """How many times the broker handed this job to a worker (more than one: workers were lost)."""

    @property
    def job_id(self) -> str:
        return job_id(self.run_id, self.key, self.attempt)

    def as_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(slots=True)
class Delivery:
    """A job handed to one worker; ``tag`` is the broker's handle for ack/nack."""

    job: Job
    tag: Any = None
    deliveries: int = 1


def _fields(message: Job | JobResult) -> dict[str, Any]:
    """A message's fields, not copied: it is encoded at once (``asdict`` deep-copies every
    config and output first, which cost more than the encoding and signing together)."""
    return {f.name: getattr(message, f.name) for f in fields(message)}


class Queue(Protocol):
    """Where jobs go and results come from: in process, or through a broker to workers elsewhere."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def put(self, job: Job) -> None:
        """Enqueue a job; waits while the queue is full (backpressure, never drops)."""

    def consume(self) -> AsyncIterator[Delivery]:
        """Jobs for one worker slot, one at a time."""

    async def ack(self, delivery: Delivery) -> None: ...
    async def nack(self, delivery: Delivery) -> None:
        """Give the job back for redelivery (the worker could not finish it)."""

    async def report(self, result: JobResult) -> None:
        """Worker side: send a result or progress message back to the engine."""

    def results(self) -> AsyncIterator[JobResult]:
        """Engine side: results and progress from every worker."""

    async def cancel(self, run_id: str) -> None:
        """Ask every worker to stop the running jobs of a run."""

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Worker side: be told of :meth:`cancel` calls."""

    async def take_stock(self) -> None:
        """Engine side, before resuming runs: learn which jobs the queue still holds (waiting,
        running on a worker, or finished with a result not yet read), so they can be adopted."""

    def adopt(self, run_id: str, key: str, attempt: int) -> bool:
        """Whether the queue holds that job (found by :meth:`take_stock`); if so its result is
        awaited as if this engine had sent it, and it must not be sent again."""

    def health(self) -> dict[str, Any]:
        """``kind``, ``url`` (no password), ``backlog`` (jobs waiting or running, when known), ...;
        a broker queue also ``up`` (False: ``down_since`` and ``error`` say since when and why)
        and ``dropped`` (messages refused, by reason)."""
