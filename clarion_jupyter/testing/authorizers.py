"""Jupyter authorizers for tests of a user with fewer rights than the server's owner (as a
JupyterHub deployment grants them), named by ``ServerApp.authorizer_class``."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.authorizer import Authorizer

from ..server.base import AUTH_RESOURCE


class ClarionReader(Authorizer):
    """May read Clarion's agents, workflows and runs, and watch runs live, but change nothing:
    ``write`` on the ``clarion`` resource is refused (every POST, PUT and DELETE); ``read`` and
    the ``execute`` that Jupyter asks of a WebSocket are granted, as is the rest of Jupyter."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != AUTH_RESOURCE or action != "write"
