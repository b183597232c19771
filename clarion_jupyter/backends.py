"""Where the CLI's and the notebook's commands run: the embedded engine, or the Jupyter server
that holds the database.

DuckDB lets one process open the database, and while JupyterLab runs that process is its
server. Rather than stopping at the lock, :func:`open_backend` then finds the server whose
extension serves that very file and goes through its API, so every command works (and its
runs show up in the sidebar) whether or not JupyterLab is open. Both backends answer in the
engine's own types, so a command is written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .agent.importer import AGENT_FILE_SUFFIXES, source_files
from .agent.migration import DATABASE_SUFFIXES
from .agent.models import Agent
from .client import ClarionAPIError, Client, find_server
from .core.errors import Conflict, DatabaseLocked, NotFound
from .storage.records import Event
from .workflow.agent_run import AgentRunRequest
from .workflow.engine import Engine
from .workflow.models import Workflow, WorkflowRun


class Backend(Protocol):
    description: str
    """Which backend this is, for ``--verbose`` and the notebook's widget."""

    async def submit(self, workflow: Workflow, inputs: dict[str, Any]) -> str: ...
    async def submit_saved(self, workflow_id: str, inputs: dict[str, Any]) -> str: ...
    def subscribe(self, run_id: str, since: int = 0) -> AsyncIterator[Event]: ...
    async def get_run(self, run_id: str) -> WorkflowRun: ...
    async def wait(self, run_id: str) -> WorkflowRun: ...
    async def cancel(self, run_id: str) -> None: ...
    async def list_runs(
        self, workflow_id: str | None, status: str | None, limit: int
    ) -> tuple[list[WorkflowRun], str | None]: ...
    async def events(self, run_id: str) -> list[Event]: ...
    async def decide(self, run_id: str, step_key: str, approve: bool, comment: str | None) -> dict[str, Any]: ...
    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str: ...
    async def list_agents(self) -> list[Agent]: ...
    async def import_agents(self, path: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Import what Clarion v2 left at ``path``; the report, as ``POST /api/v3/agents/import`` answers."""

    async def interrupted(self) -> list[str]:
        """Runs a crash left unfinished that are going on again (the embedded engine resumes them)."""

    async def close(self) -> None: ...

    # What the notebook needs besides: saving workflows and agents, listing workflows, SQL.
    async def save_workflow(self, workflow: Workflow) -> None: ...
    async def query(self, sql: str) -> dict[str, Any]: ...
    async def save_agent(self, doc: dict[str, Any]) -> None: ...
    async def list_workflows(self) -> list[dict[str, Any]]: ...


class EmbeddedBackend:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.description = f"an embedded engine on {engine.db_path}"

    async def submit(self, workflow: Workflow, inputs: dict[str, Any]) -> str:
        return await self.engine.submit(workflow, inputs)

    async def submit_saved(self, workflow_id: str, inputs: dict[str, Any]) -> str:
        return await self.engine.submit_saved(workflow_id, inputs)

    def subscribe(self, run_id: str, since: int = 0) -> AsyncIterator[Event]:
        return self.engine.subscribe(run_id, since)

    async def get_run(self, run_id: str) -> WorkflowRun:
        return await self.engine.get_run(run_id)

    async def wait(self, run_id: str) -> WorkflowRun:
        return await self.engine.wait(run_id)

    async def cancel(self, run_id: str) -> None:
        await self.engine.cancel(run_id)
        await self.engine.wait(run_id)

    async def list_runs(
        self, workflow_id: str | None, status: str | None, limit: int
    ) -> tuple[list[WorkflowRun], str | None]:
        return await self.engine.list_runs(workflow_id=workflow_id, status=status, limit=limit)

    async def events(self, run_id: str) -> list[Event]:
        return await self.engine.events(run_id)

    async def decide(self, run_id: str, step_key: str, approve: bool, comment: str | None) -> dict[str, Any]:
        return await self.engine.decide(run_id, step_key, approve, by=_local_user(), comment=comment)

    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str:
        return await self.engine.run_agent(agent_id, request)

    async def list_agents(self) -> list[Agent]:
        return await self.engine.list_agents()

    async def import_agents(self, path: str, *, dry_run: bool = False) -> dict[str, Any]:
        return (await self.engine.import_v2(path, dry_run=dry_run)).as_dict()

    async def interrupted(self) -> list[str]:
        return list(self.engine.resumed)

    async def close(self) -> None:
        await self.engine.stop()

    async def save_workflow(self, workflow: Workflow) -> None:
        try:
            await self.engine.create_workflow(workflow.to_document())
        except Conflict:
            await self.engine.replace_workflow(workflow.id, workflow.to_document())

    async def query(self, sql: str) -> dict[str, Any]:
        return (await self.engine.query(sql)).as_dict()

    async def save_agent(self, doc: dict[str, Any]) -> None:
        try:
            await self.engine.create_agent(doc)
        except Conflict:
            await self.engine.replace_agent(doc["id"], doc)

    async def list_workflows(self) -> list[dict[str, Any]]:
        return [stored.doc for stored in await self.engine.list_workflows()]


class ServerBackend:
    """The same operations through a running server's v3 API."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.description = f"the Jupyter server at {client.url}"

    async def submit(self, workflow: Workflow, inputs: dict[str, Any]) -> str:
        """Runs need a saved workflow on the server: the file is saved (replacing that id) first."""
        await self.save_workflow(workflow)
        return await self.client.run(workflow.id, inputs)

    async def submit_saved(self, workflow_id: str, inputs: dict[str, Any]) -> str:
        return await self.client.run(workflow_id, inputs)

    async def subscribe(self, run_id: str, since: int = 0) -> AsyncIterator[Event]:
        async for event in self.client.subscribe(run_id, since):
            yield _event(event)

    async def get_run(self, run_id: str) -> WorkflowRun:
        return WorkflowRun.model_validate(await self.client.get_run(run_id))

    async def wait(self, run_id: str) -> WorkflowRun:
        return WorkflowRun.model_validate(await self.client.wait(run_id))

    async def cancel(self, run_id: str) -> None:
        await self.client.cancel(run_id)
        await self.client.wait(run_id)

    async def list_runs(
        self, workflow_id: str | None, status: str | None, limit: int
    ) -> tuple[list[WorkflowRun], str | None]:
        page = await self.client.list_runs(workflow_id=workflow_id, status=status, limit=limit)
        return [WorkflowRun.model_validate(r) for r in page["runs"]], page["next_cursor"]

    async def events(self, run_id: str) -> list[Event]:
        return [_event(e) for e in await self.client.events(run_id)]

    async def decide(self, run_id: str, step_key: str, approve: bool, comment: str | None) -> dict[str, Any]:
        decide = self.client.approve if approve else self.client.reject
        return await decide(run_id, step_key, comment)

    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str:
        return await self.client.run_agent(
            agent_id, request.prompt, files=request.files, variables=request.variables, apply=request.apply
        )

    async def list_agents(self) -> list[Agent]:
        return [Agent.model_validate(a) for a in await self.client.list_agents()]

    async def import_agents(self, path: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Upload every file the embedded import would read at ``path``, in one request, named
        as there (so the report is the same, and provider configs resolve across files)."""
        files = source_files(Path(path), AGENT_FILE_SUFFIXES | DATABASE_SUFFIXES)
        if files is None:
            raise NotFound(f"{path}: no such file or folder", details={"path": path})
        uploads = await asyncio.to_thread(lambda: [(name, file.read_bytes()) for file, name in files])
        return await self.client.import_agents(uploads, dry_run=dry_run)

    async def interrupted(self) -> list[str]:
        """The server resumed its interrupted runs when it started: the active ones are going on."""
        runs = []
        for status in ("running", "waiting", "queued"):
            runs += [r.run_id for r in (await self.list_runs(None, status, 500))[0]]
        return runs

    async def close(self) -> None:
        self.client.close()

    async def save_workflow(self, workflow: Workflow) -> None:
        """Create, or replace a workflow saved under the same id."""
        document = workflow.to_document()
        try:
            await self.client.create_workflow(document)
        except ClarionAPIError as exc:
            if exc.status != 409:
                raise
            await self.client.update_workflow(workflow.id, document)

    async def query(self, sql: str) -> dict[str, Any]:
        return await self.client.query(sql)

    async def save_agent(self, doc: dict[str, Any]) -> None:
        try:
            await self.client.create_agent(doc)
        except ClarionAPIError as exc:
            if exc.status != 409:
                raise
            await self.client.update_agent(doc["id"], doc)

    async def list_workflows(self) -> list[dict[str, Any]]:
        return await self.client.list_workflows()


def _event(doc: dict[str, Any]) -> Event:
    ts = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
    return Event(doc["seq"], doc["type"], doc["run_id"], doc.get("step_id"), ts, doc.get("data") or {})


def _local_user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


async def open_backend(engine: Engine) -> Backend:
    """The embedded engine, or, when a Jupyter server holds its file, that server's API."""
    try:
        await engine.start()
    except DatabaseLocked:
        client = await find_server(db_path=engine.db_path)
        if client is None:
            raise
        return ServerBackend(client)
    return EmbeddedBackend(engine)
