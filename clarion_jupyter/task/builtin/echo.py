from __future__ import annotations

from typing import Any

from ..base import Task, TaskConfig, TaskContext


class EchoConfig(TaskConfig):
    """``echo``'s one field: any JSON value, templated."""

    value: Any = None


class EchoTask(Task):
    """Returns its (templated) ``value``: assembles data between steps; the benchmarks' no-op."""

    name = "echo"
    Config = EchoConfig
    description = "Return `value` unchanged (after templating)."

    async def run(self, config: EchoConfig, ctx: TaskContext) -> dict[str, Any]:
        return {"value": config.value}
