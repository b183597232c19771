"""Built-in file tasks: ``file_read`` and ``file_write``.

Both are confined to the workspace (``..``, absolute paths elsewhere and symlinks out are
refused), and to its ordinary files: ``.git/`` and the credential set
(:data:`~clarion_jupyter.core.workspace.PROTECTED_GLOBS`) only for a step that says
``allow_protected: true``, Clarion's own ``.clarion/`` never. A ``.git/config`` can run
commands at the next ``git status`` and a read ``.env`` ends up in the run history, so a
read needs the opt-in as much as a write does.

``file_write`` is all or nothing in every form: it resolves every path, checks every
precondition and computes every new file body before it touches the disk, then applies
through the :mod:`.journal` (a durable intent with copies of what it replaces), so neither
a failed write nor a killed process leaves a half-applied change set for the retry, or the
human, to untangle. All disk access happens in a worker thread so a slow filesystem never
stalls the engine's event loop.
"""

from __future__ import annotations

import asyncio
import codecs
import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import whatthepatch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from whatthepatch.exceptions import WhatThePatchException

from ...core.workspace import Workspace, WorkspacePathError
from ..base import Task, TaskConfig, TaskContext, TaskFailed
from .journal import Journal, Planned, fingerprint, intent_id


def confine(workspace: Workspace, path: str) -> Path:
    """Resolve ``path`` inside the workspace; escaping it, or a path no filesystem can hold
    (a NUL byte, too long), is a permanent failure of the step."""
    try:
        return workspace.resolve(path)
    except WorkspacePathError as exc:
        raise TaskFailed(str(exc), details={"path": path}, retryable=False) from exc


def confine_file(workspace: Workspace, path: str, *, allow_protected: bool, verb: str = "write") -> Path:
    """:func:`confine`, and a permanent failure for a protected file the step did not allow,
    or for Clarion's own folder (that no step may touch)."""
    target = confine(workspace, path)
    internal = workspace.internal(path, target)
    if internal is not None:
        message = f"'{internal}' is inside Clarion's own folder, which no step may {verb}"
        raise TaskFailed(message, details={"path": internal, "protected": True}, retryable=False)
    protected = None if allow_protected else workspace.protected(path, target)
    if protected is not None:
        message = (
            f"'{protected}' is a protected path (.git/ or credentials): refused to {verb} it; "
            "a step that must do so says `allow_protected: true`"
        )
        raise TaskFailed(message, details={"path": protected, "protected": True}, retryable=False)
    return target


# --------------------------------------------------------------------------- file_read


class FileReadConfig(TaskConfig):
    """What a ``file_read`` step reads, confined to the workspace and bounded in bytes."""

    path: str = Field(min_length=1, description="File to read, relative to the workspace root.")
    encoding: str = Field("utf-8", description="Text encoding; undecodable bytes become U+FFFD.")
    max_bytes: int | None = Field(
        None, ge=0, description="Read at most this many bytes (default: the server's max_output_bytes)."
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        """Reject an unknown codec when the workflow is validated, not when the step runs."""
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value


class FileReadTask(Task):
    """Reads a text file of the workspace, capped so a huge file cannot bloat the run store."""

    name = "file_read"
    Config = FileReadConfig
    description = (
        "Read a workspace file as text. Output: `content`, `path` (workspace-relative), "
        "`bytes` (file size) and `truncated` (true when the file is larger than `max_bytes`)."
    )

    async def run(self, config: FileReadConfig, ctx: TaskContext) -> dict[str, Any]:
        limit = ctx.settings.max_output_bytes if config.max_bytes is None else config.max_bytes
        return await asyncio.to_thread(_read_file, ctx, config.path, config.encoding, limit)


def _read_file(ctx: TaskContext, path: str, encoding: str, limit: int) -> dict[str, Any]:
    workspace = ctx.workspace
    target = confine_file(workspace, path, allow_protected=ctx.allow_protected, verb="read")
    rel = workspace.relative(target)
    _check_state(target, rel, must_exist=True)
    with target.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit)
    truncated = size > len(data)
    # When the cut falls inside a multi-byte character, drop that partial character
    # instead of ending the text with a replacement character.
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    content = decoder.decode(data, final=not truncated)
    return {"content": content, "path": rel, "bytes": size, "truncated": truncated}


# --------------------------------------------------------------------------- file_write config


class FileChange(BaseModel):
    """One entry of a Clarion "File Operations" reply.

    Extra keys are ignored rather than forbidden: the list usually comes straight from an
    agent's JSON output, which tends to carry commentary fields such as ``description``.
    """

    model_config = ConfigDict(extra="ignore")

    action: Literal["create", "modify", "delete"]
    path: str = Field(min_length=1)
    new_content: str | None = None
    original_content: str | None = None
    """What the agent saw (v2 sent it along): when the file no longer has it, the change set is refused."""

    @model_validator(mode="after")
    def _content_when_needed(self) -> FileChange:
        if self.action != "delete" and self.new_content is None:
            raise ValueError(f"{self.action} of {self.path!r} needs `new_content`")
        return self


class FileWriteConfig(TaskConfig):
    """What a ``file_write`` step changes: one file's content or patch, or a change set applied all or nothing."""

    path: str | None = Field(None, min_length=1, description="Target file, relative to the workspace root.")
    content: str | None = Field(None, description="Text to write to `path`.")
    mode: Literal["overwrite", "append", "create"] = Field(
        "overwrite", description="For `content`: replace, append, or create (fails if the file exists)."
    )
    patch: str | None = Field(
        None, description="Unified diff: for `path`, or (without `path`) naming its files in ---/+++ headers."
    )
    changes: list[FileChange] | None = Field(
        None, description="File operations [{action: create|modify|delete, path, new_content}], all or nothing."
    )

    @model_validator(mode="after")
    def _exactly_one_form(self) -> FileWriteConfig:
        forms = [name for name in ("content", "patch", "changes") if getattr(self, name) is not None]
        if len(forms) != 1:
            got = " and ".join(f"`{name}`" for name in forms) or "none of them"
            raise ValueError(f"file_write needs exactly one of `content`, `patch` or `changes` (got {got})")
        if self.content is not None and self.path is None:
            raise ValueError("`content` needs a `path`")
        if self.changes is not None and self.path is not None:
            raise ValueError("`changes` names its own paths; remove `path`")
        if "mode" in self.model_fields_set and self.content is None:
            raise ValueError("`mode` applies only to `content`")
        return self


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a change set applies, and whether its step may touch protected paths."""

    workspace: Workspace
    allow_protected: bool


def _check_state(target: Path, rel: str, *, must_exist: bool | None) -> None:
    """Fail, permanently, when ``target`` is a directory or its existence is not as required."""
    if target.is_dir():
        raise TaskFailed(f"'{rel}' is a directory, not a file", details={"path": rel}, retryable=False)
    exists = target.exists()
    if must_exist and not exists:
        raise TaskFailed(f"file '{rel}' does not exist", details={"path": rel}, retryable=False)
    if must_exist is False and exists:
        raise TaskFailed(f"file '{rel}' already exists", details={"path": rel}, retryable=False)


def _read_text(target: Path, rel: str) -> str:
    """Current UTF-8 text of a file to be edited; bytes, not text mode, so CRLF survives."""
    try:
        return target.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFailed(f"'{rel}' is not UTF-8 text: {exc}", details={"path": rel}, retryable=False) from exc


NewText = Callable[[Path, str], str | None]
"""Computes a file's new text from its resolved path and relative name; ``None`` deletes it."""


def _fixed(text: str | None) -> NewText:
    """A :data:`NewText` that does not depend on the file's current content."""
    return lambda _target, _rel: text


def _plan(where: _Where, path: str, action: str, must_exist: bool | None, new_text: NewText) -> Planned:
    """Resolve and check one target, then compute its new content (reading the old one if needed).

    A ``create`` of a file that exists (allowed only where ``must_exist`` is None: an agent's
    change list, whose entries carry the whole new content) is the modify it amounts to, and
    a new content equal to the current one is reported unchanged and never written."""
    target = confine_file(where.workspace, path, allow_protected=where.allow_protected)
    rel = where.workspace.relative(target)
    _check_state(target, rel, must_exist=must_exist)
    text = new_text(target, rel)
    data = None if text is None else text.encode("utf-8")
    exists = target.exists()
    if action == "create" and exists:
        action = "modify"
    return Planned(target, rel, action, data, unchanged=exists and data is not None and target.read_bytes() == data)


def _plan_content(config: FileWriteConfig, where: _Where) -> list[Planned]:
    assert config.path is not None and config.content is not None  # ensured by the validator
    content = config.content

    def appended(target: Path, rel: str) -> str:
        return (_read_text(target, rel) if target.exists() else "") + content

    if config.mode == "append":
        return [_plan(where, config.path, "append", None, appended)]
    must_exist = False if config.mode == "create" else None
    return [_plan(where, config.path, config.mode, must_exist, _fixed(content))]


def _plan_changes(changes: list[FileChange], where: _Where) -> list[Planned]:
    """A ``create`` may find its file (v2 applied it as a modify); ``modify`` and ``delete`` must."""
    return [
        _plan(where, c.path, c.action, None if c.action == "create" else True, _unchanged_since(c)) for c in changes
    ]


def _unchanged_since(change: FileChange) -> NewText:
    """The change's new text, provided the file still has the content the change was made from."""

    def new_text(target: Path, rel: str) -> str | None:
        if change.original_content is not None and target.exists():
            current = _read_text(target, rel)
            if current != change.original_content:
                message = f"conflict: '{rel}' changed since the change was proposed; nothing was written"
                raise TaskFailed(message, details={"path": rel, "conflict": True}, retryable=False)
        return change.new_content

    return new_text


# --------------------------------------------------------------------------- patches

_HUNK_HEADER = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


@dataclass(frozen=True, slots=True)
class _FileDiff:
    """The part of a unified diff that concerns one file."""

    old_path: str | None  # None: /dev/null, the diff creates the file
    new_path: str | None  # None: /dev/null, the diff deletes the file
    has_header: bool
    text: str


def _header_path(line: str) -> str | None:
    """``--- a/src/x.py\\t2024-01-01`` -> ``src/x.py``; ``/dev/null`` -> None."""
    name = line[4:].split("\t", 1)[0].strip()
    if name == "/dev/null":
        return None
    return name[2:] if name.startswith(("a/", "b/")) else name


def _split_file_diffs(patch: str) -> list[_FileDiff]:
    """Split a unified diff into per-file parts.

    whatthepatch only splits multi-file diffs whose ``---`` lines carry timestamps or that
    have ``diff``/``Index:`` lines; the plain ``--- a/x`` / ``+++ b/x`` pairs that most tools
    and LLMs emit come back as one diff. Hunk bodies are skipped by their line counts, so a
    removed line that starts with ``--`` is never mistaken for a header. Lines outside
    headers and hunks (``diff --git``, ``index``, prose) are dropped.
    """
    parts: list[list[str]] = []
    lines = patch.splitlines()
    old_left = new_left = 0
    for i, line in enumerate(lines):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            old_left -= tag in (" ", "", "-")
            new_left -= tag in (" ", "", "+")
            parts[-1].append(line)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            parts.append([line])
        elif line.startswith("+++ ") and parts and parts[-1][-1].startswith("--- "):
            parts[-1].append(line)
        elif match := _HUNK_HEADER.match(line):
            old_left, new_left = int(match.group(1) or 1), int(match.group(2) or 1)
            if not parts:
                parts.append([])
            parts[-1].append(line)
    return [_file_diff(part) for part in parts]


def _file_diff(lines: list[str]) -> _FileDiff:
    has_header = bool(lines) and lines[0].startswith("--- ")
    old_path, new_path = (_header_path(lines[0]), _header_path(lines[1])) if has_header else (None, None)
    return _FileDiff(old_path, new_path, has_header, "\n".join(lines) + "\n")


def _apply_file_diff(diff: _FileDiff, old_text: str, rel: str) -> str:
    """New text of one file; a hunk whose context does not match fails the step."""
    try:
        parsed = [d for d in whatthepatch.parse_patch(diff.text) if d.changes]
        lines = whatthepatch.apply_diff(parsed[0], old_text) if parsed else None
    except WhatThePatchException as exc:
        raise TaskFailed(f"patch does not apply to '{rel}': {exc}", details={"path": rel}, retryable=False) from exc
    if lines is None:
        raise TaskFailed(f"patch for '{rel}' has no hunks", details={"path": rel}, retryable=False)
    if not lines:
        return ""
    newline = "\r\n" if "\r\n" in old_text else "\n"
    keeps_final_newline = old_text.endswith("\n") or not old_text
    return newline.join(lines) + (newline if keeps_final_newline else "")


def _plan_file_diff(diff: _FileDiff, path: str | None, where: _Where) -> Planned:
    """Plan one file's patch: created (old is /dev/null), deleted (new is /dev/null) or patched."""
    creates = diff.has_header and diff.old_path is None
    deletes = diff.has_header and diff.new_path is None
    if creates and deletes:
        raise TaskFailed("patch names /dev/null on both sides", retryable=False)
    if not creates and not deletes and diff.old_path != diff.new_path and path is None:
        message = f"patch renames '{diff.old_path}' to '{diff.new_path}'; renames are not supported"
        raise TaskFailed(message, retryable=False)
    target = path or diff.new_path or diff.old_path
    if target is None:
        raise TaskFailed("patch without `path` needs ---/+++ headers naming its files", retryable=False)

    def new_text(file: Path, rel: str) -> str | None:
        patched = _apply_file_diff(diff, "" if creates else _read_text(file, rel), rel)
        return None if deletes else patched

    action = "create" if creates else "delete" if deletes else "patch"
    return _plan(where, target, action, not creates, new_text)


def _plan_patch(config: FileWriteConfig, where: _Where) -> list[Planned]:
    assert config.patch is not None  # ensured by the validator
    diffs = _split_file_diffs(config.patch)
    if not diffs:
        raise TaskFailed("patch contains no unified diff hunks", retryable=False)
    if config.path is not None and len(diffs) > 1:
        message = f"patch for `path` '{config.path}' touches {len(diffs)} files; drop `path` to apply them all"
        raise TaskFailed(message, retryable=False)
    return [_plan_file_diff(diff, config.path, where) for diff in diffs]


# --------------------------------------------------------------------------- applying


def _check_unique(plans: list[Planned]) -> None:
    """Two edits of one file in a change set would make "all or nothing" ambiguous."""
    seen: set[Path] = set()
    for plan in plans:
        if plan.target in seen:
            raise TaskFailed(f"'{plan.rel}' is changed more than once", details={"path": plan.rel}, retryable=False)
        seen.add(plan.target)


def _planned(config: FileWriteConfig, where: _Where) -> list[Planned]:
    """Every file's new state, every precondition checked, nothing written yet."""
    if config.changes is not None:
        plans = _plan_changes(config.changes, where)
    elif config.patch is not None:
        plans = _plan_patch(config, where)
    else:
        plans = _plan_content(config, where)
    _check_unique(plans)
    return plans


def _write_files(config: FileWriteConfig, ctx: TaskContext) -> dict[str, Any]:
    """Apply through the journal, after settling what an interrupted attempt of this step left."""
    journal = Journal(ctx.workspace)
    ident, print_ = intent_id(ctx.run_id, ctx.key), fingerprint(config.model_dump(mode="json"))
    with journal.locked():
        previous = journal.previous(ident)
        if previous is not None and previous.output is not None and previous.fingerprint == print_:
            message = "an earlier attempt had applied every change before it was cut off; nothing was written again"
            return {**previous.output, "recovery": {"action": "already_applied", "message": message}}
        plans = _planned(config, _Where(ctx.workspace, ctx.allow_protected))
        journal.apply(ident, print_, plans)
        output: dict[str, Any] = {"written": [plan.report() for plan in plans]}
        if previous is not None and previous.rolled_back is not None:
            count = len(previous.rolled_back)
            message = f"an interrupted apply of {count} file(s) was rolled back, then every change was applied"
            output["recovery"] = {"action": "rolled_back", "files": count, "message": message}
        journal.done(ident, print_, output)
    return output


def _diff_files(config: FileWriteConfig, ctx: TaskContext) -> dict[str, Any]:
    """The unified diff of every planned change against the file as it is now, protected
    paths (when the step allows them) flagged on the file and in a warning."""
    files = []
    workspace = ctx.workspace
    for plan in _planned(config, _Where(workspace, ctx.allow_protected)):
        exists = plan.target.exists()
        old = plan.target.read_bytes().decode("utf-8", errors="replace") if exists else ""
        new = "" if plan.data is None else plan.data.decode("utf-8")
        action = "unchanged" if plan.unchanged else "delete" if plan.data is None else "modify" if exists else "create"
        before = f"a/{plan.rel}" if exists else "/dev/null"
        after = "/dev/null" if plan.data is None else f"b/{plan.rel}"
        lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), before, after)
        entry: dict[str, Any] = {"path": plan.rel, "action": action, "diff": "".join(lines)}
        if workspace.protected(plan.rel, plan.target) is not None:
            entry["protected"] = True
        files.append(entry)
    preview: dict[str, Any] = {"kind": "diff", "files": files, "diff": "".join(f["diff"] for f in files)}
    protected = [f["path"] for f in files if f.get("protected") and f["action"] != "unchanged"]
    if protected:
        preview["warning"] = (
            f"PROTECTED PATHS: this step writes {', '.join(protected)}, allowed only because it says "
            "`allow_protected: true`. Files in .git/ can run commands at the next git command; "
            "credential files hold secrets. Approve only if you expected exactly this."
        )
    return preview


class FileWriteTask(Task):
    """Writes, patches or applies an agent's change list to workspace files, all or nothing."""

    name = "file_write"
    Config = FileWriteConfig
    description = (
        "Write workspace files, all or nothing: `path` + `content` (`mode` overwrite/append/create), "
        "`patch` (unified diff; without `path` it may touch several files), or `changes` "
        "[{action: create|modify|delete, path, new_content}] (a create of an existing file is a modify). "
        "`.git/` and credential files need `allow_protected: true` on the step. Output: `written` "
        "[{path, action, bytes}], `bytes` being the file's size after the write (0 when deleted), action "
        "`unchanged` for a file that already had that content; `recovery` {action: rolled_back | "
        "already_applied, message} when an earlier attempt was cut off mid-apply."
    )

    async def run(self, config: FileWriteConfig, ctx: TaskContext) -> dict[str, Any]:
        return await asyncio.to_thread(_write_files, config, ctx)

    async def preview(self, config: FileWriteConfig, ctx: TaskContext) -> dict[str, Any]:
        return await asyncio.to_thread(_diff_files, config, ctx)

    @classmethod
    async def recover(cls, workspace: Workspace) -> None:
        await asyncio.to_thread(Journal(workspace).recover_all)
