"""WorkflowService: saved workflow documents, validated and compiled on the way in."""

from __future__ import annotations

import asyncio
from typing import Any

from ..agent.v2runs import V2_RUN_WORKFLOW_ID
from ..core.documents import off_loop
from ..core.errors import Conflict, NotFound
from ..storage.protocols import RunStore, WorkflowStore
from ..storage.records import StoredDocument
from .models import Workflow, load_document
from .validation import WorkflowValidator

READ_ONLY_WORKFLOWS = frozenset({V2_RUN_WORKFLOW_ID})
"""Built-in workflows that record what happened elsewhere (the runs imported from Clarion v2):
saved so they list and filter like any, never edited or deleted through the API."""


def _writable(workflow_id: str) -> None:
    if workflow_id in READ_ONLY_WORKFLOWS:
        raise Conflict(
            f"workflow '{workflow_id}' is built in and read-only: it describes the runs imported from Clarion v2",
            details={"id": workflow_id},
        )


class WorkflowService:
    """Saved workflows: validated by the one judge on save, cached by id, and refused deletion while runs of them are active."""

    def __init__(self, store: WorkflowStore, runs: RunStore, validator: WorkflowValidator) -> None:
        self._store = store
        self._runs = runs
        self._validator = validator
        self._cache: dict[str, StoredDocument] = {}
        """Saved workflows by id. The engine is the store's only writer, so this stays true."""

    def validate(self, source: str | bytes | dict[str, Any] | Workflow) -> Workflow:
        return self._validator.compile(source).workflow

    async def _validated(self, source: str | bytes | dict[str, Any]) -> Workflow:
        """Saving is rare and a document can be megabytes of YAML: parsed and compiled in a thread."""
        return await asyncio.to_thread(self.validate, source)

    async def list(self) -> list[StoredDocument]:
        return await self._store.list()

    async def get(self, workflow_id: str) -> StoredDocument:
        stored = self._cache.get(workflow_id) or await self._store.get(workflow_id)
        if stored is None:
            raise NotFound(f"workflow '{workflow_id}' not found", details={"id": workflow_id})
        self._cache[workflow_id] = stored
        return stored

    async def create(self, source: str | bytes | dict[str, Any]) -> StoredDocument:
        workflow = await self._validated(source)
        stored = self._cache[workflow.id] = await self._store.create(
            workflow.id, workflow.to_document(), _source_text(source)
        )
        return stored

    async def replace(self, workflow_id: str, source: str | bytes | dict[str, Any]) -> StoredDocument:
        _writable(workflow_id)
        data = await off_loop(_size(source), load_document, source)
        workflow = await self._validated({**data, "id": workflow_id})
        await self.get(workflow_id)
        stored = self._cache[workflow_id] = await self._store.replace(
            workflow_id, workflow.to_document(), _source_text(source)
        )
        return stored

    async def install(self, doc: dict[str, Any]) -> None:
        """Save a built-in workflow unless the store already has this very document."""
        workflow = self.validate(doc)
        stored = await self._store.get(workflow.id)
        if stored is not None and stored.doc == workflow.to_document():
            self._cache[workflow.id] = stored
            return
        save = self._store.create if stored is None else self._store.replace
        self._cache[workflow.id] = await save(workflow.id, workflow.to_document(), None)

    async def delete(self, workflow_id: str) -> None:
        _writable(workflow_id)
        active = await self._runs.count_active(workflow_id)
        if active:
            raise Conflict(
                f"workflow '{workflow_id}' has {active} active run(s); cancel them or wait before deleting",
                details={"id": workflow_id, "active_runs": active},
            )
        self._cache.pop(workflow_id, None)
        if not await self._store.delete(workflow_id):
            raise NotFound(f"workflow '{workflow_id}' not found", details={"id": workflow_id})


def _source_text(source: str | bytes | dict[str, Any]) -> str | None:
    if isinstance(source, bytes):
        return source.decode("utf-8", errors="replace")
    return source if isinstance(source, str) else None


def _size(source: str | bytes | dict[str, Any]) -> int:
    return len(source) if isinstance(source, (str, bytes)) else 0
