"""Codebase context: the workspace files an agent sends along with its prompt.

An agent's :class:`~clarion_jupyter.agent.models.CodebaseContext` selects files with
gitignore-style globs (what Clarion users already write in FilterSets), an optional content
regex, and limits on file count and total bytes, so that a prompt stays within budget
however large the workspace. Selection is deterministic (sorted paths), so the same
workspace gives the same prompt, which keeps runs reproducible and provider caches warm.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from ..core.workspace import PathOutsideWorkspace, Workspace
from .models import CodebaseContext

SKIPPED_DIRS = frozenset({".git", "node_modules", ".venv", "__pycache__"})
"""Never useful to a model and often huge; skipped whatever the globs say."""

SECRET_GLOBS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*", ".netrc", ".npmrc", ".pypirc", "*.p12")
"""Files that hold credentials are never sent to a model, whatever the include globs say."""

CONTEXT_HEADING = "## Codebase Context"


@dataclass(frozen=True, slots=True)
class ContextFile:
    path: str
    """Workspace-relative, posix separators."""
    content: str


async def gather_context(ctx: CodebaseContext, workspace: Workspace) -> list[ContextFile]:
    """The files ``ctx`` selects, read off the event loop (walking a tree is blocking I/O)."""
    return await asyncio.to_thread(_gather, ctx, workspace)


def render_context(files: list[ContextFile]) -> str:
    """A "Codebase Context" section, one fenced block per file; empty when there are no files."""
    if not files:
        return ""
    blocks = [_fenced(f) for f in files]
    return "\n\n".join([CONTEXT_HEADING, *blocks])


def _fenced(file: ContextFile) -> str:
    """A fence longer than any backtick run in the content, so a file cannot close it early."""
    longest = max((len(run) for run in re.findall(r"`+", file.content)), default=0)
    fence = "`" * max(3, longest + 1)
    body = file.content if file.content.endswith("\n") or not file.content else file.content + "\n"
    return f"{fence}{file.path}\n{body}{fence}"


def _gather(ctx: CodebaseContext, workspace: Workspace) -> list[ContextFile]:
    include = GitIgnoreSpec.from_lines(ctx.include_globs) if ctx.include_globs else None
    exclude = GitIgnoreSpec.from_lines([*SECRET_GLOBS, *ctx.exclude_globs])
    pattern = re.compile(ctx.content_regex) if ctx.content_regex else None
    selected: list[ContextFile] = []
    budget = ctx.max_bytes
    for rel in sorted(_walk(workspace.root)):
        if len(selected) >= ctx.max_files:
            break
        if (include is not None and not include.match_file(rel)) or exclude.match_file(rel):
            continue
        data = _read(workspace, rel, budget)
        if data is None:
            continue
        content = data.decode("utf-8", errors="replace")
        if pattern is not None and not pattern.search(content):
            continue
        selected.append(ContextFile(path=rel, content=content))
        budget -= len(data)
    return selected


def _walk(root: Path) -> Iterator[str]:
    """Workspace-relative posix paths of every file, without descending into skipped dirs.

    Directory symlinks are not followed (no loops, no escapes); file symlinks are listed
    and checked against the workspace when read.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            yield (base / name).as_posix()


def _read(workspace: Workspace, rel: str, budget: int) -> bytes | None:
    """The file's bytes, or None when it leads outside, is binary, or does not fit ``budget``.

    A file too large for what is left of the budget is skipped rather than ending the
    selection, so one big file early in the order does not starve the rest.
    """
    try:
        path = workspace.resolve(rel)
        if not path.is_file() or path.stat().st_size > budget:
            return None
        data = path.read_bytes()
    except (PathOutsideWorkspace, OSError):
        return None
    if b"\0" in data or len(data) > budget:
        return None
    return data
