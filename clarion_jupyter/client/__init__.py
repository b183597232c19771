"""The Python client of the v3 REST and WebSocket API, and how to find a running server.

Used by the notebook magic, the CLI and any other program; it depends on nothing of the
engine, only on the protocol's shared vocabulary."""

from .client import ClarionAPIError, Client
from .discovery import find_server

__all__ = ["ClarionAPIError", "Client", "find_server"]
