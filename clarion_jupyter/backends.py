"""Where the CLI's commands run: the embedded engine, or the Jupyter server that holds the file.

DuckDB lets one process open the database, and while JupyterLab runs that process is its
server. Rather than stopping at the lock, the CLI then finds the server whose extension
serves that very file and goes through its API, so `clarion run` works (and shows up in
the sidebar) whether or not JupyterLab is open.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from .client import ClarionAPIError, Client, find_server
from .core.errors import Conflict, DatabaseLocked, ValidationFailed
from .storage.records import Event
from .workflow.agent_run import AgentRunRequest
from .workflow.engine import Engine
from .workflow.models import Workflow, WorkflowRun, pydantic_problems


class Backend(Protocol):
    async def submit(self, workflow: Workflow, inputs: dict[str, Any]) -> str: ...
    def subscribe(self, run_id: str) -> AsyncIterator[Event]: ...
    async def get_run(self, run_id: str) -> WorkflowRun: ...
    async def cancel(self, run_id: str) -> None: ...
    async def list_runs(
        self, workflow_id: str | None, status: str | None, limit: int
    ) -> tuple[list[WorkflowRun], str | None]: ...
    async def events(self, run_id: str) -> list[Event]: ...
    async def close(self) -> None: ...

    # What the notebook needs besides: catching up from a seq, saved workflows, SQL.
    def follow(self, run_id: str, since: int) -> AsyncIterator[Event]: ...
    async def save_workflow(self, workflow: Workflow) -> None: ...
    async def run_saved(self, workflow_id: str, inputs: dict[str, Any]) -> str: ...
    async def query(self, sql: str) -> dict[str, Any]: ...
    async def save_agent(self, doc: dict[str, Any]) -> None: ...
    async def approve(self, run_id: str, step_key: str, comment: str | None = None) -> None: ...
    async def reject(self, run_id: str, step_key: str, comment: str | None = None) -> None: ...
    async def run_agent(
        self, agent_id: str, prompt: str, variables: dict[str, Any], files: list[str], apply: str
    ) -> str: ...
    async def list_agents(self) -> list[dict[str, Any]]: ...
    async def list_workflows(self) -> list[dict[str, Any]]: ...


class EmbeddedBackend:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def submit(self, workflow: Workflow, inputs: dict[str, Any]) -> str:
        return await self.engine.submit(workflow, inputs)

    def subscribe(self, run_id: str) -> AsyncIterator[Event]:
        return self.engine.subscribe(run_id)

    async def get_run(self, run_id: str) -> WorkflowRun:
        return await self.engine.get_run(run_id)

    async def cancel(self, run_id: str) -> None:
        await self.engine.cancel(run_id)
        await self.engine.wait(run_id)

    async def list_runs(
        self, workflow_id: str | None, status: str | None, limit: int
    ) -> tuple[list[WorkflowRun], str | None]:
        return await self.engine.list_runs(workflow_id=workflow_id, status=status, limit=limit)

    async def events(self, run_id: str) -> list[Event]:
        return await self.engine.events(run_id)

    async def close(self) -> None:
        await self.engine.stop()

    def follow(self, run_id: str, since: int) -> AsyncIterator[Event]:
        return self.engine.subscribe(run_id, since)

    async def save_workflow(self, workflow: Workflow) -> None:
        try:
            await self.engine.workflows.create(workflow.to_document())
        except Conflict:
            await self.engine.workflows.replace(workflow.id, workflow.to_document())

    async def run_saved(self, workflow_id: str, inputs: dict[str, Any]) -> str:
        return await self.engine.submit_saved(workflow_id, inputs)

    async def query(self, sql: str) -> dict[str, Any]:
        return (await self.engine.query(sql)).as_dict()

    async def save_agent(self, doc: dict[str, Any]) -> None:
        try:
            await self.engine.agents.create(doc)
        except Conflict:
            await self.engine.agents.replace(doc["id"], doc)

    async def approve(self, run_id: str, step_key: str, comment: str | None = None) -> None:
        await self.engine.decide(run_id, step_key, True, comment=comment)

    async def reject(self, run_id: str, step_key: str, comment: str | None = None) -> None:
        await self.engine.decide(run_id, step_key, False, comment=comment)

    async def run_agent(
        self, agent_id: str, prompt: str, variables: dict[str, Any], files: list[str], apply: str
    ) -> str:
        try:
            request = AgentRunRequest(prompt=prompt, variables=variables, files=files, apply=apply)
        except ValidationError as exc:
            raise ValidationFailed(pydantic_problems(exc, {"prompt": prompt}), what="agent run") from None
        return await self.engine.run_agent(agent_id, request)

    async def list_agents(self) -> list[dict[str, Any]]:
        return [agent.model_dump(mode="json") for agent in await self.engine.agents.list()]

    async def list_workflows(self) -> list[dict[str, Any]]:
        return [stored.doc for stored in await self.engine.workflows.list()]


class ServerBackend:
    """The same operations through a running server's v3 API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def submit(self, workflow: Workflow, inputs: dict[str, Any]) -> str:
        """Runs need a saved workflow on the server: the file is saved (replacing that id) first."""
        await self.save_workflow(workflow)
        return await self.client.run(workflow.id, inputs)

    async def subscribe(self, run_id: str) -> AsyncIterator[Event]:
        async for event in self.client.subscribe(run_id):
            yield _event(event)

    async def get_run(self, run_id: str) -> WorkflowRun:
        return WorkflowRun.model_validate(await self.client.get_run(run_id))

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

    async def close(self) -> None:
        self.client.close()

    async def follow(self, run_id: str, since: int) -> AsyncIterator[Event]:
        async for event in self.client.subscribe(run_id, since):
            yield _event(event)

    async def save_workflow(self, workflow: Workflow) -> None:
        """Create, or replace a workflow saved under the same id."""
        document = workflow.to_document()
        try:
            await self.client.create_workflow(document)
        except ClarionAPIError as exc:
            if exc.status != 409:
                raise
            await self.client.update_workflow(workflow.id, document)

    async def run_saved(self, workflow_id: str, inputs: dict[str, Any]) -> str:
        return await self.client.run(workflow_id, inputs)

    async def query(self, sql: str) -> dict[str, Any]:
        return await self.client.query(sql)

    async def save_agent(self, doc: dict[str, Any]) -> None:
        try:
            await self.client.create_agent(doc)
        except ClarionAPIError as exc:
            if exc.status != 409:
                raise
            await self.client.update_agent(doc["id"], doc)

    async def approve(self, run_id: str, step_key: str, comment: str | None = None) -> None:
        await self.client.approve(run_id, step_key, comment)

    async def reject(self, run_id: str, step_key: str, comment: str | None = None) -> None:
        await self.client.reject(run_id, step_key, comment)

    async def run_agent(
        self, agent_id: str, prompt: str, variables: dict[str, Any], files: list[str], apply: str
    ) -> str:
        return await self.client.run_agent(agent_id, prompt, files=files, variables=variables, apply=apply)

    async def list_agents(self) -> list[dict[str, Any]]:
        return await self.client.list_agents()

    async def list_workflows(self) -> list[dict[str, Any]]:
        return await self.client.list_workflows()


def _event(doc: dict[str, Any]) -> Event:
    ts = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
    return Event(doc["seq"], doc["type"], doc["run_id"], doc.get("step_id"), ts, doc.get("data") or {})


async def open_backend(engine: Engine) -> Backend:
    """The embedded engine, or, when a Jupyter server holds its file, that server's API."""
    try:
        await engine.start()
    except DatabaseLocked:
        client = await find_server(db_path=engine.db_path)
        if client is None:
            raise
        print(f"(the database is in use by the Jupyter server at {client.url}: using its API)", file=sys.stderr)
        return ServerBackend(client)
    return EmbeddedBackend(engine)
