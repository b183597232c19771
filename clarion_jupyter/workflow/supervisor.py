"""RunSupervisor: the engine's active runs, each one executor driven by one task.

The façade starts, cancels, decides and reads runs; what it must know of the ones in flight
(which executor drives a run, the task to cancel when the engine stops, which idempotency key
a submission already claimed) lives here, so that the bookkeeping is one place and a run that
ends, however it ends, leaves it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from .executor import RunExecutor

log = logging.getLogger(__name__)

MAX_CLAIMS = 10_000
"""Idempotency keys remembered, newest first out last. A claim is needed only until its run is
stored (then the store finds it) and by the submissions that looked the key up meanwhile (a
database read or two): the last ten thousand are far more than can be in flight at once, and a
server that takes keys all day keeps a bounded number instead of every key it ever saw."""


class RunSupervisor:
    """Active runs by id, and the idempotency keys claimed by submissions not yet stored."""

    def __init__(self, max_claims: int | None = None) -> None:
        self._executors: dict[str, RunExecutor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._claims: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._max_claims = MAX_CLAIMS if max_claims is None else max_claims

    def __len__(self) -> int:
        return len(self._executors)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._executors

    def get(self, run_id: str) -> RunExecutor | None:
        return self._executors.get(run_id)

    def track(self, executor: RunExecutor) -> None:
        """Known from here on (cancellable, decidable), before it is launched."""
        self._executors[executor.run.run_id] = executor

    def forget(self, run_id: str, claim: tuple[str, str] | None = None) -> None:
        """A submission that was never stored (nor announced): as if it had never been made."""
        self._executors.pop(run_id, None)
        if claim is not None:
            self._claims.pop(claim, None)

    def launch(self, executor: RunExecutor) -> None:
        run_id = executor.run.run_id
        self._executors[run_id] = executor
        self._tasks[run_id] = asyncio.create_task(self._drive(executor), name=f"clarion-run-{run_id}")

    async def _drive(self, executor: RunExecutor) -> None:
        run_id = executor.run.run_id
        try:
            await executor.execute()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: engine error", run_id)
            executor.abort({"code": "internal", "message": "internal engine error (see the server log)"})
        finally:
            executor.started.set()  # never leave a decision waiting on a run that ended early
            self._executors.pop(run_id, None)
            self._tasks.pop(run_id, None)

    async def stop(self) -> None:
        """Cancel every run's task (their state stays stored: the next start resumes them)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def claimed(self, workflow_id: str, key: str) -> str | None:
        """The run a submission with this idempotency key already started in this process."""
        return self._claims.get((workflow_id, key))

    def claim(self, workflow_id: str, key: str, run_id: str) -> None:
        self._claims[(workflow_id, key)] = run_id
        if len(self._claims) > self._max_claims:
            self._claims.popitem(last=False)
