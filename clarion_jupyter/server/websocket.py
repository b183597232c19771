"""The v3 WebSockets: one run's events (stored ones after ``since``, then live ones), and every run's.

Each event is one JSON text message, the same object ``GET /api/v3/runs/{id}/events`` returns.

Close codes:

* ``1000``: the run ended; its terminal event was the last message.
* ``1001``: the server is shutting down; reconnect later with ``since``.
* ``1011``: a server bug broke the stream (it is logged); reconnect with ``since``.
* ``4008``: the client fell more than ``ws_buffer`` events behind; reconnect with ``since`` (the
  close reason says which ``since`` for a run's socket). Stored events are never lost, so a
  reconnect misses nothing.
* ``4404``: no run with this id (a close code rather than a refused upgrade, which browsers
  cannot tell apart from a network error).

A bad ``since``, a missing token or an unavailable engine refuse the upgrade itself (400,
403, 503).

Back-pressure: each message is awaited until tornado has handed it to the socket, so a
slow client only fills its own bounded subscription buffer, and is closed when that
overflows; the engine and the other clients never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..core.errors import NotFound
from ..core.protocol import CloseCode
from ..storage.records import Event
from ..workflow.bus import Subscription, SubscriptionOverflow
from ..workflow.engine import Engine
from .base import AUTH_RESOURCE, ClarionHandlerMixin

log = logging.getLogger(__name__)


class EventSocket(ClarionHandlerMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):  # type: ignore[misc]
    """Authenticates like Jupyter's own sockets, then forwards :meth:`events` until they end."""

    _engine: Engine
    _pump: asyncio.Task[None] | None = None
    position = 0
    """The ``seq`` of the last event sent (or the ``since`` asked for): where to resume from."""

    def set_default_headers(self) -> None:
        """No page headers (CSP and the like) on an upgrade, as in Jupyter's kernel socket."""

    @property
    def ping_interval(self) -> float:  # type: ignore[override]
        """In milliseconds, as :class:`WebSocketMixin` (which sends the pings) expects."""
        return self.clarion.ws_ping_interval_s * 1000

    async def pre_get(self) -> None:
        """Authorize and check the request before the upgrade, so refusals are plain HTTP errors."""
        user = self.current_user
        if not await ensure_async(self.authorizer.is_authorized(self, user, "execute", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        self._engine = await self.engine()

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().open()  # WebSocketMixin starts the pings
        self.clarion.sockets.add(self)
        self._pump = asyncio.ensure_future(self._forward(self.events()))

    def events(self) -> AsyncIterator[Event]:
        raise NotImplementedError

    def overflow_reason(self) -> str:
        raise NotImplementedError

    async def _forward(self, events: AsyncIterator[Event]) -> None:
        flushed: asyncio.Future[None] | None = None
        try:
            async for event in events:
                # Wait for the socket only while it is behind: a fast client gets a burst of
                # events without a loop turn per message, a slow one still pushes back.
                if flushed is not None and not flushed.done():
                    await flushed
                flushed = self.write_message(event.to_json())
                self.position = event.seq
            if flushed is not None:
                await flushed
        except SubscriptionOverflow:
            self.close(CloseCode.overflow, self.overflow_reason())
        except NotFound:
            self.close(CloseCode.not_found, "no such run")
        except WebSocketClosedError:
            return
        except Exception:
            log.exception("event stream of %s failed", self.request.path)
            self.close(CloseCode.internal_error, "internal server error: reconnect with since")
        else:
            self.close(CloseCode.done, "run finished")

    def shutdown(self, code: int, reason: str) -> None:
        self._stop_pump()
        self.close(code, reason)

    def on_close(self) -> None:
        self._stop_pump()

    def _stop_pump(self) -> None:
        self.clarion.sockets.discard(self)
        if self._pump is not None:
            self._pump.cancel()


class RunEventsSocket(EventSocket):
    """``/ws/runs/{run_id}/subscribe?since=N``: closes (1000) after the run's terminal event."""

    async def pre_get(self) -> None:
        await super().pre_get()
        self.run_id = self.path_kwargs["run_id"]
        self.position = self.int_argument("since", 0, 0)

    def events(self) -> AsyncIterator[Event]:
        return self._engine.subscribe(self.run_id, self.position, maxsize=self.clarion.ws_buffer)

    def overflow_reason(self) -> str:
        return f"client fell more than {self.clarion.ws_buffer} events behind: reconnect with since={self.position}"


class AllRunsSocket(EventSocket):
    """``/ws/runs``: every run's live events, for the sidebar's list; it never ends by itself."""

    _live: Subscription | None = None

    def events(self) -> AsyncIterator[Event]:
        # Subscribed here, synchronously, so no event published after the upgrade is missed.
        self._live = self._engine.feed(self.clarion.ws_buffer)
        return _follow(self._live)

    def overflow_reason(self) -> str:
        return "client fell behind: reconnect, then read each run's missed events with since"

    def _stop_pump(self) -> None:
        super()._stop_pump()
        if self._live is not None:
            self._live.close()


async def _follow(live: Subscription) -> AsyncIterator[Event]:
    while True:
        yield await live.get()


websocket_handlers: list[tuple[str, type[EventSocket]]] = [
    (r"/ws/runs/(?P<run_id>[^/]+)/subscribe", RunEventsSocket),
    (r"/ws/runs", AllRunsSocket),
]
