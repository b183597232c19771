"""Task types by name: the built-ins and every ``clarion_jupyter.tasks`` entry point."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from .base import Task, TaskConfig

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "clarion_jupyter.tasks"


class TaskRegistry:
    """The task types a workflow may name, from the ``clarion_jupyter.tasks`` entry points, so third-party tasks plug in without touching the engine."""

    def __init__(self, tasks: dict[str, type[Task]] | None = None) -> None:
        self._tasks: dict[str, type[Task]] = dict(tasks or {})

    @classmethod
    def from_entry_points(cls) -> TaskRegistry:
        """Load every registered task; a broken plugin is logged and left out, not fatal."""
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                registry.register(ep.load(), name=ep.name)
            except Exception as exc:
                log.warning("task plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
        return registry

    def register(self, task: type[Task], name: str | None = None) -> None:
        name = name or getattr(task, "name", None)
        if (
            not name
            or not isinstance(task, type)
            or not issubclass(getattr(task, "Config", None) or object, TaskConfig)
        ):
            raise TypeError(f"{task!r} is not a Task (it needs a name and a TaskConfig subclass as Config)")
        if not callable(getattr(task, "run", None)):
            raise TypeError(f"task {name!r} has no run() method")
        self._tasks[name] = task

    def get(self, name: str) -> type[Task] | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "description": task.description,
                "config_schema": task.Config.model_json_schema(by_alias=True),
            }
            for name, task in sorted(self._tasks.items())
        ]
