"""Storage interfaces. Domains depend on these; :mod:`.duckdb_storage` implements them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .llm_cache import CacheEntry
from .query import QueryResult
from .records import Batch, Event, RunRecord, StepRecord, StoredDocument


class DocumentStore(Protocol):
    """Agents and workflows: small documents keyed by id."""

    async def get(self, doc_id: str) -> StoredDocument | None: ...
    async def list(self) -> list[StoredDocument]: ...
    async def create(self, doc_id: str, doc: dict, source: str | None = None) -> StoredDocument: ...
    async def replace(self, doc_id: str, doc: dict, source: str | None = None) -> StoredDocument: ...
    async def delete(self, doc_id: str) -> bool: ...
    async def replace_many(self, docs: dict[str, dict]) -> None:
        """Create or replace several documents (by id) in one transaction."""


AgentStore = DocumentStore
WorkflowStore = DocumentStore


@dataclass(slots=True)
class RunPage:
    """One page of stored run records, newest first, and the cursor of the next."""

    runs: list[RunRecord]
    next_cursor: str | None


@dataclass(slots=True)
class ActiveRun:
    """What resuming a run needs: its record, every attempt so far, and the last event seq."""

    run: RunRecord
    steps: list[StepRecord]
    last_seq: int


class RunStore(Protocol):
    """Where runs, steps and events are durable; the engine writes only through it, so another database could stand behind it."""

    async def recover(self) -> None:
        """Make stored state whole after a stop or a crash, before the first write."""

    async def close(self) -> None:
        """Finish any deferred storage work; nothing is written after this."""

    async def write(self, batch: Batch, *, submission: bool = False) -> None:
        """Persist a batch atomically (one transaction: one flush for many transitions).
        Submissions (new runs, nothing else) may commit concurrently with other batches."""

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None: ...
    async def last_seq(self, run_id: str) -> int:
        """The seq of the run's newest stored event (0: none), where a follower resumes from."""

    async def list_runs(
        self, workflow_id: str | None, status: str | None, limit: int, cursor: str | None
    ) -> RunPage: ...
    async def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[Event]: ...
    async def find_idempotent(self, workflow_id: str, key: str) -> str | None: ...
    async def active_runs(self) -> list[ActiveRun]: ...
    async def count_active(self, workflow_id: str) -> int: ...

    async def import_finished(self, runs: list[RunRecord], steps: list[StepRecord], events: list[Event]) -> int:
        """Store runs that finished elsewhere (Clarion v2 history), with their steps and events,
        in one transaction; runs already stored are left as they are. Returns how many were new."""

    async def delete_finished(
        self, *, run_id: str | None = None, workflow_id: str | None = None, status: str | None = None
    ) -> list[str]:
        """Delete the finished runs matching every filter given (none: every finished run),
        with their step attempts, events and journal rows; answers the ids deleted."""

    async def existing_runs(self, run_ids: list[str]) -> set[str]:
        """Which of ``run_ids`` are stored."""

    async def run_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` stored run ids that begin with ``prefix``, in order (how a short id is resolved)."""


class LLMCacheStore(Protocol):
    """Cached LLM replies by key (:mod:`.llm_cache`); every write is durable when it returns."""

    async def get(self, key: str) -> CacheEntry | None: ...
    async def put(self, entry: CacheEntry, max_bytes: int) -> int:
        """Store an entry, then evict the oldest while the entries' bytes pass ``max_bytes``; how many went."""

    async def clear(self, *, agent_id: str | None = None, before: datetime | None = None) -> int:
        """Delete the entries of ``agent_id`` and/or stored before ``before`` (neither: every one); how many."""

    async def stats(self) -> dict[str, Any]:
        """``entries``, ``bytes``, ``oldest``, ``newest`` and ``agents`` (entries by agent id)."""


class Storage(Protocol):
    """Everything the engine keeps: its run store, its agent and workflow stores, and the
    read-only history SQL. :class:`~.duckdb_storage.DuckDBStorage` is the one implementation;
    another (a server database) plugs in here without touching ``workflow/``."""

    path: str
    """Where it keeps things (a file, a URL), for messages, health and the CLI's server lookup."""
    runs: RunStore
    agents: DocumentStore
    workflows: DocumentStore
    llm_cache: LLMCacheStore

    async def open(self) -> None:
        """Open and make stored state whole (after a crash too), before any write."""

    async def close(self) -> None:
        """Finish deferred work and release everything; nothing is written after this."""

    async def query(self, sql: str, max_rows: int, timeout_s: float, max_bytes: int) -> QueryResult:
        """One read-only statement over the history views, seeing every committed run; at
        most ``max_rows`` rows and ``max_bytes`` of JSON come back."""

    def health(self) -> dict[str, Any]:
        """The storage's part of ``GET /api/v3/health`` (its kind, backlog, last error)."""
