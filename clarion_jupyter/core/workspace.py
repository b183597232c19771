"""Confinement of file access to the workspace root."""

from __future__ import annotations

import os
from pathlib import Path

MAX_PATH_BYTES = 4096
"""Linux's PATH_MAX: a longer path can never be opened, so it is refused up front."""
MAX_NAME_BYTES = 255
"""Linux's NAME_MAX for one path component."""


class WorkspacePathError(ValueError):
    """A path a step cannot use, whatever the retry: the message never shows the absolute root."""

    code = "invalid_path"


class PathOutsideWorkspace(WorkspacePathError):
    code = "path_outside_workspace"


class InvalidPath(WorkspacePathError):
    """A NUL byte, or a path or name longer than the filesystem allows."""


class Workspace:
    """The folder that file tasks and shell ``cwd`` are confined to.

    Paths are resolved with symlinks followed, so a link that leads out of the root is
    refused just like ``..`` or an absolute path elsewhere. Errors name paths relative to
    the root (or as the user wrote them), so a message never reveals where the server keeps
    its files.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        _check_path(os.fspath(path))
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise PathOutsideWorkspace(f"path '{path}' is outside the workspace")
        return resolved

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path != self.root else "."

    def scrub(self, message: str) -> str:
        """``message`` (e.g. an OSError's text) with the absolute root written as the workspace."""
        return message.replace(f"{self.root}/", "").replace(str(self.root), ".")


def _check_path(path: str) -> None:
    if "\0" in path:
        raise InvalidPath(f"path {path[:80]!r} contains a NUL byte")
    encoded = path.encode("utf-8", errors="surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"path '{path[:40]}...' is longer than {MAX_PATH_BYTES} bytes")
    longest = max((len(part.encode("utf-8", errors="surrogateescape")) for part in path.split("/")), default=0)
    if longest > MAX_NAME_BYTES:
        raise InvalidPath(f"path '{path[:40]}...' has a name longer than {MAX_NAME_BYTES} bytes")
