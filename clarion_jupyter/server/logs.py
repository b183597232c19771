"""Where the ``clarion_jupyter`` loggers write inside the Jupyter server.

``text`` reuses the server's own handlers, so Clarion's lines read like Jupyter's; ``json``
writes one JSON object per line, for log collectors. Either way the handlers are replaced,
not added, so starting the extension again (tests start many servers) never duplicates lines.
Every handler masks secret values (:class:`~..core.secrets.SecretLogFilter`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from ..core.secrets import SecretLogFilter, SecretMasker, SecretPolicy

LOGGER_NAME = "clarion_jupyter"
JUPYTER_LOG_TEMPLATE = "%(color)s[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s]%(end_color)s %(message)s"
"""The line template of Jupyter's own extension apps."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any exception text."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and masked) by a filter
            doc["exc_info"] = record.exc_text
        return json.dumps(doc, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, not the stream it was created with."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        """The stream is always the current stderr: nothing to set."""


def configure_logging(log_format: str, server_log: logging.Logger, secrets: SecretPolicy | None = None) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(server_log.getEffectiveLevel())
    if log_format == "json":
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        logger.handlers = [handler]
    else:
        logger.handlers = list(server_log.handlers)
    for handler in logger.handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretLogFilter)]:
            handler.removeFilter(old)
        handler.addFilter(SecretLogFilter(SecretMasker(secrets)))
