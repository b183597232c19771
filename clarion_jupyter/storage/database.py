"""The DuckDB file: opening it, migrating it, and running statements off the event loop.

DuckDB allows one read-write process per file, and each statement has a fixed cost of
around a millisecond, so every call goes through a thread: writes through one dedicated
writer thread (so its transactions never interleave), new runs' single-statement commits
through a submitter thread and long maintenance transactions through a third (so that
neither waits behind the other writes), reads through a small pool of reader threads,
each with its own cursor, and users' history queries through a pool of their own (so the
engine's reads never queue behind a slow query).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from ..core.errors import DatabaseLocked, StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<prog>.+?) \(PID (?P<pid>\d+)\)")
DEFAULT_MEMORY_LIMIT = "1GB"
"""What DuckDB's buffer pool may hold for the engine's file (``ClarionExtension.db_memory_limit``).
DuckDB's own default is 80 % of the machine's RAM, and it keeps every page it ever read or wrote
until that fills: the history grows all day (every table page a history query or an insert
touched, and the primary keys' indexes), so a notebook server's memory would grow with it.
A gigabyte holds the hot tables of a history of a million runs; past it, pages are evicted and
read from the file again."""
MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|[KMGT]i?B)\s*$", re.IGNORECASE)
"""A size as DuckDB reads one: a number and a unit (``512MB``, ``1.5GiB``)."""


def default_db_path() -> Path:
    """``$CLARION_DB``, else the file in Jupyter's data dir that the server extension uses."""
    from jupyter_core.paths import jupyter_data_dir

    env = os.environ.get("CLARION_DB")
    return Path(env).expanduser() if env else Path(jupyter_data_dir()) / "clarion" / "clarion.duckdb"


def migrations() -> list[tuple[int, str, str]]:
    """Numbered SQL migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("clarion_jupyter.storage").joinpath("migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def migrate(con: duckdb.DuckDBPyConnection, target: int | None = None) -> list[int]:
    """Apply pending migrations (up to ``target``) in order, each in its own transaction."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    applied = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    done = []
    for version, name, sql in migrations():
        if version in applied or (target is not None and version > target):
            continue
        con.execute("BEGIN")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [version, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        log.info("applied migration %04d_%s", version, name)
        done.append(version)
    return done


def check_memory_limit(value: str) -> str:
    """``value`` if DuckDB can read it as a size, else a ``ValueError`` that says what one looks like."""
    if not MEMORY_SIZE.match(value):
        raise ValueError(f"{value!r} is not a size: give a number and a unit, e.g. 512MB or 2GB")
    return value.strip()


def connect(path: str | Path, memory_limit: str = DEFAULT_MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """Open the file read-write with its buffer pool bounded, explaining a lock held by another process."""
    if str(path) != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), config={"memory_limit": check_memory_limit(memory_limit)})
    except duckdb.IOException as exc:
        match = _LOCK_HOLDER.search(str(exc))
        if not match:
            raise
        holder = f"{match.group('prog')} (PID {match.group('pid')})"
        raise DatabaseLocked(
            f"the Clarion database {path} is in use by another process: {holder}. "
            "Only one process may open it at a time (the engine is its only writer). "
            "Stop that process or wait for it to finish, talk to the running server over "
            "its API, or choose another file with --db PATH or CLARION_DB.",
            details={"path": str(path), "pid": int(match.group("pid"))},
        ) from None


class Database:
    """The one DuckDB connection of the process, with a writer thread, a submission thread, reader
    cursors and the history queries' own threads, so no query runs on the event loop, writes never
    interleave, and a slow history query never holds up the engine's reads."""

    def __init__(
        self, path: str | Path, readers: int = 2, queries: int = 2, memory_limit: str = DEFAULT_MEMORY_LIMIT
    ) -> None:
        self.path = str(path)
        self.memory_limit = check_memory_limit(memory_limit)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="clarion-db-writer")
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="clarion-db-submitter")
        self._maintainer = ThreadPoolExecutor(1, thread_name_prefix="clarion-db-maintainer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="clarion-db-reader")
        self._queries = ThreadPoolExecutor(queries, thread_name_prefix="clarion-db-query")
        self._local = threading.local()

    def open(self) -> None:
        """Connect and migrate; blocking, so hosts call it through :meth:`start`."""
        self._con = connect(self.path, self.memory_limit)
        migrate(self._con)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, self.open)

    async def close(self) -> None:
        """Let every other thread finish its call first: DuckDB refuses to close a connection
        that a reader or the maintenance thread is still using."""
        loop = asyncio.get_running_loop()
        for pool in (self._queries, self._readers, self._maintainer, self._submitter):
            await loop.run_in_executor(None, pool.shutdown, True)
        await loop.run_in_executor(self._writer, self._close)
        self._writer.shutdown(wait=True)

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("database is not open")
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._con.cursor()
        return cursor

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the caller's own (who closes it), for reads on threads outside the pools."""
        if self._con is None:
            raise RuntimeError("database is not open")
        return self._con.cursor()

    async def query(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the query threads: as many queries run at once as there are
        threads, the rest wait their turn there, and none takes a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._queries, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._cursor(), *args))

    async def write(self, fn: Callable[..., T], *args: Any, attempts: int = 5) -> T:
        """Run ``fn(cursor, *args)`` in one transaction, retrying DuckDB write conflicts."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._transaction, fn, args, attempts)

    async def write_one(self, sql: str, params: list[Any], *, submission: bool = False) -> None:
        """One statement in a transaction of its own (DuckDB's autocommit): a single call
        into DuckDB, where BEGIN and COMMIT take two more, each giving up the GIL and
        waiting to take it back from the event loop. A ``submission`` runs on the submitter
        thread, concurrently with the writer's statements (DuckDB appends do not conflict)."""
        loop = asyncio.get_running_loop()
        thread = self._submitter if submission else self._writer
        await loop.run_in_executor(thread, lambda: self._cursor().execute(sql, params))

    async def maintain(self, fn: Callable[..., T], *args: Any, attempts: int = 5) -> T:
        """Like :meth:`write`, but on a thread of its own, concurrently with the writer's
        transactions: for work that takes long and can wait. DuckDB runs concurrent
        transactions optimistically, so ``fn`` must not change rows that writes change."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._maintainer, self._transaction, fn, args, attempts)

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...], attempts: int) -> T:
        cursor = self._cursor()
        for attempt in range(1, attempts + 1):
            cursor.begin()
            try:
                result = fn(cursor, *args)
                cursor.commit()
                return result
            except duckdb.TransactionException as exc:
                _rollback(cursor)
                if not is_conflict(exc):
                    raise unwritable(exc) from exc
                if attempt == attempts:
                    raise
                log.debug("write conflict (attempt %d): %s", attempt, exc)
                time.sleep(0.005 * 2**attempt)
            except duckdb.IOException as exc:
                _rollback(cursor)
                raise unwritable(exc) from exc
            except BaseException:
                _rollback(cursor)
                raise
        raise AssertionError("unreachable")


def is_conflict(exc: duckdb.TransactionException) -> bool:
    """A write-write conflict with a concurrent transaction (worth retrying at once), as opposed
    to a commit the file could not take (a full disk: DuckDB reports both as TransactionException)."""
    return "conflict" in str(exc).lower()


def unwritable(exc: BaseException) -> StorageUnavailable:
    """A write the file could not take, as the API's 503 with the reason and what to do."""
    reason = f"{type(exc).__name__}: {exc}"
    return StorageUnavailable(
        f"the Clarion database cannot store this right now ({reason}): free disk space where it lives and try again",
        details={"reason": reason},
    )


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it)."""
    with contextlib.suppress(duckdb.Error):
        cursor.rollback()
