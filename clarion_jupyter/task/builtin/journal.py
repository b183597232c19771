"""Crash-safe applies of file changes: a durable intent, then the writes, then a done record.

Before a ``file_write`` touches the workspace it writes an *intent* under
``.clarion/intents/<id>/`` (the workspace's own folder, so it lives wherever the task runs,
on an engine or a ``clarion worker`` host): which files change and how, the folders it will
create, and a copy of every file it replaces or deletes. Each step of that is fsynced before
the first workspace file is touched. Then it applies the changes (each file atomically: a temp
file and ``os.replace``), fsyncs them, and records the step's output as *done*.

An intent left unfinished (the process was killed, or a write failed) is **rolled back**:
created files and folders are removed, replaced and deleted files are restored from their
copies, stray temp files are removed. The workspace is then as it was before the attempt, so
the next attempt re-checks every precondition against the files the person reviewed and
applies the whole change set again. Rolling back (rather than forward) means recovery needs
nothing but the copies, and never finishes an apply whose preconditions may no longer hold.

Recovery runs when a worker starts (every unfinished intent of its workspace) and when the
interrupted step's next attempt runs (its own intent, by run and step key), which reports it
in its output as ``recovery``. An attempt that finds its step's *done* record (the apply
finished but the step's completion was lost in the crash) returns that output instead of
writing again, so an ``append`` or a ``delete`` is never applied twice.

One lock file serialises applies and recoveries in a workspace (``flock``, released by the
kernel when a process dies), so a recovery never rolls back an apply that is still running.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.workspace import INTERNAL_DIR, Workspace
from ..base import TaskFailed

log = logging.getLogger(__name__)

INTENTS = f"{INTERNAL_DIR}/intents"
RECORDS_KEPT_S = 30 * 24 * 3600
"""How long a done or rolled-back record waits for its step's next attempt (a run resumed
after a long outage still finds it); older ones are removed when a worker starts."""

_INTENT, _DONE, _ROLLED_BACK, _BACKUPS = "intent.json", "done.json", "rolled_back.json", "backups.bin"


@dataclass(frozen=True, slots=True)
class Planned:
    """One file's new state, computed before anything is written."""

    target: Path
    rel: str
    action: str
    data: bytes | None
    """The new bytes; None deletes the file."""
    unchanged: bool = False
    """The file already has these bytes: reported, never written."""

    def report(self) -> dict[str, Any]:
        action = "unchanged" if self.unchanged else self.action
        return {"path": self.rel, "action": action, "bytes": 0 if self.data is None else len(self.data)}


@dataclass(frozen=True, slots=True)
class Previous:
    """What an earlier attempt of the same step left: finished (its output) or rolled back."""

    output: dict[str, Any] | None
    rolled_back: list[str] | None
    fingerprint: str | None


def intent_id(run_id: str, key: str) -> str:
    """One step execution's intent, whatever its attempt, so a retry finds what a crash left."""
    return hashlib.sha256(f"{run_id}\0{key}".encode()).hexdigest()[:32]


def fingerprint(config: dict[str, Any]) -> str:
    """The change set's identity: a done record is reused only for the same changes."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


class Journal:
    """The intents of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        self._root = workspace.root
        self._folder = workspace.root / INTENTS

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the workspace's apply lock (blocking; call from a worker thread)."""
        if not self._folder.is_dir():
            self._folder.mkdir(parents=True, exist_ok=True)
            (self._folder.parent / ".gitignore").write_text("# Clarion's apply intents and backups\n*\n")
        fd = os.open(self._folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- applying ------------------------------------------------------------------------

    def apply(self, ident: str, print_: str, plans: list[Planned]) -> None:
        """Write ``plans`` all or nothing (call with the lock held, after :meth:`previous`); a
        failed write is rolled back and fails the step, retryably (a full disk may not stay full)."""
        folder = self._folder / ident
        dirs = _missing_dirs(plans, self._root)
        try:
            self._prepare(folder, ident, print_, plans, dirs)
        except OSError as exc:
            self._discard(folder)
            raise TaskFailed(
                f"recording the change set before applying it failed, so no file was changed: {exc}"
            ) from exc
        current = None
        try:
            for current in plans:
                if not current.unchanged:
                    _apply_one(current, ident)
            current = None
            _fsync_dirs({plan.target.parent for plan in plans} | {d.parent for d in dirs})
        except BaseException as exc:
            self._roll_back(folder)  # should this fail too, the intent stays for the next recovery
            self._discard(folder)
            if not isinstance(exc, OSError):
                raise
            where = f"writing '{current.rel}'" if current is not None else "making the writes durable"
            raise TaskFailed(
                f"{where} failed, so no file was changed: {exc}", details={"path": current and current.rel}
            ) from exc

    def done(self, ident: str, print_: str, output: dict[str, Any]) -> None:
        """The apply finished: keep its output for a retry, drop the intent and its copies."""
        folder = self._folder / ident
        _write_durably(folder / _DONE, _dumps({"fingerprint": print_, "output": output}))
        (folder / _INTENT).unlink()
        (folder / _BACKUPS).unlink()
        _fsync_dir(folder)

    def _prepare(self, folder: Path, ident: str, print_: str, plans: list[Planned], dirs: list[Path]) -> None:
        """Copies first, then the intent that names them: a folder without its intent touched nothing.

        The copies go into one file (the intent holds each one's offset and length), so a large
        change set costs one fsync for them, not one per file."""
        folder.mkdir(parents=True)
        changes = []
        with (folder / _BACKUPS).open("wb") as backups:
            for plan in plans:
                if plan.unchanged:
                    continue
                entry: dict[str, Any] = {"path": plan.rel, "action": plan.action, "backup": None, "mode": None}
                if plan.target.exists():
                    data = plan.target.read_bytes()
                    entry["backup"], entry["mode"] = [backups.tell(), len(data)], plan.target.stat().st_mode & 0o7777
                    backups.write(data)
                changes.append(entry)
            backups.flush()
            os.fsync(backups.fileno())
        intent = {
            "version": 1,
            "id": ident,
            "fingerprint": print_,
            "created_at": time.time(),
            "changes": changes,
            "dirs": [_rel(d, self._root) for d in dirs],
        }
        _write_durably(folder / _INTENT, _dumps(intent))
        _fsync_dir(folder.parent)

    # -- recovering ----------------------------------------------------------------------

    def previous(self, ident: str) -> Previous | None:
        """Settle what an earlier attempt of this step left (rolling an unfinished apply back)."""
        folder = self._folder / ident
        if (folder / _INTENT).exists() and not (folder / _DONE).exists():
            rolled = self._roll_back(folder)
            self._discard(folder)
            return Previous(None, rolled, None)
        found = None
        if (folder / _DONE).exists():
            record = json.loads((folder / _DONE).read_bytes())
            found = Previous(record["output"], None, record["fingerprint"])
        elif (folder / _ROLLED_BACK).exists():
            found = Previous(None, json.loads((folder / _ROLLED_BACK).read_bytes())["files"], None)
        self._discard(folder)
        return found

    def recover_all(self) -> list[str]:
        """At a worker's start: roll back every unfinished intent (keeping a record for the
        step's next attempt), drop records too old to matter. Returns the intents rolled back."""
        if not self._folder.is_dir():
            return []
        rolled: list[str] = []
        with self.locked():
            for folder in sorted(p for p in self._folder.iterdir() if p.is_dir()):
                if (folder / _DONE).exists():
                    self._discard(folder, keep=_DONE)  # a crash between the record and the cleanup
                    self._expire(folder, folder / _DONE)
                elif (folder / _INTENT).exists():
                    files = self._roll_back(folder)
                    self._discard(folder, keep=_ROLLED_BACK)
                    _write_durably(folder / _ROLLED_BACK, _dumps({"files": files, "at": time.time()}))
                    rolled.append(folder.name)
                    log.warning("rolled back an interrupted apply of %d file(s) (intent %s)", len(files), folder.name)
                elif (folder / _ROLLED_BACK).exists():
                    self._expire(folder, folder / _ROLLED_BACK)
                else:
                    self._discard(folder)  # copies made, intent never written: nothing was touched
        return rolled

    def _roll_back(self, folder: Path) -> list[str]:
        """Put every file the intent names back as it was; returns the files it names."""
        intent = json.loads((folder / _INTENT).read_bytes())
        ident = intent["id"]
        with (folder / _BACKUPS).open("rb") as backups:
            for change in reversed(intent["changes"]):
                target = self._workspace.resolve(change["path"])  # confined, should the intent be forged
                _remove(_temp_path(target, ident))
                if change["backup"] is None:  # the file did not exist before
                    _remove(target)
                    continue
                offset, length = change["backup"]
                backups.seek(offset)
                original = backups.read(length)
                if not target.is_file() or target.read_bytes() != original:
                    _atomic_write(target, original, change["mode"], ident)
        for rel in reversed(intent["dirs"]):
            with suppress(OSError):  # not empty: something else was put there since
                (self._root / rel).rmdir()
        _fsync_dirs({(self._root / change["path"]).parent for change in intent["changes"]})
        return [change["path"] for change in intent["changes"]]

    def _expire(self, folder: Path, record: Path) -> None:
        if time.time() - record.stat().st_mtime > RECORDS_KEPT_S:
            self._discard(folder)

    @staticmethod
    def _discard(folder: Path, keep: str | None = None) -> None:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for child in folder.iterdir():
            if child.name != keep:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


# -- file primitives -------------------------------------------------------------------------


def _remove(path: Path) -> None:
    """Unlink ``path`` if it is there (its folder may be missing, or be a file)."""
    with suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()


def _temp_path(target: Path, ident: str) -> Path:
    """Named after the intent, so a rollback finds the temp file a killed write left."""
    return target.with_name(f".{target.name}.{ident[:12]}.clarion-tmp")


def _atomic_write(target: Path, data: bytes, mode: int | None, ident: str) -> None:
    """Write via a temp file in the same directory and ``os.replace``: readers see old or new, never half."""
    temp = _temp_path(target, ident)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)  # keep e.g. the executable bit of a patched script
        os.replace(temp, target)
    except BaseException:
        _remove(temp)
        raise


def _apply_one(plan: Planned, ident: str) -> None:
    target = plan.target
    if plan.data is None:
        target.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)  # the folders the intent lists as created
    mode = target.stat().st_mode & 0o7777 if target.exists() else None
    _atomic_write(target, plan.data, mode, ident)


def _missing_dirs(plans: list[Planned], root: Path) -> list[Path]:
    """The folders the writes will create, parents first."""
    missing: set[Path] = set()
    for plan in plans:
        if plan.data is None or plan.unchanged:
            continue
        folder = plan.target.parent
        while folder != root and not folder.exists():
            missing.add(folder)
            folder = folder.parent
    return sorted(missing, key=lambda p: (len(p.parts), p))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``path`` whole (temp file, fsync, rename) and make its name durable."""
    temp = path.with_name(path.name + ".tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """A rename or unlink is durable only once its directory is fsynced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dirs(paths: set[Path]) -> None:
    for path in sorted(paths):
        if path.is_dir():
            _fsync_dir(path)
