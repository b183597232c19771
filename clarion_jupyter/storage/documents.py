"""Agents and workflows in DuckDB: :class:`DuckDBDocumentStore`."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from ..core.errors import Conflict
from .database import Database
from .records import StoredDocument, utcnow
from .tables import aware, naive


class DuckDBDocumentStore:
    """Agents or workflows (``table``): JSON documents keyed by id."""

    def __init__(self, db: Database, table: str, with_source: bool = False) -> None:
        if table not in ("agents", "workflows"):
            raise ValueError(f"no document table {table!r}")
        self._db = db
        self._table = table
        self._columns = "id, doc, created_at, updated_at" + (", source" if with_source else "")

    def _from_row(self, row: tuple[Any, ...]) -> StoredDocument:
        return StoredDocument(
            id=row[0], doc=json.loads(row[1]), created_at=aware(row[2]), updated_at=aware(row[3]),
            source=row[4] if len(row) > 4 else None,
        )  # fmt: skip

    async def get(self, doc_id: str) -> StoredDocument | None:
        row = await self._db.read(
            lambda c: c.execute(f"SELECT {self._columns} FROM {self._table} WHERE id = ?", [doc_id]).fetchone()
        )
        return self._from_row(row) if row else None

    async def list(self) -> list[StoredDocument]:
        rows = await self._db.read(
            lambda c: c.execute(f"SELECT {self._columns} FROM {self._table} ORDER BY id").fetchall()
        )
        return [self._from_row(r) for r in rows]

    async def create(self, doc_id: str, doc: dict[str, Any], source: str | None = None) -> StoredDocument:
        return await self._db.write(self._upsert, doc_id, doc, source, False)

    async def replace(self, doc_id: str, doc: dict[str, Any], source: str | None = None) -> StoredDocument:
        return await self._db.write(self._upsert, doc_id, doc, source, True)

    def _upsert(
        self, cursor: duckdb.DuckDBPyConnection, doc_id: str, doc: dict[str, Any], source: str | None, replace: bool
    ) -> StoredDocument:
        now = utcnow()
        existing = cursor.execute(f"SELECT created_at FROM {self._table} WHERE id = ?", [doc_id]).fetchone()
        if existing and not replace:
            raise Conflict(f"{self._table[:-1]} '{doc_id}' already exists", details={"id": doc_id})
        created = aware(existing[0]) if existing else now
        values: list[Any] = [doc_id, json.dumps(doc), naive(created), naive(now)]
        if "source" in self._columns:
            values.append(source)
        marks = ", ".join("?" * len(values))
        cursor.execute(f"INSERT OR REPLACE INTO {self._table} ({self._columns}) VALUES ({marks})", values)
        return StoredDocument(id=doc_id, doc=doc, created_at=created, updated_at=now, source=source)

    async def delete(self, doc_id: str) -> bool:
        def _delete(cursor: duckdb.DuckDBPyConnection) -> bool:
            return (
                cursor.execute(f"DELETE FROM {self._table} WHERE id = ? RETURNING id", [doc_id]).fetchone() is not None
            )

        return await self._db.write(_delete)

    # -- many documents at once (an import) -------------------------------------------

    async def replace_many(self, docs: dict[str, dict[str, Any]]) -> None:
        """Create or replace every document in one statement and one transaction (a
        thousand single replaces cost a thousand commits); ``created_at`` stays as it was."""
        if not docs:
            return
        ids, texts = list(docs), [json.dumps(doc) for doc in docs.values()]
        sql = (
            f"INSERT INTO {self._table} (id, doc, created_at, updated_at) SELECT unnest($1), unnest($2), $3, $3"
            " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at"
        )
        await self._db.write(lambda cursor: cursor.execute(sql, [ids, texts, naive(utcnow())]))
