"""The server extension's configuration as the CLI sees it.

The ``ClarionExtension`` traits (``db_path``, ``max_steps``, ``allow_shell``, ``llm_cache``, ...) live in
Jupyter's own config files; the CLI reads the same files with traitlets' loaders, so
``clarion validate`` and ``clarion run`` judge a workflow as the server would and open the
same database, without importing the server (which takes seconds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from traitlets.config import Config
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

from .core.errors import BadRequest
from .core.secrets import DEFAULT_SECRET_ENV_PATTERN, SecretPolicy
from .storage.database import DEFAULT_MEMORY_LIMIT
from .storage.llm_cache import DEFAULT_MAX_BYTES as DEFAULT_LLM_CACHE_MAX_BYTES
from .task.base import DEFAULT_MAX_OUTPUT_BYTES, TaskSettings
from .workflow.engine import Engine
from .workflow.validation import DEFAULT_MAX_STEPS

CONFIG_NAME = "jupyter_server_config"
SECTION = "ClarionExtension"


def configured_traits(cwd: str | Path = ".") -> dict[str, Any]:
    """The ``ClarionExtension`` section of every Jupyter server config file, merged in
    Jupyter's order (lowest priority first; the folder the command runs in last)."""
    from jupyter_core.paths import jupyter_config_path

    config = Config()
    for folder in [*reversed(jupyter_config_path()), str(cwd)]:
        for loader in _loaders(Path(folder)):
            try:
                config.merge(loader.load_config())
            except ConfigFileNotFound:
                continue
    return dict(config[SECTION]) if SECTION in config else {}


def task_settings(traits: dict[str, Any]) -> TaskSettings:
    """The policy the server applies to every step (``allow_shell``, ``max_output_bytes``,
    ``secret_env_pattern``), from its traits: for the CLI's embedded engine and for
    ``clarion worker``, which must judge and mask a step exactly as the server's own workers."""
    pattern = traits.get("secret_env_pattern", DEFAULT_SECRET_ENV_PATTERN)
    try:
        secrets = SecretPolicy(pattern)
    except re.error as exc:
        raise BadRequest(
            f"ClarionExtension.secret_env_pattern {pattern!r} is not a valid regular expression: {exc}"
        ) from None
    return TaskSettings(
        allow_shell=traits.get("allow_shell", True),
        max_output_bytes=traits.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES),
        secrets=secrets,
    )


def configured_engine(
    db_path: str | Path | None = None, *, workers: int | None = None, workspace_root: str | Path | None = None
) -> Engine:
    """An engine as the server extension is configured (its traits), the arguments winning:
    the CLI's and the notebook's embedded engines judge, permit and mask a step exactly as the
    server would, and open the same database."""
    traits = configured_traits()
    settings = task_settings(traits)
    return Engine(
        db_path=db_path or traits.get("db_path") or None,
        workers=workers or traits.get("workers", 8),
        workspace_root=workspace_root or traits.get("workspace_root") or ".",
        allow_shell=settings.allow_shell,
        max_output_bytes=settings.max_output_bytes,
        max_steps=traits.get("max_steps", DEFAULT_MAX_STEPS),
        secrets=settings.secrets,
        llm_cache=traits.get("llm_cache", False),
        llm_cache_max_bytes=traits.get("llm_cache_max_bytes", DEFAULT_LLM_CACHE_MAX_BYTES),
        db_memory_limit=traits.get("db_memory_limit", DEFAULT_MEMORY_LIMIT),
    )


def _loaders(folder: Path) -> list[JSONFileConfigLoader | PyFileConfigLoader]:
    fragments = sorted((folder / f"{CONFIG_NAME}.d").glob("*.json"))
    return [
        *(JSONFileConfigLoader(f.name, path=str(f.parent)) for f in fragments),
        PyFileConfigLoader(f"{CONFIG_NAME}.py", path=str(folder)),
        JSONFileConfigLoader(f"{CONFIG_NAME}.json", path=str(folder)),
    ]
