"""Find the running Jupyter server that serves the Clarion API, so that runs started from a
kernel or a terminal are that server's runs (the ones the sidebar and REST clients see).

Jupyter servers list themselves in the runtime dir (:func:`list_running_servers`). Which
one is meant depends on who asks:

* a kernel asks for *its own* server: the one that has its kernel id (from the kernel's
  connection file), which is exact even when several servers share a root dir;
* the CLI asks for the server whose extension holds a DuckDB file (``db_path``);
* anything else asks for the server whose root dir holds a folder (``cwd``), the
  deepest root winning when servers nest.

Every candidate must answer ``GET /api/v3/health``: a server without the extension is
never chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .http import ClarionAPIError, Client


def _root(info: dict[str, Any]) -> Path:
    return Path(info.get("root_dir") or info.get("notebook_dir") or "/").expanduser().resolve()


def _ordered(servers: list[dict[str, Any]], cwd: Path | None) -> list[dict[str, Any]]:
    """Servers whose root holds ``cwd``, deepest root first (all of them, in order, without ``cwd``)."""
    if cwd is None:
        return servers
    holding = [info for info in servers if cwd == _root(info) or cwd.is_relative_to(_root(info))]
    return sorted(holding, key=lambda info: -len(_root(info).parts))


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


async def find_server(
    *,
    db_path: str | os.PathLike[str] | None = None,
    kernel_id: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> Client | None:
    """A :class:`Client` for the running server that matches every criterion given, or None.

    ``db_path``: its extension's database is this file. ``kernel_id``: it runs this kernel.
    ``cwd``: its root dir holds this folder. The caller owns (and closes) the client.
    """
    from jupyter_server.serverapp import list_running_servers

    folder = Path(cwd).expanduser().resolve() if cwd is not None else None
    for info in _ordered(list(list_running_servers()), folder):
        client = Client(info["url"], info.get("token") or None, timeout=timeout)
        if await _matches(client, db_path, kernel_id):
            return client
        client.close()
    return None


async def _matches(client: Client, db_path: str | os.PathLike[str] | None, kernel_id: str | None) -> bool:
    try:
        health = await client.health()
        if kernel_id is not None and not await client.has_kernel(kernel_id):
            return False
    except ClarionAPIError:
        return False
    stored = health.get("storage", {}).get("path")
    return db_path is None or (stored is not None and _same_file(stored, db_path))
