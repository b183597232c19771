"""The embedded storage, :class:`DuckDBStorage`: one DuckDB file holding the run store, the
agent and workflow stores, and the history SQL over them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .database import DEFAULT_MEMORY_LIMIT, Database
from .documents import DuckDBDocumentStore
from .llm_cache import DuckDBLLMCache
from .query import MAX_BYTES, MAX_ROWS, TIMEOUT_S, HistorySandbox, QueryResult
from .runs import DuckDBRunStore


class DuckDBStorage:
    """The embedded storage: one DuckDB file, opened read-write by this process alone."""

    kind = "duckdb"

    def __init__(self, path: str | Path, memory_limit: str = DEFAULT_MEMORY_LIMIT) -> None:
        """``memory_limit``: what DuckDB's buffer pool may hold (see :data:`.database.DEFAULT_MEMORY_LIMIT`)."""
        self.path = str(path)
        self._db = Database(self.path, memory_limit=memory_limit)
        self.runs = DuckDBRunStore(self._db)
        self.agents = DuckDBDocumentStore(self._db, "agents")
        self.workflows = DuckDBDocumentStore(self._db, "workflows", with_source=True)
        self.llm_cache = DuckDBLLMCache(self._db)
        self._sandbox: HistorySandbox | None = None
        self._sandbox_made = threading.Lock()

    async def open(self) -> None:
        try:
            await self._db.start()
            await self.runs.recover()
        except BaseException:
            await self._db.close()  # release the threads; the file was never opened
            raise

    async def close(self) -> None:
        await self.runs.close()
        await self._db.close()  # waits for running queries, whose streams read the database
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    async def query(
        self, sql: str, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_BYTES
    ) -> QueryResult:
        """The journal is projected first, so the views see every committed run; the statement
        runs in the sandbox, on the query threads."""
        await self.runs.project()
        return await self._db.query(self._run_query, sql, max_rows, max_bytes, timeout_s)

    def _run_query(self, sql: str, max_rows: int, max_bytes: int, timeout_s: float) -> QueryResult:
        """On a query thread: the sandbox is made on the first query (a CLI command or a kernel
        that never queries does not pay for it)."""
        with self._sandbox_made:
            if self._sandbox is None:
                self._sandbox = HistorySandbox(self._db.cursor)
        return self._sandbox.run(sql, max_rows, max_bytes, timeout_s)

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "unprojected_commits": self.runs.unprojected,
            "projection_error": self.runs.projection_error,
        }
