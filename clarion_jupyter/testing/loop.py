"""How long the event loop is held: for tests and benchmarks of "nothing stalls the server".

A probe task sleeps a few milliseconds at a time and records, for every wake-up, how late it
woke (``lag``: what a request arriving then would have waited) and how much CPU time the
loop's own thread spent meanwhile (``busy``). On a shared machine a loop can wake late only
because the OS ran someone else; ``busy`` counts only work done on the loop, so it tells a
stall caused by the code under test from a busy neighbour.

While it runs, the objects that were alive before it started are frozen out of the cyclic
garbage collector (``gc.freeze``): in a test process they are the leftovers of every earlier
test, and a full collection scanning them is a pause of the whole suite's heap, which the code
under test neither caused nor would meet in a server's own process (the 2 MB workflow test
passed alone at 27 ms and failed twice in the full suite at 143 to 155 ms). What that code
allocates is still collected, and counted.
"""

from __future__ import annotations

import asyncio
import gc
import time
from types import TracebackType


class LoopProbe:
    """``async with LoopProbe() as probe: ...`` then ``probe.max_busy_s`` and ``probe.max_lag_s``."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.max_lag_s = 0.0
        self.max_busy_s = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.interval_s)
            self.max_lag_s = max(self.max_lag_s, time.perf_counter() - wall - self.interval_s)
            self.max_busy_s = max(self.max_busy_s, time.thread_time() - cpu)
            self.samples += 1

    async def __aenter__(self) -> LoopProbe:
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._run(), name="loop-probe")
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        gc.unfreeze()

    def __str__(self) -> str:
        return f"loop held at most {self.max_busy_s * 1000:.0f} ms (woke up to {self.max_lag_s * 1000:.0f} ms late)"
