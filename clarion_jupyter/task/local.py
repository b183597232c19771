"""LocalQueue: the in-process queue used when no broker is configured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from .queue import Delivery, Job, JobResult


class LocalQueue:
    """A bounded asyncio queue: a full queue makes ``put`` wait; nothing is ever dropped."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize)
        self._results: asyncio.Queue[JobResult] = asyncio.Queue()
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._sink: Callable[[JobResult], None] | None = None
        self.url = "local"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put(self, job: Job) -> None:
        await self._jobs.put(job)

    async def consume(self) -> AsyncIterator[Delivery]:
        while True:
            yield Delivery(job=await self._jobs.get())

    async def ack(self, delivery: Delivery) -> None:
        return None

    async def nack(self, delivery: Delivery) -> None:
        await self._jobs.put(delivery.job)

    async def report(self, result: JobResult) -> None:
        if self._sink is not None:
            self._sink(result)
        else:
            self._results.put_nowait(result)

    def deliver_to(self, sink: Callable[[JobResult], None]) -> None:
        """From now on hand each result to ``sink`` within the worker's report: in one process a
        result then reaches its run without waiting for a router task's turn of the loop (each
        turn polls the selector, which lets the commit thread take the GIL). Results reported
        before stay in :meth:`results`."""
        self._sink = sink

    async def results(self) -> AsyncIterator[JobResult]:
        while True:
            yield await self._results.get()

    async def cancel(self, run_id: str) -> None:
        for callback in self._cancel_callbacks:
            callback(run_id)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    async def take_stock(self) -> None:
        return None

    def adopt(self, run_id: str, key: str, attempt: int) -> bool:
        """An in-process queue holds nothing across a restart."""
        return False

    def health(self) -> dict[str, Any]:
        return {"kind": "local", "url": self.url, "max_pending": self._jobs.maxsize, "backlog": self._jobs.qsize()}
