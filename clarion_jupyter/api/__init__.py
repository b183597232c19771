"""The one interface to Clarion (:class:`Clarion`), its HTTP implementation (:class:`Client`),
and how a command finds the engine it should talk to (:func:`connect`, :func:`find_server`).

:class:`~clarion_jupyter.Engine` implements the same interface in process; the magic, the
widget, the CLI and other programs are written against :class:`Clarion` only."""

from .connect import connect
from .discovery import find_server
from .http import ClarionAPIError, Client
from .interface import Clarion, save_agent, save_workflow

__all__ = ["Clarion", "ClarionAPIError", "Client", "connect", "find_server", "save_agent", "save_workflow"]
