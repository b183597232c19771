"""AgentRuns: what the engine does for an agent run before, and instead of, running it.

An agent run is an ordinary run of the built-in ``agent-run`` workflow (:mod:`.agent_run`);
what is particular to it is checked here before anything is queued (the agent, its required
variables, the files chosen by hand), so a typo costs no tokens and names its field, and the
prompt it would send can be shown without calling the model. The engine's façade only
delegates, so agent concerns do not grow the façade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..agent.service import AgentService
from ..core.errors import BadRequest, Problem, ValidationFailed
from ..core.workspace import Workspace
from ..task.base import TaskFailed
from ..task.builtin.llm_call import LLMCallTask, chosen_file_problem, prepare_call
from ..task.registry import TaskRegistry
from .agent_run import AGENT_RUN_WORKFLOW, AGENT_RUN_WORKFLOW_ID, AgentRunRequest
from .service import WorkflowService

SubmitSaved = Callable[..., Awaitable[str]]
"""``Engine.submit_saved``: the workflow's id, its inputs, and the run's ``budget`` and ``cache``."""


class AgentRuns:
    """Starts agent runs and prepares their prompts, on the engine's agents, workflows and workspace."""

    def __init__(
        self,
        agents: AgentService,
        workflows: WorkflowService,
        registry: TaskRegistry,
        workspace: Workspace,
        submit_saved: SubmitSaved,
    ) -> None:
        self._agents = agents
        self._workflows = workflows
        self._registry = registry
        self._workspace = workspace
        self._submit_saved = submit_saved

    async def install(self) -> None:
        """Save the built-in workflow (again, so an upgrade's version replaces the old one)."""
        if all(self._registry.get(task) for task in ("llm_call", "file_write")):
            await self._workflows.install(AGENT_RUN_WORKFLOW)

    async def start(self, agent_id: str, request: AgentRunRequest) -> str:
        """Check what can be checked before the model is called, then queue the run."""
        agent = await self._agents.get(agent_id)
        problems = [
            Problem(loc=f"variables.{v.name}", message=f"required by agent '{agent_id}'", field=f"variables.{v.name}")
            for v in agent.user_variables
            if v.required and v.name not in request.variables
        ]
        problems += await asyncio.to_thread(self._unreadable, request.files)
        if problems:
            raise ValidationFailed(problems, what="agent run")
        await self.install()
        return await self._submit_saved(
            AGENT_RUN_WORKFLOW_ID, request.inputs(agent_id), budget=request.budget, cache=request.cache
        )

    async def warm_up(self) -> None:
        if await self._agents.list():
            await LLMCallTask.provider.warm()

    async def prompt(self, agent_id: str, request: AgentRunRequest) -> dict[str, Any]:
        agent = await self._agents.get(agent_id)
        if problems := await asyncio.to_thread(self._unreadable, request.files):
            raise ValidationFailed(problems, what="agent prompt")
        config = request.reply_config(agent_id)
        try:
            prepared = await prepare_call(agent, config, self._workspace, LLMCallTask.provider)
        except TaskFailed as exc:
            raise ValidationFailed([Problem(loc="request", message=exc.message)], what="agent prompt") from None
        return {
            "agent_id": agent_id,
            "model": prepared.request.model,
            "messages": prepared.request.messages,
            "response_format": prepared.request.response_format,
            "parameters": prepared.request.parameters,
            "tokens": await LLMCallTask.provider.count_tokens(prepared.request),
            "context": prepared.context_report(),
        }

    def _unreadable(self, files: list[str]) -> list[Problem]:
        """The files chosen by hand that cannot be sent (missing, outside, credentials), by index."""
        return [
            Problem(loc=f"files.{index}", message=problem, field=f"files.{index}")
            for index, path in enumerate(files)
            if (problem := chosen_file_problem(self._workspace, path)) is not None
        ]


def refuse_over_cap(prompt: dict[str, Any]) -> None:
    """A prepared prompt whose context is over its cap is not sent: :class:`BadRequest` saying why."""
    if problem := (prompt.get("context") or {}).get("problem"):
        raise BadRequest(f"nothing was sent: {problem}")


def context_lines(prompt: dict[str, Any], largest: int = 10) -> list[str]:
    """What an agent run is about to send, for a terminal or a cell, before anything is sent:
    the context's files (largest first) with their tokens, the prompt's total, and the cap."""
    context = prompt.get("context") or {}
    files = sorted(context.get("files", []), key=lambda f: -f["tokens"])
    cap = f" of {context['max_tokens']:,} allowed" if context.get("max_tokens") else ""
    lines = [
        f"context: {len(files)} file{'s' if len(files) != 1 else ''}, {context.get('tokens', 0):,} tokens{cap}; "
        f"the whole prompt is {prompt['tokens']:,} tokens for {prompt['model']}"
    ]
    lines += [f"  {f['path']}  ({f['tokens']:,} tokens)" for f in files[:largest]]
    if len(files) > largest:
        lines.append(f"  … and {len(files) - largest} more")
    lines += [f"  left out: {s['path']} ({s['reason']})" for s in context.get("skipped", [])[:largest]]
    return lines
