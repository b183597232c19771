"""The LLM call cache in the DuckDB file: replies by key, a size cap, clearing by agent and age.

An entry is what a provider answered (text, model, usage, cost) for the request whose hash
is its key (see :mod:`clarion_jupyter.llm.cache`); nothing in it is a key or a secret (the
reply's text was masked by the worker that received it). Every statement goes through the
database's threads: lookups through the reader cursors, writes through the writer thread,
each in its own transaction, so an entry is durable as soon as :meth:`DuckDBLLMCache.put`
returns, before the step that asked is committed. The table is the cache's alone: no other
write touches its rows, so these transactions never conflict with the run log's.

The cap is on the bytes of the stored replies: a put that takes the total over it evicts the
oldest entries (by the time they were stored) until the rest fit.

Each DuckDB read is a trip to a reader thread and back (half a millisecond, and several on a
busy machine, where the loop waits for the GIL), so the entries read or stored lately are
also kept in memory (:data:`MEMORY_BYTES` of them, least recently used out first): a hit on
one of those costs no query. The engine is the file's only writer and every delete goes
through this store, so what is in memory never outlives its row.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from .database import Database
from .records import utcnow

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""The cap when the host sets none (``ClarionExtension.llm_cache_max_bytes``): thousands of
long replies, a small part of a run history's file."""
MEMORY_BYTES = 32 * 1024 * 1024
"""How many bytes of replies are kept in memory as well; a reply over an eighth of it is not."""

_GET = "SELECT agent_id, model, reply, created_at FROM llm_cache WHERE key = $1"
_INSERT = (
    "INSERT INTO llm_cache (key, agent_id, model, reply, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT DO NOTHING RETURNING key"
)
"""A key stored already keeps its first reply: a second one for the same request came from
a call that missed while the first was in flight, and says nothing newer."""
_TOTAL = "SELECT coalesce(sum(bytes), 0) FROM llm_cache"
_EVICT = (
    "DELETE FROM llm_cache WHERE key IN (SELECT key FROM (SELECT key, sum(bytes) OVER (ORDER BY created_at DESC,"
    " key DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS kept FROM llm_cache) WHERE kept > $1)"
    " RETURNING key"
)
"""Keep the newest entries whose bytes together fit the cap; delete every older one."""
_STATS = "SELECT count(*), coalesce(sum(bytes), 0), min(created_at), max(created_at) FROM llm_cache"
_BY_AGENT = "SELECT agent_id, count(*) FROM llm_cache GROUP BY agent_id ORDER BY agent_id"


@dataclass(slots=True)
class CacheEntry:
    """One cached reply: what the provider answered for the request whose hash is ``key``."""

    key: str
    agent_id: str
    model: str
    reply: dict[str, Any]
    """The provider's answer as the task received it: ``text``, ``model``, ``usage``, ``cost_usd``."""
    created_at: datetime = field(default_factory=utcnow)


class _Recent:
    """The entries read or stored lately, by key, within ``max_bytes``, least recently used out first.
    ``generation`` counts deletes, so a read that a delete overtook does not put its row back."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[CacheEntry, int]] = OrderedDict()
        self._bytes = 0
        self.generation = 0

    def get(self, key: str) -> CacheEntry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return dataclasses.replace(found[0], reply=dict(found[0].reply))

    def add(self, entry: CacheEntry, size: int) -> None:
        if size > self._max_bytes // 8:
            return
        self.drop([entry.key], deleted=False)
        self._entries[entry.key] = (entry, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, oldest) = self._entries.popitem(last=False)
            self._bytes -= oldest

    def drop(self, keys: list[str], deleted: bool = True) -> None:
        for key in keys:
            found = self._entries.pop(key, None)
            if found is not None:
                self._bytes -= found[1]
        if deleted:
            self.generation += 1


class DuckDBLLMCache:
    """The cache's entries in the engine's DuckDB file (the ``llm_cache`` table), the recent ones in memory too."""

    def __init__(self, db: Database, memory_bytes: int = MEMORY_BYTES) -> None:
        self._db = db
        self._recent = _Recent(memory_bytes)

    async def get(self, key: str) -> CacheEntry | None:
        if (entry := self._recent.get(key)) is not None:
            return entry
        generation = self._recent.generation
        row = await self._db.read(lambda cursor: cursor.execute(_GET, [key]).fetchone())
        if row is None:
            return None
        agent_id, model, reply, created_at = row
        entry = CacheEntry(key, agent_id, model, json.loads(reply), created_at.replace(tzinfo=UTC))
        if generation == self._recent.generation:
            self._recent.add(entry, len(reply))
        return dataclasses.replace(entry, reply=dict(entry.reply))

    async def put(self, entry: CacheEntry, max_bytes: int) -> int:
        """Store ``entry`` (committed when this returns); answers how many old entries the cap evicted."""
        text = json.dumps(entry.reply, separators=(",", ":"), default=str)
        inserted, evicted = await self._db.write(self._put, entry, text, max_bytes)
        self._recent.drop(evicted)
        if inserted and entry.key not in evicted:
            self._recent.add(dataclasses.replace(entry, reply=json.loads(text)), len(text))
        return len(evicted)

    @staticmethod
    def _put(cursor: duckdb.DuckDBPyConnection, entry: CacheEntry, text: str, max_bytes: int) -> tuple[bool, list[str]]:
        created = entry.created_at.astimezone(UTC).replace(tzinfo=None)
        row = [entry.key, entry.agent_id, entry.model, text, len(text.encode()), created]
        inserted = bool(cursor.execute(_INSERT, row).fetchall())
        (total,) = cursor.execute(_TOTAL).fetchone()
        evicted = [key for (key,) in cursor.execute(_EVICT, [max_bytes]).fetchall()] if total > max_bytes else []
        return inserted, evicted

    async def clear(self, *, agent_id: str | None = None, before: datetime | None = None) -> int:
        """Delete the entries of ``agent_id`` and/or stored before ``before`` (neither: all); how many."""
        clauses, params = [], []
        if agent_id is not None:
            params.append(agent_id)
            clauses.append(f"agent_id = ${len(params)}")
        if before is not None:
            params.append(before.astimezone(UTC).replace(tzinfo=None))
            clauses.append(f"created_at < ${len(params)}")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"DELETE FROM llm_cache{where} RETURNING key"
        deleted = await self._db.write(lambda cursor: [key for (key,) in cursor.execute(sql, params).fetchall()])
        self._recent.drop(deleted)
        return len(deleted)

    async def stats(self) -> dict[str, Any]:
        """How many entries, their bytes, the oldest and newest, and the entries of each agent."""
        return await self._db.read(self._stats)

    @staticmethod
    def _stats(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        entries, size, oldest, newest = cursor.execute(_STATS).fetchone()
        return {
            "entries": entries,
            "bytes": int(size),
            "oldest": oldest.replace(tzinfo=UTC) if oldest else None,
            "newest": newest.replace(tzinfo=UTC) if newest else None,
            "agents": {agent_id: count for agent_id, count in cursor.execute(_BY_AGENT).fetchall()},
        }
