"""Confinement of file access to the workspace root."""

from __future__ import annotations

import os
from pathlib import Path

from pathspec import GitIgnoreSpec

MAX_PATH_BYTES = 4096
"""Linux's PATH_MAX: a longer path can never be opened, so it is refused up front."""
MAX_NAME_BYTES = 255
"""Linux's NAME_MAX for one path component."""


INTERNAL_DIR = ".clarion"
"""Clarion's own folder in the workspace (the intents and backups of file applies): no step
reads or writes it, whatever it allows, and no model is sent it."""

PROTECTED_GLOBS = (
    INTERNAL_DIR, ".git", ".ssh/", ".gnupg/", ".aws/", ".env", ".env.*", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".netrc", ".npmrc", ".pypirc", ".git-credentials",
)  # fmt: skip
"""Paths that hold credentials or run code when a tool reads them (``.git/config``'s hooks and
fsmonitor; a ``.git`` file naming another git dir): never read nor written by a file task,
never sent to a model, unless a step opts in (``.clarion`` not even then)."""

_PROTECTED = GitIgnoreSpec.from_lines(PROTECTED_GLOBS)
_INTERNAL = GitIgnoreSpec.from_lines([INTERNAL_DIR])


class WorkspacePathError(ValueError):
    """A path a step cannot use, whatever the retry: the message never shows the absolute root."""

    code = "invalid_path"


class PathOutsideWorkspace(WorkspacePathError):
    """A path that leaves the root (``..``, an absolute path, a symlink out): refused, whatever the retry."""

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
        """The absolute, symlink-free path, confined to the root; every problem with the path
        (``~nosuchuser``, a symlink loop, an unreadable folder on the way) is a
        :class:`WorkspacePathError` naming it, so callers handle one error, never a bare
        ``RuntimeError`` or ``OSError``."""
        _check_path(os.fspath(path))
        try:
            candidate = Path(path).expanduser()
            if not candidate.is_absolute():
                candidate = self.root / candidate
            resolved = candidate.resolve()
        except (RuntimeError, OSError) as exc:  # RuntimeError: no such user, or a loop (Python < 3.13)
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InvalidPath(f"path '{path}' cannot be resolved: {self.scrub(reason)}") from None
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise PathOutsideWorkspace(f"path '{path}' is outside the workspace")
        return resolved

    def protected(self, path: str | os.PathLike[str], resolved: Path | None = None) -> str | None:
        """The protected path that ``path`` names or leads to (through any symlink), else None.

        Both the path as written and its resolved target are checked, case-folded, so neither
        ``.GIT/config``, a link ``notes.txt -> .env`` nor a linked folder into ``.git`` gets by."""
        return self._matching(_PROTECTED, path, resolved)

    def internal(self, path: str | os.PathLike[str], resolved: Path | None = None) -> str | None:
        """Like :meth:`protected`, for :data:`INTERNAL_DIR` alone: what no opt-in opens."""
        return self._matching(_INTERNAL, path, resolved)

    def _matching(self, spec: GitIgnoreSpec, path: str | os.PathLike[str], resolved: Path | None) -> str | None:
        resolved = resolved if resolved is not None else self.resolve(path)
        candidate = Path(path).expanduser()
        lexical = Path(os.path.normpath(candidate if candidate.is_absolute() else self.root / candidate))
        for each in (lexical, resolved):
            if each == self.root or not each.is_relative_to(self.root):
                continue
            rel = self.relative(each)
            if spec.match_file(rel.lower()):
                return rel
        return None

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
