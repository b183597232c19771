"""Choose the queue implementation for a ``queue_url``.

The broker queues are imported only when asked for, so a local-only server never loads
redis-py or nats-py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..core.errors import BadRequest
from .broker import redact
from .local import LocalQueue
from .queue import Queue

SCHEMES = ("local", "redis://", "rediss://", "nats://", "tls://")


def make_queue(url: str, maxsize: int | None = None) -> Queue:
    """The queue for ``url``, not yet started (``start`` connects, and says so if it cannot).

    ``maxsize`` bounds the jobs waiting or running, as the engine chooses it (a broker URL's
    ``max_pending`` wins); workers pass none and keep the bound their engine set."""
    if url in ("", "local"):
        return LocalQueue(maxsize or 1000)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        from .redis_queue import RedisQueue

        return RedisQueue(url, maxsize)
    if scheme in ("nats", "tls"):
        from .nats_queue import NatsQueue

        return NatsQueue(url, maxsize)
    raise BadRequest(
        f"queue_url {redact(url)!r}: unknown kind of queue {scheme or url!r}; use one of {', '.join(SCHEMES)}",
        details={"queue_url": redact(url)},
    )
