"""In-process fan-out of committed events to any number of subscribers."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from ..storage.records import Event


class SubscriptionOverflow(Exception):
    """The subscriber fell further behind than its buffer allows; resubscribe with ``since``."""


class Subscription:
    """A buffer of events for one consumer. ``maxsize=0`` means unbounded."""

    def __init__(self, bus: EventBus, run_id: str | None, maxsize: int = 0) -> None:
        self._bus = bus
        self.run_id = run_id
        self.maxsize = maxsize
        self._buffer: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False

    def push(self, event: Event) -> None:
        if self.overflowed:
            return
        if self.maxsize and len(self._buffer) >= self.maxsize:
            self.overflowed = True
            self._buffer.clear()
        else:
            self._buffer.append(event)
        self._ready.set()

    async def get(self) -> Event:
        while not self._buffer:
            if self.overflowed:
                raise SubscriptionOverflow(f"subscriber fell more than {self.maxsize} events behind")
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Hands committed events to in-process subscribers (sockets, waits, the CLI), per run and for all runs; bounded queues keep a slow reader from holding the engine."""

    def __init__(self) -> None:
        self._by_run: dict[str, set[Subscription]] = defaultdict(set)
        self._all: set[Subscription] = set()

    def subscribe(self, run_id: str | None = None, maxsize: int = 0) -> Subscription:
        """Follow one run, or every run when ``run_id`` is None."""
        sub = Subscription(self, run_id, maxsize)
        (self._all if run_id is None else self._by_run[run_id]).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.run_id is None:
            self._all.discard(sub)
            return
        subs = self._by_run.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_run[sub.run_id]

    def publish(self, events: list[Event]) -> None:
        for event in events:
            for sub in self._by_run.get(event.run_id, ()):
                sub.push(event)
            for sub in self._all:
                sub.push(event)
