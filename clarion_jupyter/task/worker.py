"""Worker: takes jobs from a queue, runs their tasks, reports results.

The same class runs as the engine's in-process pool (``workers`` slots on the engine's
loop) and as ``clarion worker --queue URL`` in other processes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ..core.errors import BadRequest
from ..core.secrets import SecretMasker
from ..core.workspace import Workspace, WorkspacePathError
from .base import TaskFailed, TaskSettings, config_problems
from .queue import Delivery, Job, JobResult, Queue
from .registry import TaskRegistry

log = logging.getLogger(__name__)
CANCELLED_RUNS_KEPT = 10_000


class Worker:
    """Takes jobs from a queue and runs their tasks, a bounded number at once, in the engine or in ``clarion worker``."""

    def __init__(
        self,
        queue: Queue,
        registry: TaskRegistry,
        workspace: Workspace,
        settings: TaskSettings,
        concurrency: int = 8,
    ) -> None:
        self._queue = queue
        self._registry = registry
        self._workspace = workspace
        self._settings = settings
        self._masker = SecretMasker(settings.secrets)
        self._concurrency = concurrency
        self._slots: list[asyncio.Task[None]] = []
        self._running: dict[str, dict[str, asyncio.Task[Any]]] = defaultdict(dict)
        self._stopping = False
        self._sends: dict[str, asyncio.Task[None]] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        """Recently cancelled runs, so their jobs still waiting in the queue are not started."""
        queue.on_cancel(self.cancel_run)

    async def start(self) -> None:
        for name in self._registry.names():
            await self._registry.get(name).recover(self._workspace)
        self._slots = [asyncio.create_task(self._slot(), name=f"clarion-worker-{i}") for i in range(self._concurrency)]

    async def stop(self) -> None:
        """Stop at once; unfinished jobs are neither reported nor acked (they run again)."""
        self._stopping = True
        for slot in self._slots:
            slot.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []

    def cancel_run(self, run_id: str) -> None:
        self._cancelled[run_id] = None
        while len(self._cancelled) > CANCELLED_RUNS_KEPT:
            self._cancelled.popitem(last=False)
        for task in list(self._running.get(run_id, {}).values()):
            task.cancel()

    @property
    def busy(self) -> int:
        return sum(len(jobs) for jobs in self._running.values())

    async def _slot(self) -> None:
        async for delivery in self._queue.consume():
            try:
                await self._handle(delivery)
            except Exception:  # the job stays unacked, so it is delivered again; the slot goes on
                log.exception("step %s could not be handled", delivery.job.id)

    async def _handle(self, delivery: Delivery) -> None:
        job = delivery.job
        if job.run_id in self._cancelled:
            await self._queue.report(self._cancelled_result(job))
            await self._queue.ack(delivery)
            return
        execution = asyncio.current_task()
        assert execution is not None
        running = self._running[job.run_id]
        running[job.id] = execution
        try:
            result = await self._execute(job)
        except asyncio.CancelledError:
            if self._stopping:
                raise
            # The engine cancelled this run: its state is the engine's to record.
            execution.uncancel()
            result = self._cancelled_result(job)
        finally:
            running.pop(job.id, None)
            if not running:
                self._running.pop(job.run_id, None)
        progress = self._sends.pop(job.id, None)
        if progress is not None:
            await progress
        result.deliveries = delivery.deliveries
        await self._queue.report(self._masked(result))
        await self._queue.ack(delivery)

    async def _execute(self, job: Job) -> JobResult:
        task_type = self._registry.get(job.task)
        if task_type is None:
            return self._failure(job, "unknown_task", f"no task type '{job.task}' on this worker", False)
        try:
            config = task_type.Config.model_validate(job.config)
        except ValidationError as exc:
            return self._failure(job, "invalid_config", config_problems(exc), False)
        ctx = job.context(self._workspace, self._settings, emit=lambda type_, data: self._progress(job, type_, data))
        try:
            async with asyncio.timeout(job.timeout_s):
                output = await task_type().run(config, ctx)
        except TimeoutError:
            return self._failure(job, "timeout", f"step timed out after {job.timeout_s:g} s", True)
        except TaskFailed as exc:
            return self._failure(job, exc.code, exc.message, exc.retryable, exc.details)
        except WorkspacePathError as exc:
            return self._failure(job, exc.code, str(exc), False)
        except Exception as exc:
            log.debug("step %s raised", job.id, exc_info=True)
            return self._failure(job, "task_error", f"{type(exc).__name__}: {exc}", True)
        return job.result("ok", output=output)

    def _masked(self, result: JobResult) -> JobResult:
        """What leaves the worker carries no secret value (outputs, errors, progress data), and
        its error message no absolute workspace path."""
        mask = self._masker.masking()  # the secrets looked up once for the three fields
        if mask is not None:
            result.output, result.error, result.data = mask(result.output), mask(result.error), mask(result.data)
        if result.error is not None and isinstance(result.error.get("message"), str):
            result.error["message"] = self._workspace.scrub(result.error["message"])
        return result

    @classmethod
    def _cancelled_result(cls, job: Job) -> JobResult:
        return cls._failure(job, "cancelled", "the run was cancelled", False)

    @staticmethod
    def _failure(job: Job, code: str, message: str, retryable: bool, details: Any = None) -> JobResult:
        return job.result("error", error=_error(code, message, details), retryable=retryable)

    def _progress(self, job: Job, type_: str, data: dict[str, Any]) -> None:
        """Send a progress message without blocking the task, in order, before the result."""
        message = job.result("progress", event_type=type_, data=data)
        previous = self._sends.get(job.id)

        async def send() -> None:
            if previous is not None:
                await previous
            await self._queue.report(self._masked(message))

        self._sends[job.id] = asyncio.get_running_loop().create_task(send())


def _error(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return error


async def run_worker(
    queue_url: str,
    settings: TaskSettings,
    *,
    workers: int = 8,
    workspace_root: str = ".",
    ready: Callable[[Queue], None] | None = None,
) -> None:
    """``clarion worker``: serve a broker queue until SIGINT or SIGTERM.

    ``settings`` are the server's (its traits: shell allowed, output cap, which variables are
    secrets), so a step is judged and masked here as it would be in the server. On a signal,
    running steps are stopped (their processes killed) and their jobs given back unreported,
    so another worker runs them at once. ``ready`` is told once jobs are being taken."""
    from .queues import make_queue

    if queue_url in ("", "local"):
        raise BadRequest("clarion worker needs a broker URL (redis://... or nats://...): local jobs run in the server")
    queue = make_queue(queue_url)
    await queue.start()
    worker = Worker(queue, TaskRegistry.from_entry_points(), Workspace(workspace_root), settings, workers)
    try:
        await worker.start()
        if ready is not None:
            ready(queue)
        await _signalled(signal.SIGINT, signal.SIGTERM)
    finally:
        await worker.stop()
        await queue.close()


async def _signalled(*signums: signal.Signals) -> None:
    loop = asyncio.get_running_loop()
    received = asyncio.Event()
    for signum in signums:
        loop.add_signal_handler(signum, received.set)
    try:
        await received.wait()
    finally:
        for signum in signums:
            loop.remove_signal_handler(signum)
