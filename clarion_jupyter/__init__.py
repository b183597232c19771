"""Clarion v3: AI agents and durable workflows, notebook-native."""

from typing import Any

from ._version import __version__
from .agent.models import Agent
from .core.errors import ClarionError, ValidationFailed
from .storage.records import Event
from .workflow.engine import Engine
from .workflow.models import Workflow, WorkflowRun, parse_workflow

__all__ = [
    "Agent",
    "ClarionError",
    "Client",
    "Engine",
    "Event",
    "ValidationFailed",
    "Workflow",
    "WorkflowRun",
    "__version__",
    "parse_workflow",
]


def __getattr__(name: str) -> Any:
    """``Client`` loads the HTTP stack on first use, not on every import of the package."""
    if name == "Client":
        from .api.http import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext clarion_jupyter`` (or ``c.InteractiveShellApp.extensions``): ``%%clarion`` and ``%clarion``."""
    from .notebook.magic import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Where Jupyter finds the server extension (enabled by jupyter-config/.../clarion_jupyter.json)."""
    from .server.app import _jupyter_server_extension_points as points

    return points()


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where ``jupyter labextension develop`` finds the built sidebar (``labextension/`` builds it here)."""
    return [{"src": "labextension", "dest": "@clarion/sidebar"}]
