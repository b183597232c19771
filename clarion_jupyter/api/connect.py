"""Which engine a command talks to: the one it starts in process, or the server holding its file.

DuckDB lets one process open the database, and while JupyterLab runs, that process is its
server. Rather than stopping at the lock, :func:`connect` then finds the server whose
extension serves that very file and answers with its :class:`~.http.Client`, so every command
works (and its runs show up in the sidebar) whether or not JupyterLab is open. Both answer
the same :class:`~.interface.Clarion` interface, so a command is written once.
"""

from __future__ import annotations

from ..core.errors import DatabaseLocked
from ..workflow.engine import Engine
from .discovery import find_server
from .interface import Clarion


async def connect(engine: Engine) -> Clarion:
    """``engine``, started, or, when a Jupyter server holds its file, that server's client.
    The caller closes what it gets (``await clarion.aclose()``)."""
    try:
        await engine.start()
    except DatabaseLocked:
        client = await find_server(db_path=engine.db_path)
        if client is None:
            raise
        return client
    return engine
