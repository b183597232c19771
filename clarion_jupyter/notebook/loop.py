"""The kernel's background event loop: where the notebook's client or embedded engine lives.

A cell that waits for its run cannot ``await`` on the kernel's own loop (it is already
running the cell), so everything asynchronous (the REST/WebSocket client, the embedded
engine, the widgets' event followers) runs on one daemon thread with its own asyncio loop.
The main thread hands it coroutines and, when it must, blocks on their futures; ipywidgets
updates sent from that thread reach the browser as usual. A follower sleeps on its socket or
queue between events, so a widget following a long run costs no CPU (no polling).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import comms

T = TypeVar("T")


class BackgroundLoop:
    """One asyncio loop on a daemon thread, started on first use."""

    def __init__(self, name: str = "clarion-notebook") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; a future the calling thread may block on."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it, the widgets' buttons acting meanwhile
        (:mod:`.comms`). A KeyboardInterrupt (the kernel's interrupt) cancels it and propagates."""
        future = self.submit(coro)
        try:
            return comms.wait(future, timeout)
        except BaseException:
            future.cancel()
            raise

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    @property
    def on_loop(self) -> bool:
        """Whether the calling code runs on this loop's thread."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False
