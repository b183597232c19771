"""Choose the queue implementation for a ``queue_url``."""

from __future__ import annotations

from urllib.parse import urlparse

from ..core.errors import BadRequest
from .local import LocalQueue
from .queue import Queue


def make_queue(url: str, maxsize: int = 1000) -> Queue:
    scheme = urlparse(url).scheme or url
    if url in ("", "local"):
        return LocalQueue(maxsize)
    raise BadRequest(
        f"queue_url {url!r}: the {scheme!r} queue is not available in this build; use 'local'",
        details={"queue_url": url},
    )
