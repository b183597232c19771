"""The one judge of a workflow document: the same rules at save, at run and in ``clarion validate``.

Shape, references, cycles and templates are the compiler's; the host's policy (how many
steps a workflow may have, whether shell steps may run) is checked here, next to them, so a
workflow that saves also runs, and ``clarion validate`` says what the server would. A document
holding the value of a set secret variable is refused, naming the field: it would be stored,
shown and copied into every run's snapshot unmasked.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import Problem, ValidationFailed
from ..core.secrets import SECRET_IN_DOCUMENT, SecretMasker, SecretPolicy
from ..task.registry import TaskRegistry
from .compiler import Plan, compile_workflow
from .models import Workflow, parse_workflow

DEFAULT_MAX_STEPS = 1000
"""The default limit, for the engine, the server extension and the CLI alike."""

WorkflowSource = Workflow | dict[str, Any] | str | bytes


class WorkflowValidator:
    """The one judge of workflow documents: at save, at run and in ``clarion validate``, with the same limits and problems."""

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        allow_shell: bool = True,
        secrets: SecretPolicy | None = None,
    ):
        self.registry = registry
        self.max_steps = max_steps
        self.allow_shell = allow_shell
        self._masker = SecretMasker(secrets)

    def compile(self, source: WorkflowSource) -> Plan:
        """The runnable plan of a document, or :class:`ValidationFailed` listing every problem."""
        workflow = parse_workflow(source)
        self.refuse_secrets(workflow.to_document())
        plan = compile_workflow(workflow, self.registry, self.max_steps)
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

    def refuse_secrets(self, document: dict[str, Any]) -> None:
        """:class:`ValidationFailed` when ``document`` holds the value of a secret set now: judged
        at every run, also of a document compiled before (a key exported since then counts)."""
        if found := self._masker.locate(document):
            raise ValidationFailed([_secret_problem(document, path, name) for path, name in found])


def _secret_problem(document: dict[str, Any], path: tuple[str | int, ...], name: str) -> Problem:
    """Located as the compiler locates: by step id and field inside the step, when in a step."""
    message = SECRET_IN_DOCUMENT.format(name=name)
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        step = str(document["steps"][path[1]].get("id"))
        field = ".".join(map(str, path[2:])) or "step"
        return Problem(loc=f"step '{step}' field '{field}'", message=message, step=step, field=field)
    field = ".".join(map(str, path)) or "workflow"
    return Problem(loc=field, message=message, field=field)
