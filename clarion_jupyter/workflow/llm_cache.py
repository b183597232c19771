"""The LLM cache, engine side: whether a step's call may be answered from it, the lookup before
its job goes to a worker, and the entry stored as soon as the reply comes back.

Whether a call is cached is decided by the most specific choice that was made: the step's
``with.cache``, else the run's ``cache`` (``%%clarion --cache``, ``clarion run --cache``, the
run request's ``cache``), else the agent's ``cache``, else the server's ``llm_cache`` trait
(off by default). So a step's ``with.cache: false`` beats a run's ``--cache``, and a run's
``--no-cache`` beats an agent's ``cache: true``.

The engine does both ends, so that workers need no database (a ``clarion worker`` on another
machine has no DuckDB file): before a job is sent, the task computes the key of the request
it would make (:meth:`~clarion_jupyter.task.base.Task.cache_key`, against the engine's
workspace) and the engine looks it up; the job carries ``{"key"}``, or ``{"key", "reply"}`` on
a hit, in ``resources["llm_cache"]``. The worker's task checks that its own request has that
key (a worker whose workspace reads differently computes another and calls the provider),
answers from the reply or calls, and says ``cached`` and ``cache_key`` in its output. When a
fresh reply comes back, the engine stores it before it records the step's success, so a
crash between the two leaves the reply in the cache, and the attempt that runs again after
the restart is answered from it.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core.errors import BadRequest
from ..core.workspace import Workspace
from ..llm.cache import CACHE_RESOURCE
from ..storage.llm_cache import CacheEntry
from ..storage.protocols import LLMCacheStore
from ..storage.records import utcnow
from ..task.base import Task, TaskSettings
from ..task.queue import Job
from ..task.registry import TaskRegistry

log = logging.getLogger(__name__)

_AGE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_REPLY_FIELDS = ("text", "model", "usage", "cost_usd")


class CacheStats(BaseModel):
    """What the LLM cache holds: ``GET /api/v3/cache`` and ``clarion cache stats``."""

    entries: int
    bytes: int
    max_bytes: int
    """The cap (``llm_cache_max_bytes``): past it, the oldest entries are evicted."""
    oldest: datetime | None = None
    newest: datetime | None = None
    agents: dict[str, int]
    """Entries by the agent whose calls stored them."""
    server_default: bool
    """The server's ``llm_cache``: whether calls that nothing else decides are cached."""


class LLMCache:
    """The engine's side of the LLM cache: the decision, the lookup before dispatch, the store after."""

    def __init__(
        self,
        store: LLMCacheStore,
        registry: TaskRegistry,
        workspace: Workspace,
        settings: TaskSettings,
        *,
        default: bool,
        max_bytes: int,
    ) -> None:
        self._store = store
        self._registry = registry
        self._workspace = workspace
        self._settings = settings
        self.default = default
        self.max_bytes = max_bytes

    def enabled(self, job: Job, run_cache: bool | None) -> bool:
        """The step's ``with.cache``, else the run's, else the agent's, else the server's."""
        agent = job.resources.get("agent") or {}
        for choice in (job.config.get("cache"), run_cache, agent.get("cache")):
            if isinstance(choice, bool):
                return choice
        return self.default

    async def look_up(self, job: Job, run_cache: bool | None) -> None:
        """With the cache on for ``job``, attach its key and any stored reply to it. Whatever
        stands in the way (a config or prompt the worker will refuse, the database) leaves the
        job as it is: the worker then calls the provider, or reports the problem itself."""
        task_type = self._registry.get(job.task)
        if task_type is None or task_type.cache_key is Task.cache_key or not self.enabled(job, run_cache):
            return
        try:
            config = task_type.Config.model_validate(job.config)
            key = await task_type().cache_key(config, job.context(self._workspace, self._settings))
            entry = await self._store.get(key) if key is not None else None
        except ValidationError:
            return
        except Exception:  # the task's own failure (a missing variable, a file), or the database's
            log.debug("no cache lookup for step %s", job.id, exc_info=True)
            return
        if key is not None:
            job.resources[CACHE_RESOURCE] = {"key": key} | ({"reply": entry.reply} if entry else {})

    async def remember(self, job: Job | None, output: Any) -> None:
        """Store a fresh reply that came back for a job sent with the cache on. A store that
        fails costs the cache an entry, never the step its result."""
        if job is None or CACHE_RESOURCE not in job.resources:
            return
        if not isinstance(output, dict) or output.get("cached") is not False or not output.get("cache_key"):
            return
        reply = {name: output.get(name) for name in _REPLY_FIELDS}
        entry = CacheEntry(str(output["cache_key"]), str(job.config.get("agent")), str(output.get("model")), reply)
        try:
            evicted = await self._store.put(entry, self.max_bytes)
        except Exception:
            log.warning("the reply of step %s could not be cached", job.id, exc_info=True)
            return
        if evicted:
            log.info("LLM cache over %d bytes: evicted the %d oldest entries", self.max_bytes, evicted)

    async def clear(self, *, agent_id: str | None = None, older_than: str | None = None) -> int:
        """Delete the entries of ``agent_id`` and/or older than ``older_than`` (``7d``, ``12h``,
        ``30m``, ``45s``, ``2w`` or seconds); neither: every entry. How many were deleted."""
        before = utcnow() - parse_age(older_than) if older_than is not None else None
        return await self._store.clear(agent_id=agent_id, before=before)

    async def stats(self) -> CacheStats:
        return CacheStats(**await self._store.stats(), max_bytes=self.max_bytes, server_default=self.default)


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or plain seconds; :class:`BadRequest` naming ``older_than``."""
    match = _AGE.match(text)
    if match is None:
        raise BadRequest(
            f"older_than {text!r} is not an age: write it as a number with s, m, h, d or w (e.g. 7d, 12h)",
            details={"field": "older_than", "value": text},
        )
    return timedelta(seconds=float(match.group("n")) * _UNIT_S[match.group("unit")])
