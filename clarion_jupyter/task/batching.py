"""Batcher: one task sends what many callers hand it, in as few broker round trips as there are sends.

A broker round trip costs a fraction of a millisecond however much it carries, so the broker
queues send jobs, results and acks in batches. There is no timer: while one send is in flight
whatever is added waits for the next, so a lone message goes at once and a busy queue sends
many per round trip (as a group commit does).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

RECANCEL_S = 0.2
"""How long :func:`stopped` waits for a cancelled task before cancelling it again."""

Send = Callable[[list[T]], Awaitable[list[bool] | None]]
"""Sends a batch, in order; answers which items the broker took (None: all). Those it refused
(a full queue) are offered again, first, after a pause."""


class Batcher(Generic[T]):
    """Sends items in batches of at most ``batch``, in the order they were added.

    :meth:`add` waits while ``limit`` items are waiting (backpressure) and gives a future that
    is done once the item was taken; an item whose future was cancelled before its send is
    left out. An item is let go only once a send returned, so a send cut short (the queue
    closing) leaves its items for :meth:`drain`.
    """

    def __init__(self, send: Send[T], *, limit: int, batch: int, pauses: tuple[float, float]) -> None:
        self._send = send
        self._limit = limit
        self._batch = batch
        self._pauses = pauses
        self._items: deque[tuple[T, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    async def add(self, item: T) -> asyncio.Future[None]:
        while len(self._items) >= self._limit:
            self._room.clear()
            await self._room.wait()
        future = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="clarion-broker-batcher")
        return future

    async def drain(self) -> None:
        """Until everything added so far was taken."""
        await self._idle.wait()

    async def stop(self) -> None:
        if self._task is not None:
            await stopped(self._task)
            self._task = None

    async def _run(self) -> None:
        pause = self._pauses[0]
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                stop_if_cancelled()
                if any(future.done() for _, future in self._items):  # callers that gave up on theirs
                    self._items = deque(entry for entry in self._items if not entry[1].done())
                entries = [self._items[i] for i in range(min(self._batch, len(self._items)))]
                if not entries:
                    break
                taken = await self._send([item for item, _ in entries])
                refused = []
                for index, (item, future) in enumerate(entries):
                    self._items.popleft()
                    if taken is None or taken[index]:
                        if not future.done():
                            future.set_result(None)
                    else:
                        refused.append((item, future))
                self._items.extendleft(reversed(refused))
                if len(self._items) < self._limit:
                    self._room.set()
                if refused:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, self._pauses[1])
                else:
                    pause = self._pauses[0]
            self._idle.set()


def stop_if_cancelled() -> None:
    """A wait inside a client library can swallow a cancellation (nats-py's fetch does, when
    its ``asyncio.wait_for`` races a reply); a loop that went on after one would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stopped(*tasks: asyncio.Future[Any]) -> None:
    """Cancels ``tasks`` and waits until they ended, cancelling again any that went on.

    A client library's ``asyncio.wait_for`` can lose a cancel that lands as its call completes
    (Python 3.11; nats-py waits under one, and redis-py sends each command under one when a URL
    sets ``socket_timeout``), and the task then waits out a whole blocking read before a loop of
    ours can notice (:func:`stop_if_cancelled`). A queue's ``close()`` would wait with it.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _ended, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    await asyncio.gather(*tasks, return_exceptions=True)
