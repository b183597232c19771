"""Where the notebook's runs go: the kernel's own Jupyter server, or an engine in the kernel.

Inside a kernel that a Jupyter server with the extension started, runs go to that server
(through its :class:`~clarion_jupyter.api.Client`), so they are stored in its DuckDB
file and are the same runs the sidebar and REST clients see. The server is matched by the
kernel's own id (from its connection file) rather than by folder, so two servers sharing a
root are never confused, and it works under any ``base_url`` (JupyterHub's ``/user/<name>/``).
Without such a server (plain IPython, papermill, nbclient) or with ``--local``, an embedded
engine runs in the kernel on its own DuckDB file. Either way the session says once which.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..api import Clarion, find_server
from ..core.errors import DatabaseLocked
from ..settings import configured_engine
from ..storage.database import default_db_path
from .loop import BackgroundLoop

_KERNEL_FILE = re.compile(r"kernel-(?P<id>.+)\.json$")


def kernel_id() -> str | None:
    """This kernel's id, from its connection file (None outside a Jupyter kernel)."""
    if "ipykernel" not in sys.modules:
        return None
    from ipykernel.connect import get_connection_file

    try:
        match = _KERNEL_FILE.search(Path(get_connection_file()).name)
    except (RuntimeError, AttributeError):  # not running in a kernel app
        return None
    return match.group("id") if match else None


@dataclass(frozen=True, slots=True)
class Where:
    """Where a session's runs go, as the widget and the first message show it."""

    kind: str
    """``server`` or ``embedded``."""
    location: str
    """The server's URL, or the embedded engine's DuckDB file."""

    def __str__(self) -> str:
        if self.kind == "server":
            return f"the Jupyter server at {self.location}"
        return f"an embedded engine in this kernel ({self.location})"


class Session:
    """The :class:`~clarion_jupyter.api.Clarion` of one kind of cell (default, or ``--local``), opened on first use."""

    def __init__(self, loop: BackgroundLoop, *, embedded: Session | None = None, db_path: str | None = None) -> None:
        """``embedded``: the kernel's embedded session, which a session without a server uses
        too (one engine per DuckDB file and process); None makes this session that one."""
        self.loop = loop
        self.embedded = embedded
        self.db_path = db_path
        self.where: Where | None = None
        self._clarion: Clarion | None = None

    def clarion(self) -> Clarion:
        if self._clarion is None:
            opened = self.loop.run(self._find_server() if self.embedded else self._start_engine())
            if opened is None:
                self.embedded.clarion()
                opened = self.embedded._clarion, self.embedded.where
            else:
                print(f"Clarion: runs go to {opened[1]}.")
            self._clarion, self.where = opened
        return self._clarion

    @staticmethod
    async def _find_server() -> tuple[Clarion, Where] | None:
        kernel = kernel_id()
        client = await find_server(kernel_id=kernel) if kernel else None
        return None if client is None else (client, Where("server", client.url))

    async def _start_engine(self) -> tuple[Clarion, Where]:
        """An engine configured as the server's extension is (its traits), on the kernel's folder."""
        path = Path(self.db_path) if self.db_path else default_db_path()
        engine = configured_engine(path, workspace_root=os.getcwd())
        try:
            await engine.start()
        except DatabaseLocked:
            # The server (or another kernel) holds the shared file: this kernel gets one of its own.
            path = path.with_name(f"notebook-{os.getpid()}.duckdb")
            engine = configured_engine(path, workspace_root=os.getcwd())
            await engine.start()
        return engine, Where("embedded", str(path))

    def close(self) -> None:
        """Stop the embedded engine cleanly (its journal reaches the tables) or close the client.

        Called as the kernel exits. A kernel killed outright loses nothing either: every
        transition is in the journal, which the next start folds in, and runs still in flight
        resume there."""
        clarion, self._clarion = self._clarion, None
        borrowed = self.embedded is not None and self.where is not None and self.where.kind == "embedded"
        if clarion is not None and not borrowed:
            self.loop.run(clarion.aclose(), timeout=30)
