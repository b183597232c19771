"""Codebase context: the workspace files an agent sends along with its prompt.

An agent's :class:`~clarion_jupyter.agent.models.CodebaseContext` selects files with globs
(gitignore-style, what v3 users write, or Clarion v2's own meaning for imported agents, see
:mod:`.gomatch`), an optional content regex, and limits on file count and total bytes, so
that a prompt stays within budget however large the workspace. Selection is deterministic
(sorted paths), so the same workspace gives the same prompt, which keeps runs reproducible
and provider caches warm.

Files that hold credentials (:meth:`Workspace.protected`: the path as written and the
target it resolves to) never reach a model, whatever the globs say. Build output, source
maps, lock files, notebook checkpoints and binary files are left out by default
(:data:`DEFAULT_EXCLUDES`): they are large and tell a model nothing, so a context that only
names what to exclude does not send a whole Jupyter root.

Nothing in the workspace can break a step: an entry that cannot be read (a symlink loop,
a broken link, a permission error, a content regex that runs too long) is left out and
listed in :attr:`ContextSelection.skipped` with the reason, which the step reports.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex
from pathspec import GitIgnoreSpec

from ..core.workspace import INTERNAL_DIR, PathOutsideWorkspace, Workspace, WorkspacePathError
from .gomatch import go_match
from .models import CodebaseContext

SKIPPED_DIRS = frozenset({".git", INTERNAL_DIR, "node_modules", ".venv", "__pycache__"})
"""Never useful to a model and often huge; skipped whatever the globs say."""

V2_SKIPPED_DIRS = SKIPPED_DIRS | {"dist", "build", ".vscode", ".idea", "target", "venv"}
"""The folders Clarion v2 never walked (its ``defaultIgnoreDirs``), for ``glob_syntax: v2``."""

DEFAULT_EXCLUDES = (
    ".ipynb_checkpoints/", "build/", "dist/", "out/", "target/", "coverage/", "htmlcov/", "*.egg-info/",
    ".tox/", ".nox/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".next/", ".nuxt/", ".cache/",
    "*.map", "*.min.js", "*.min.css", "*.lock", "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml",
    "go.sum", "*.pyc", "*.so", "*.dylib", "*.dll", "*.exe", "*.whl", "*.zip", "*.tar", "*.gz", "*.parquet",
)  # fmt: skip
"""Generated, bundled or binary files: never context unless picked by hand, or the agent sets
``context.default_excludes: false``. Checked on their own, so an include glob cannot pull them in."""

_DEFAULT_EXCLUDES = GitIgnoreSpec.from_lines(DEFAULT_EXCLUDES)

REGEX_TIMEOUT_S = 0.25
"""How long a user's ``content_regex`` may search one file; a pattern that backtracks
catastrophically (``(a+)+$``) skips that file instead of holding the GIL for seconds."""

CONTEXT_HEADING = "## Codebase Context"
PROTECTED_REASON = "holds credentials: never sent to a model"


@dataclass(frozen=True, slots=True)
class ContextFile:
    """One workspace file as the model sees it: its relative path and its text."""

    path: str
    """Workspace-relative, posix separators."""
    content: str

    @property
    def size(self) -> int:
        """Bytes of the text sent (UTF-8)."""
        return len(self.content.encode())


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """A file the context left out and why, so a step can say what it did not send."""

    path: str
    reason: str


@dataclass(slots=True)
class ContextSelection:
    """The files a context selected, and the entries it had to leave out, with why."""

    files: list[ContextFile] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What a step reports about its context (paths only, never contents)."""
        return {
            "files": [f.path for f in self.files],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


async def gather_context(ctx: CodebaseContext, workspace: Workspace) -> ContextSelection:
    """The files ``ctx`` selects, read off the event loop (walking a tree is blocking I/O)."""
    return await asyncio.to_thread(_gather, ctx, workspace)


def render_context(files: list[ContextFile]) -> str:
    """A "Codebase Context" section, one fenced block per file; empty when there are no files."""
    if not files:
        return ""
    blocks = [fenced(f) for f in files]
    return "\n\n".join([CONTEXT_HEADING, *blocks])


def fenced(file: ContextFile) -> str:
    """A fence longer than any backtick run in the content, so a file cannot close it early."""
    longest = max((len(run) for run in re.findall(r"`+", file.content)), default=0)
    fence = "`" * max(3, longest + 1)
    body = file.content if file.content.endswith("\n") or not file.content else file.content + "\n"
    return f"{fence}{file.path}\n{body}{fence}"


def _gather(ctx: CodebaseContext, workspace: Workspace) -> ContextSelection:
    selection = ContextSelection()
    wanted = _v2_selector(ctx) if ctx.glob_syntax == "v2" else _gitignore_selector(ctx)
    skipped_dirs = V2_SKIPPED_DIRS if ctx.glob_syntax == "v2" else SKIPPED_DIRS
    pattern = regex.compile(ctx.content_regex) if ctx.content_regex else None
    budget = ctx.max_bytes
    for rel in sorted(_walk(workspace.root, skipped_dirs, selection.skipped)):
        if ctx.max_files is not None and len(selection.files) >= ctx.max_files:
            break
        if not wanted(rel) or (ctx.default_excludes and _DEFAULT_EXCLUDES.match_file(rel)):
            continue
        data = _read(workspace, rel, budget, selection.skipped)
        if data is None:
            continue
        content = data.decode("utf-8", errors="replace")
        if pattern is not None and not _search(pattern, content, rel, selection.skipped):
            continue
        selection.files.append(ContextFile(path=rel, content=content))
        if budget is not None:
            budget -= len(data)
    return selection


def _gitignore_selector(ctx: CodebaseContext) -> Callable[[str], bool]:
    include = GitIgnoreSpec.from_lines(ctx.include_globs) if ctx.include_globs else None
    exclude = GitIgnoreSpec.from_lines(ctx.exclude_globs)
    return lambda rel: (include is None or include.match_file(rel)) and not exclude.match_file(rel)


def _v2_selector(ctx: CodebaseContext) -> Callable[[str], bool]:
    """v2's rule: excluded when any exclude glob matches; else included when there are no
    include globs or one matches. With no globs at all v2 sent only hand-picked files."""
    if not ctx.include_globs and not ctx.exclude_globs:
        return lambda rel: False

    def wanted(rel: str) -> bool:
        if any(go_match(glob, rel) for glob in ctx.exclude_globs):
            return False
        return not ctx.include_globs or any(go_match(glob, rel) for glob in ctx.include_globs)

    return wanted


def _walk(root: Path, skipped_dirs: frozenset[str], skipped: list[SkippedEntry]) -> Iterator[str]:
    """Workspace-relative posix paths of every file, without descending into skipped dirs.

    Directory symlinks are not followed (no loops, no escapes); file symlinks are listed
    and checked against the workspace when read. A folder that cannot be listed is skipped.
    """

    def unreadable(error: OSError) -> None:
        where = Path(error.filename).relative_to(root).as_posix() if error.filename else "."
        skipped.append(SkippedEntry(where, f"cannot list the folder: {error.strerror or error}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if d not in skipped_dirs]
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            yield (base / name).as_posix()


def _read(workspace: Workspace, rel: str, budget: int | None, skipped: list[SkippedEntry]) -> bytes | None:
    """The file's bytes, or None when it leads outside, is binary, or does not fit ``budget``.

    A file too large for what is left of the budget is skipped rather than ending the
    selection, so one big file early in the order does not starve the rest. Credential
    files (also through a link), links that cannot be followed and files that cannot be
    read are recorded in ``skipped``.
    """
    try:
        path = workspace.resolve(rel)
    except PathOutsideWorkspace:
        return None
    except WorkspacePathError as exc:  # a symlink loop, a folder on the way that cannot be read
        skipped.append(SkippedEntry(rel, f"cannot follow the link: {exc}"))
        return None
    if (protected := workspace.protected(rel, path)) is not None:
        skipped.append(SkippedEntry(rel, f"{PROTECTED_REASON} ({protected})"))
        return None
    try:
        if not path.exists():
            skipped.append(SkippedEntry(rel, "broken link: its target does not exist"))
            return None
        if not path.is_file() or (budget is not None and path.stat().st_size > budget):
            return None
        data = path.read_bytes()
    except OSError as exc:
        skipped.append(SkippedEntry(rel, f"cannot read the file: {_reason(exc)}"))
        return None
    if b"\0" in data or (budget is not None and len(data) > budget):
        return None
    return data


def _search(pattern: regex.Pattern[str], content: str, rel: str, skipped: list[SkippedEntry]) -> bool:
    """Whether ``content`` matches, searched with a time limit and without holding the GIL."""
    try:
        return pattern.search(content, concurrent=True, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        skipped.append(SkippedEntry(rel, f"content_regex took longer than {REGEX_TIMEOUT_S} s on this file"))
        return False


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
