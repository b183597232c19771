"""Find the Jupyter server a kernel runs under, so notebook runs are the server's runs.

A kernel does not know which server started it. Jupyter servers list themselves in the
runtime dir; the right one serves the Clarion API and has the kernel's working directory
under its root (the deepest such root wins when servers nest).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .client import ClarionAPIError, Client


def _candidates(cwd: Path) -> list[dict[str, Any]]:
    from jupyter_server.serverapp import list_running_servers

    servers = []
    for info in list_running_servers():
        root = Path(info.get("root_dir") or info.get("notebook_dir") or "/").resolve()
        if cwd == root or cwd.is_relative_to(root):
            servers.append((len(root.parts), info))
    return [info for _, info in sorted(servers, key=lambda pair: -pair[0])]


async def connect(cwd: str | os.PathLike[str] | None = None) -> Client | None:
    """A :class:`Client` for the server hosting this directory's notebooks, or None."""
    for info in _candidates(Path(cwd or os.getcwd()).resolve()):
        client = Client(info["url"], info.get("token") or None)
        try:
            await client.health()
        except ClarionAPIError:
            client.close()
            continue
        return client
    return None
