"""Re-running a run imported from Clarion v2: a new agent run with its prompt, files and agent.

An imported run's workflow (``clarion-v2-agent-run``) is a read-only record of what v2 did,
not something to run again as it is: v2 ran the agent, then the user applied its changes.
What re-running it means is what v2's "run again" did, starting the built-in ``agent-run``
workflow for the same agent, prompt and files, its changes reviewed before they apply.

It is written on two operations every implementation of the interface has (``get_run`` and
``run_agent``), so the CLI uses it the same embedded and through a server; a general
``rerun`` hands an imported run to :func:`rerun_imported` (see :func:`is_imported_v2_run`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Protocol

from ..agent.v2runs import V2_RUN_WORKFLOW_ID
from ..core.errors import Conflict
from .agent_run import AgentRunRequest
from .budget import Budget
from .models import WorkflowRun


class AgentRunner(Protocol):
    """The two operations of the ``Clarion`` interface a re-run needs (the engine and the client have them)."""

    async def get_run(self, run_id: str) -> WorkflowRun: ...
    async def run_agent(self, agent_id: str, request: AgentRunRequest) -> str: ...


def is_imported_v2_run(run: WorkflowRun) -> bool:
    return run.workflow_id == V2_RUN_WORKFLOW_ID


def rerun_request(
    run: WorkflowRun, budget: Budget | None = None, cache: bool | None = None
) -> tuple[str, AgentRunRequest]:
    """The agent and the request that repeat an imported v2 run; :class:`Conflict` for any other run."""
    if not is_imported_v2_run(run):
        raise Conflict(
            f"run '{run.run_id}' is not a run imported from Clarion v2 (workflow '{run.workflow_id}')",
            details={"run_id": run.run_id, "workflow_id": run.workflow_id},
        )
    return rerun_inputs(run.inputs, budget, cache)


def rerun_inputs(
    inputs: dict[str, Any], budget: Budget | None = None, cache: bool | None = None
) -> tuple[str, AgentRunRequest]:
    """The agent and request from an imported run's inputs (what the sidebar's Re-run sends
    back); ``budget`` and ``cache`` are the new run's (v2 had neither), as an agent run's."""
    project = inputs.get("project") or {}
    files = [_in_workspace(str(path), project.get("path")) for path in inputs.get("files") or []]
    request = AgentRunRequest(prompt=str(inputs.get("prompt") or ""), files=files, budget=budget, cache=cache)
    return str(inputs.get("agent") or ""), request


async def rerun_imported(
    clarion: AgentRunner, run_id: str, budget: Budget | None = None, cache: bool | None = None
) -> str:
    """Start the agent run that repeats an imported v2 run (named by its id or a prefix), within
    ``budget`` and with the LLM cache choice ``cache``; the new run's id."""
    agent_id, request = rerun_request(await clarion.get_run(run_id), budget, cache)
    return await clarion.run_agent(agent_id, request)


def _in_workspace(path: str, project_root: Any) -> str:
    """v2 sent paths in its project's folder, sometimes absolute: relative to it, they name the
    same file in the workspace that holds the project now."""
    candidate, root = PurePosixPath(path), PurePosixPath(str(project_root or ""))
    if candidate.is_absolute() and root.is_absolute() and candidate.is_relative_to(root):
        return candidate.relative_to(root).as_posix()
    return path
