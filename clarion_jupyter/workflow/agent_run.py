"""Agent runs: Clarion v2's everyday action ("run this agent on this prompt with these files,
then review and apply its file changes") as a run of one built-in, ordinary stored workflow.

Step ``reply`` asks the agent (the files chosen by hand join its codebase context); when the
reply holds file changes in the "File Operations" shape (``file_changes: [{action, path,
new_content}]``), step ``apply`` writes them, all or nothing, after a person approved the
diff when ``apply`` is ``review``. An agent without an output schema of its own is asked for
that shape (as Clarion v2's preset did), so its file changes are not lost as prose;
discarding the changes (rejecting ``apply``) is a normal end: the run succeeds with
``apply`` skipped and ``outputs.applied`` false. Because it is a stored workflow, its runs are listed,
followed, approved and queried like any other run, in the sidebar, the notebook and REST.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..task.builtin.llm_call import LLMCallConfig
from .budget import Budget

AGENT_RUN_WORKFLOW_ID = "agent-run"
AGENT_REPLY_STEP = "reply"

FILE_OPERATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["summary", "file_changes"],
    "properties": {
        "summary": {"type": "string", "description": "A summary of the file changes to be performed."},
        "file_changes": {
            "type": "array",
            "description": "A list of file modifications (empty when no file needs to change).",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["action", "path", "new_content"],
                "properties": {
                    "action": {"type": "string", "enum": ["create", "modify", "delete"]},
                    "path": {"type": "string", "description": "The relative path to the file."},
                    "new_content": {
                        "type": "string",
                        "description": "The new content for 'create' or 'modify' actions; empty for 'delete'.",
                    },
                },
            },
        },
    },
}
"""Clarion v2's preset "File Operations" schema, written for strict mode (every property
required, objects closed) so that providers that support it enforce it."""

_FILE_CHANGES = "(steps.reply.output.get('json') or {}).get('file_changes') or []"
AGENT_RUN_WORKFLOW: dict[str, Any] = {
    "id": AGENT_RUN_WORKFLOW_ID,
    "name": "Agent run",
    "description": "Run an agent on a prompt and files, then review and apply the file changes it proposes.",
    "inputs": {
        "agent": {"type": "string", "description": "The agent's id."},
        "prompt": {"type": "string", "description": "The task for the agent."},
        "variables": {"type": "object", "default": {}, "description": "Values of the agent's user variables."},
        "files": {"type": "array", "default": [], "description": "Workspace files sent with the prompt."},
        "apply": {
            "type": "string",
            "default": "review",
            "description": "review (approve the diff first), auto (apply at once) or never.",
        },
    },
    "steps": [
        {
            "id": AGENT_REPLY_STEP,
            "task": "llm_call",
            "with": {
                "agent": "{{ inputs.agent }}",
                "prompt": "{{ inputs.prompt }}",
                "variables": "{{ inputs.variables }}",
                "files": "{{ inputs.files }}",
                "stream": True,
                "default_response_format": FILE_OPERATIONS_SCHEMA,
            },
        },
        {
            "id": "apply",
            "task": "file_write",
            "if": f"{{{{ inputs.apply != 'never' and ({_FILE_CHANGES}) | length > 0 }}}}",
            "approval": {
                "if": "{{ inputs.apply == 'review' }}",
                "message": "Apply the agent's file changes?",
                "on_reject": "skip",
            },
            "with": {"changes": f"{{{{ {_FILE_CHANGES} }}}}"},
        },
    ],
    "outputs": {
        "text": "{{ steps.reply.output.text }}",
        "json": "{{ steps.reply.output.get('json') }}",
        "applied": "{{ steps.apply.status == 'succeeded' }}",
    },
}


class AgentRunRequest(BaseModel):
    """The body of ``POST /api/v3/agents/{agent_id}/run`` and ``/prompt``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=1_000_000)
    variables: dict[str, Any] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list, max_length=1000)
    apply: Literal["review", "auto", "never"] = "review"
    budget: Budget | None = None
    """The run's budget (an agent run's one LLM call reserves from it)."""
    cache: bool | None = None
    """Answer the run's LLM call from the LLM cache (True) or never (False), as a run's ``cache``
    does; None leaves it to the agent and the server."""

    def inputs(self, agent_id: str) -> dict[str, Any]:
        return {"agent": agent_id, **self.model_dump(exclude={"budget", "cache"})}

    def reply_config(self, agent_id: str) -> LLMCallConfig:
        """Step ``reply``'s config for this request: what ``/prompt`` prepares without a call."""
        step = next(s for s in AGENT_RUN_WORKFLOW["steps"] if s["id"] == AGENT_REPLY_STEP)
        fixed = {name: value for name, value in step["with"].items() if not isinstance(value, str)}
        return LLMCallConfig(agent=agent_id, prompt=self.prompt, variables=self.variables, files=self.files, **fixed)
