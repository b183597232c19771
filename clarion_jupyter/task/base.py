"""The Task protocol: what a step type is, and what it sees while it runs.

A task is a class with a ``name``, a pydantic ``Config`` model for its ``with:`` block and an
``async def run(config, ctx)`` returning a JSON-able mapping (the step's output). Tasks run
inside workers, which may be other processes or machines, so everything a task needs comes
in through :class:`TaskContext`; a task never reaches into the engine or its storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..core.secrets import SecretPolicy
from ..core.workspace import Workspace


class TaskConfig(BaseModel):
    """Base of task configs: unknown keys in ``with:`` are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TaskFailed(Exception):
    """A task failed in a way it can explain; ``retryable=False`` skips remaining attempts;
    ``code`` is the step error's (``budget_exceeded`` names a call its run's budget refused)."""

    def __init__(self, message: str, details: Any = None, retryable: bool = True, code: str = "task_failed") -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retryable = retryable
        self.code = code


def config_problems(exc: ValidationError) -> str:
    """A config's validation errors as one line, each with its field (for a step's error)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'with'}: {e['msg']}" for e in exc.errors())


DEFAULT_MAX_OUTPUT_BYTES = 1_000_000
"""The default cap on one step's stored output, for the engine, the server extension and the CLI."""


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """Host policy that applies to every task run by a worker."""

    allow_shell: bool = True
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    secrets: SecretPolicy = field(default_factory=SecretPolicy)
    """Which environment variables hold secrets: masked in results, the only valid api_key_env."""


@dataclass(slots=True)
class TaskContext:
    """What a task may know of where it runs (the run, the step, the attempt, the workspace), and nothing of the engine."""

    run_id: str
    step_id: str
    key: str
    attempt: int
    workspace: Workspace
    settings: TaskSettings = field(default_factory=TaskSettings)
    resources: dict[str, Any] = field(default_factory=dict)
    allow_protected: bool = False
    """The step says ``allow_protected: true``: file tasks may touch ``.git/`` and credential files."""
    emit: Callable[[str, dict[str, Any]], None] = lambda _type, _data: None


class Task:
    """Base class of step types; subclasses set ``name``, ``Config`` and implement ``run``."""

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    description: ClassVar[str] = ""
    needs_agent: ClassVar[bool] = False
    """When true, ``with.agent`` names an agent that the engine resolves at dispatch and
    hands to the task as ``ctx.resources["agent"]`` (workers have no agent store)."""

    async def run(self, config: Any, ctx: TaskContext) -> dict[str, Any]:
        raise NotImplementedError

    async def cache_key(self, config: Any, ctx: TaskContext) -> str | None:
        """The LLM cache's key of the reply this job would get (:mod:`clarion_jupyter.llm.cache`),
        computed by the engine before the job goes to a worker, so that a worker needs no
        database: a hit travels with the job. None (the default): this task is never cached."""
        return None

    async def preview(self, config: Any, ctx: TaskContext) -> dict[str, Any]:
        """What a person approving this step sees before it acts (``approval:`` on a step).

        Tasks whose effect a config does not show well override it (``file_write`` returns
        the diff against the files as they are now). Raising :class:`TaskFailed` fails the
        step at once: what cannot be previewed would fail to run too."""
        return {"kind": "config", "config": config.model_dump(mode="json", by_alias=True, exclude_none=True)}

    @classmethod
    async def recover(cls, workspace: Workspace) -> None:
        """Called when a worker starts, before it takes jobs: settle what a killed process left
        half done in ``workspace`` (``file_write`` rolls back its unfinished applies)."""
