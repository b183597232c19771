"""The one judge of a workflow document: the same rules at save, at run and in ``clarion validate``.

Shape, references, cycles and templates are the compiler's; the host's policy (how many
steps a workflow may have, whether shell steps may run) is checked here, next to them, so a
workflow that saves also runs, and ``clarion validate`` says what the server would.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import Problem, ValidationFailed
from ..task.registry import TaskRegistry
from .compiler import Plan, compile_workflow
from .models import Workflow, parse_workflow

DEFAULT_MAX_STEPS = 1000
"""The default limit, for the engine, the server extension and the CLI alike."""

WorkflowSource = Workflow | dict[str, Any] | str | bytes


class WorkflowValidator:
    def __init__(self, registry: TaskRegistry, *, max_steps: int | None = DEFAULT_MAX_STEPS, allow_shell: bool = True):
        self.registry = registry
        self.max_steps = max_steps
        self.allow_shell = allow_shell

    def compile(self, source: WorkflowSource) -> Plan:
        """The runnable plan of a document, or :class:`ValidationFailed` listing every problem."""
        plan = compile_workflow(parse_workflow(source), self.registry, self.max_steps)
        if not self.allow_shell:
            refused = [
                Problem(
                    loc=f"step '{node_id}' field 'task'",
                    message="shell steps are disabled on this server (allow_shell=False)",
                    step=node_id,
                    field="task",
                )
                for node_id, node in plan.nodes.items()
                if node.step.task == "shell"
            ]
            if refused:
                raise ValidationFailed(refused)
        return plan
