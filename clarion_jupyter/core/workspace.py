"""Confinement of file access to the workspace root."""

from __future__ import annotations

import os
from pathlib import Path


class PathOutsideWorkspace(ValueError):
    pass


class Workspace:
    """The folder that file tasks and shell ``cwd`` are confined to.

    Paths are resolved with symlinks followed, so a link that leads out of the root is
    refused just like ``..`` or an absolute path elsewhere.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise PathOutsideWorkspace(f"path '{path}' is outside the workspace root {self.root}")
        return resolved

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path != self.root else "."
