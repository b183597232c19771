"""Previews: what a person reviews before a step with ``approval:`` acts.

The engine builds a preview in its own process, against its own workspace (the files as
the person reviewing sees them), with the same config validation a worker applies, so a
config that would fail to run fails here, before anyone is asked to approve it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..core.workspace import Workspace, WorkspacePathError
from .base import TaskFailed, TaskSettings, config_problems
from .queue import Job
from .registry import TaskRegistry


class Previewer:
    """Builds what a person reviews before a step with ``approval:`` acts, with the task's own ``preview``."""

    def __init__(self, registry: TaskRegistry, workspace: Workspace, settings: TaskSettings) -> None:
        self._registry = registry
        self._workspace = workspace
        self._settings = settings

    async def __call__(self, job: Job) -> dict[str, Any]:
        """The task's preview of ``job``; :class:`TaskFailed` (permanent) when it cannot run."""
        task_type = self._registry.get(job.task)
        if task_type is None:
            raise TaskFailed(f"no task type '{job.task}'", retryable=False)
        try:
            config = task_type.Config.model_validate(job.config)
        except ValidationError as exc:
            raise TaskFailed(config_problems(exc), retryable=False) from None
        try:
            return await task_type().preview(config, job.context(self._workspace, self._settings))
        except WorkspacePathError as exc:
            raise TaskFailed(str(exc), retryable=False) from exc
