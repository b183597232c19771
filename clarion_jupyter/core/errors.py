"""Errors that cross domain boundaries.

Every error a user can cause is a :class:`ClarionError` carrying a stable ``code`` and the
HTTP status the API maps it to, so the REST layer, the CLI and the notebook all report the
same thing the same way without knowing where it came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document: where (``loc``) and why (``message``)."""

    loc: str
    message: str
    step: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class ClarionError(Exception):
    """Base of every error that is the caller's to fix (bad input, unknown id, conflict)."""

    code = "error"
    status = 400

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ClarionError):
    """The request itself is malformed (a body that is not JSON, a bad query argument): 400."""

    code = "bad_request"
    status = 400


class Forbidden(ClarionError):
    """Authenticated, but not allowed to do this (e.g. run shell steps without terminal rights)."""

    code = "forbidden"
    status = 403


class NotFound(ClarionError):
    """No such run, agent or workflow: 404, so callers can tell a typo from a failure."""

    code = "not_found"
    status = 404


class Conflict(ClarionError):
    """The request is sound but the state forbids it now (decided already, run ended, id taken): 409."""

    code = "conflict"
    status = 409


class ValidationFailed(ClarionError):
    """A document is invalid; ``problems`` lists every problem found, not just the first."""

    code = "invalid"
    status = 422

    def __init__(self, problems: list[Problem], what: str = "workflow") -> None:
        self.problems = problems
        count = len(problems)
        summary = "; ".join(str(p) for p in problems[:5])
        more = f" (and {count - 5} more)" if count > 5 else ""
        super().__init__(
            f"invalid {what}: {count} problem{'s' if count != 1 else ''}: {summary}{more}",
            details=[p.as_dict() for p in problems],
        )


class DatabaseLocked(ClarionError):
    """The DuckDB file is held by another process (the engine is its only writer)."""

    code = "database_locked"
    status = 409


class QueueUnavailable(ClarionError):
    """The queue's broker (Redis, NATS) cannot be reached: nothing can run until it can."""

    code = "queue_unavailable"
    status = 503


class StorageUnavailable(ClarionError):
    """The database cannot take writes now (a full disk, a failing device): new work is refused
    at once rather than accepted and lost, and the engine recovers by itself once it can write."""

    code = "storage_unavailable"
    status = 503
