"""The one interface to Clarion: what a program, the magic, the widget and the CLI may ask of it.

Two things implement it, with the same method names, the same return models and the same
exceptions: :class:`~clarion_jupyter.Engine` in this process, and
:class:`~clarion_jupyter.api.http.Client` over a Jupyter server's v3 API. Code written
against :class:`Clarion` runs unchanged on either (``except Conflict`` included), so each
operation is spelled once here and implemented twice, never adapted a third time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from ..agent.models import Agent
from ..core.errors import Conflict
from ..storage.query import QueryResult
from ..storage.records import Event, StoredDocument
from ..workflow.agent_run import AgentRunRequest
from ..workflow.budget import Budget
from ..workflow.compare import RunComparison
from ..workflow.llm_cache import CacheStats
from ..workflow.models import Decision, RunPage, Workflow, WorkflowRun
from ..workflow.validation import WorkflowSource


@runtime_checkable
class Clarion(Protocol):
    """Agents, workflows and runs, wherever the engine that holds them lives."""

    # -- runs ------------------------------------------------------------------------

    async def submit(
        self,
        workflow: WorkflowSource,
        inputs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> str:
        """Run a document (a mapping, YAML text or a :class:`Workflow`) without saving it; the
        run's id once it is durably queued. ``budget``: this run's (``{usd, tokens, unpriced}``),
        its fields over the workflow's; ``cache``: the run's choice for the LLM cache."""

    async def submit_saved(
        self,
        workflow_id: str,
        inputs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> str:
        """Run a saved workflow; the run's id once it is durably queued."""

    async def get_run(self, run_id: str) -> WorkflowRun: ...

    async def list_runs(
        self, *, workflow_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage: ...

    async def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """The run's stored events with ``seq > since``."""

    def subscribe(self, run_id: str, since: int = 0) -> AsyncIterator[Event]:
        """Stored events after ``since``, then live ones, in order, ending with the terminal one."""

    async def wait(self, run_id: str) -> WorkflowRun:
        """The run document once the run has ended."""

    async def cancel(self, run_id: str) -> None:
        """Stop a queued, running or waiting run (:class:`Conflict` when it already ended)."""

    async def approve(self, run_id: str, step_key: str, *, comment: str | None = None) -> Decision:
        """Let a ``waiting`` step run (:class:`Conflict` when it is not waiting)."""

    async def reject(self, run_id: str, step_key: str, *, comment: str | None = None) -> Decision:
        """Refuse a ``waiting`` step: it fails, or is skipped when its approval says ``on_reject: skip``."""

    async def delete_runs(
        self, *, run_id: str | None = None, workflow_id: str | None = None, status: str | None = None
    ) -> int:
        """Delete finished runs with all they stored (one by id or prefix, or those matching
        ``workflow_id`` and ``status``, or every finished one when none is given); how many.
        :class:`Conflict` for one run that has not finished, :class:`NotFound` for an unknown one."""

    async def query(self, sql: str) -> QueryResult:
        """One read-only SQL statement over the history views."""

    async def rerun(
        self,
        run_id: str,
        *,
        from_step: str | None = None,
        inputs: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        budget: Budget | dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> WorkflowRun:
        """Run a finished run again with changes, reusing every step no change reaches; the
        new run (``parent_run_id``, ``changes``) once durably queued. It holds to the parent's
        budget, ``budget``'s fields over it."""

    async def compare_runs(self, run_ids: list[str]) -> RunComparison:
        """Two or more runs side by side, step by step, with the steps that differ marked."""

    # -- the LLM cache ---------------------------------------------------------------

    async def clear_cache(self, *, agent_id: str | None = None, older_than: str | None = None) -> int:
        """Delete cached LLM replies (those of ``agent_id`` and/or older than ``older_than``,
        e.g. ``7d`` or ``12h``; neither: every one); how many."""

    async def cache_stats(self) -> CacheStats:
        """What the LLM cache holds: entries, bytes against the cap, entries by agent."""

    # -- agents ----------------------------------------------------------------------

    async def list_agents(self) -> list[Agent]: ...
    async def get_agent(self, agent_id: str) -> Agent: ...
    async def create_agent(self, doc: dict[str, Any] | Agent) -> Agent: ...
    async def replace_agent(self, agent_id: str, doc: dict[str, Any] | Agent) -> Agent: ...
    async def delete_agent(self, agent_id: str) -> None: ...

    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str:
        """Start an agent run (its ``apply`` step waits for approval when ``apply`` is ``review``)."""

    async def prompt_agent(self, agent_id: str, request: AgentRunRequest) -> dict[str, Any]:
        """The exact messages an agent run would send, and their token count; no model call."""

    async def import_agents(self, source: Any, *, dry_run: bool = False) -> dict[str, Any]:
        """Import what Clarion v2 left (a path, a ``clarion.db``'s bytes, document text); the
        report as ``POST /api/v3/agents/import`` answers it."""

    # -- saved workflows -------------------------------------------------------------

    async def list_workflows(self) -> list[StoredDocument]: ...
    async def get_workflow(self, workflow_id: str) -> StoredDocument: ...
    async def create_workflow(self, source: str | bytes | dict[str, Any]) -> StoredDocument: ...
    async def replace_workflow(self, workflow_id: str, source: str | bytes | dict[str, Any]) -> StoredDocument: ...
    async def delete_workflow(self, workflow_id: str) -> None: ...

    async def task_types(self) -> list[dict[str, Any]]:
        """The task types workflows may use, with their config JSON schemas."""

    async def aclose(self) -> None:
        """Let go: an engine stops (what is in flight resumes at its next start), a client disconnects."""


async def save_workflow(clarion: Clarion, workflow: Workflow, source: str | None = None) -> StoredDocument:
    """Create, or replace the workflow saved under the same id (what ``--save`` asks for);
    ``source``, the YAML text it was parsed from, is kept as written (comments and all)."""
    document = source if source is not None else workflow.to_document()
    try:
        return await clarion.create_workflow(document)
    except Conflict:
        return await clarion.replace_workflow(workflow.id, document)


async def save_agent(clarion: Clarion, doc: dict[str, Any]) -> Agent:
    """Create, or replace the agent saved under the same id."""
    try:
        return await clarion.create_agent(doc)
    except Conflict:
        return await clarion.replace_agent(doc["id"], doc)
