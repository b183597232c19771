"""file_read and file_write against real files in a tmp workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.base import TaskContext, TaskFailed, TaskSettings
from clarion_jupyter.task.builtin.files import FileReadTask, FileWriteTask


def _ctx(root: Path, allow_protected: bool = False, **settings: Any) -> TaskContext:
    return TaskContext(
        run_id="r", step_id="s", key="s", attempt=1, workspace=Workspace(root), settings=TaskSettings(**settings),
        allow_protected=allow_protected,
    )  # fmt: skip


async def _read(root: Path, allow_protected: bool = False, **with_: Any) -> dict[str, Any]:
    return await FileReadTask().run(FileReadTask.Config(**with_), _ctx(root, allow_protected))


async def _write(root: Path, allow_protected: bool = False, **with_: Any) -> dict[str, Any]:
    return await FileWriteTask().run(FileWriteTask.Config(**with_), _ctx(root, allow_protected))


async def _preview(root: Path, allow_protected: bool = False, **with_: Any) -> dict[str, Any]:
    return await FileWriteTask().preview(FileWriteTask.Config(**with_), _ctx(root, allow_protected))


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for directories), Clarion's own folder left out:
    "nothing changed" means equal snapshots."""
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if ".clarion" not in p.relative_to(root).parts
    }


# --------------------------------------------------------------------------- file_read


async def test_read_returns_content_relative_path_and_size(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("héllo\n", encoding="utf-8")
    out = await _read(tmp_path, path="docs/a.txt")
    assert out == {"content": "héllo\n", "path": "docs/a.txt", "bytes": 7, "truncated": False}


async def test_read_truncates_at_max_bytes(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("0123456789")
    out = await _read(tmp_path, path="big.txt", max_bytes=4)
    assert (out["content"], out["bytes"], out["truncated"]) == ("0123", 10, True)


async def test_read_defaults_max_bytes_to_server_setting(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("0123456789")
    out = await FileReadTask().run(FileReadTask.Config(path="big.txt"), _ctx(tmp_path, max_output_bytes=3))
    assert (out["content"], out["truncated"]) == ("012", True)


async def test_read_truncation_drops_a_partial_multibyte_character(tmp_path: Path) -> None:
    (tmp_path / "u.txt").write_text("aé", encoding="utf-8")  # é is two bytes
    out = await _read(tmp_path, path="u.txt", max_bytes=2)
    assert out["content"] == "a"


async def test_read_replaces_undecodable_bytes(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"ok\xff")
    assert (await _read(tmp_path, path="bin"))["content"] == "ok\ufffd"


async def test_read_missing_file_fails_permanently(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="does not exist") as info:
        await _read(tmp_path, path="nope.txt")
    assert info.value.retryable is False


async def test_read_directory_fails(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(TaskFailed, match="is a directory"):
        await _read(tmp_path, path="d")


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd"])
async def test_read_outside_workspace_is_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    with pytest.raises(TaskFailed, match="outside the workspace") as info:
        await _read(root, path=path)
    assert info.value.retryable is False


async def test_read_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(TaskFailed, match="outside the workspace"):
        await _read(root, path="link.txt")


def test_read_config_rejects_unknown_encoding() -> None:
    with pytest.raises(ValidationError, match="unknown encoding"):
        FileReadTask.Config(path="a", encoding="no-such-codec")


# --------------------------------------------------------------------------- file_write: content


async def test_write_overwrites_and_creates_parent_dirs(tmp_path: Path) -> None:
    out = await _write(tmp_path, path="new/dir/a.txt", content="one")
    assert (tmp_path / "new/dir/a.txt").read_text() == "one"
    assert out == {"written": [{"path": "new/dir/a.txt", "action": "overwrite", "bytes": 3}]}
    await _write(tmp_path, path="new/dir/a.txt", content="two")
    assert (tmp_path / "new/dir/a.txt").read_text() == "two"


async def test_write_overwrite_keeps_file_permissions(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    await _write(tmp_path, path="run.sh", content="#!/bin/sh\necho hi\n")
    assert script.stat().st_mode & 0o777 == 0o755


async def test_write_leaves_no_temp_files_and_no_open_intent(tmp_path: Path) -> None:
    await _write(tmp_path, path="a.txt", content="x")
    assert _snapshot(tmp_path) == {"a.txt": b"x"}
    assert not list(tmp_path.glob(".clarion/intents/*/intent.json"))
    assert not list(tmp_path.glob(".clarion/intents/*/backups.bin"))
    assert (tmp_path / ".clarion" / ".gitignore").read_text().splitlines()[-1] == "*"  # git never shows it


async def test_write_append_adds_to_the_end(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("a\n")
    out = await _write(tmp_path, path="log.txt", content="b\n", mode="append")
    assert (tmp_path / "log.txt").read_text() == "a\nb\n"
    assert out["written"] == [{"path": "log.txt", "action": "append", "bytes": 4}]


async def test_write_append_creates_a_missing_file(tmp_path: Path) -> None:
    await _write(tmp_path, path="log.txt", content="b\n", mode="append")
    assert (tmp_path / "log.txt").read_text() == "b\n"


async def test_write_create_makes_a_new_file(tmp_path: Path) -> None:
    out = await _write(tmp_path, path="a.txt", content="x", mode="create")
    assert out["written"] == [{"path": "a.txt", "action": "create", "bytes": 1}]


async def test_write_create_fails_when_the_file_exists(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("keep")
    with pytest.raises(TaskFailed, match="already exists") as info:
        await _write(tmp_path, path="a.txt", content="x", mode="create")
    assert info.value.retryable is False
    assert (tmp_path / "a.txt").read_text() == "keep"


async def test_write_outside_workspace_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    with pytest.raises(TaskFailed, match="outside the workspace") as info:
        await _write(root, path="../evil.txt", content="x")
    assert info.value.retryable is False
    assert not (tmp_path / "evil.txt").exists()


# --------------------------------------------------------------------------- file_write: patch

ORIGINAL = "one\ntwo\nthree\n"
PATCH_X = """--- a/x.txt
+++ b/x.txt
@@ -1,3 +1,3 @@
 one
-two
+2
 three
"""


async def test_patch_applies_to_path(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text(ORIGINAL)
    out = await _write(tmp_path, path="x.txt", patch=PATCH_X)
    assert (tmp_path / "x.txt").read_text() == "one\n2\nthree\n"
    assert out["written"] == [{"path": "x.txt", "action": "patch", "bytes": 12}]


async def test_patch_without_headers_applies_to_path(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text(ORIGINAL)
    await _write(tmp_path, path="x.txt", patch="@@ -2 +2 @@\n-two\n+deux\n")
    assert (tmp_path / "x.txt").read_text() == "one\ndeux\nthree\n"


async def test_patch_that_does_not_apply_leaves_the_file_unchanged(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("one\nTWO\nthree\n")
    with pytest.raises(TaskFailed, match="does not apply") as info:
        await _write(tmp_path, path="x.txt", patch=PATCH_X)
    assert info.value.retryable is False
    assert (tmp_path / "x.txt").read_text() == "one\nTWO\nthree\n"


async def test_patch_without_hunks_fails(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text(ORIGINAL)
    with pytest.raises(TaskFailed, match="no unified diff hunks"):
        await _write(tmp_path, path="x.txt", patch="just some prose")


MULTI_PATCH = """diff --git a/x.txt b/x.txt
--- a/x.txt
+++ b/x.txt
@@ -1,3 +1,3 @@
 one
-two
+2
 three
--- /dev/null
+++ b/sub/new.txt
@@ -0,0 +1,2 @@
+hello
+-- not a header
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
"""


async def test_multi_file_patch_modifies_creates_and_deletes(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text(ORIGINAL)
    (tmp_path / "gone.txt").write_text("bye\n")
    out = await _write(tmp_path, patch=MULTI_PATCH)
    assert (tmp_path / "x.txt").read_text() == "one\n2\nthree\n"
    assert (tmp_path / "sub/new.txt").read_text() == "hello\n-- not a header\n"
    assert not (tmp_path / "gone.txt").exists()
    assert [(w["path"], w["action"]) for w in out["written"]] == [
        ("x.txt", "patch"),
        ("sub/new.txt", "create"),
        ("gone.txt", "delete"),
    ]


async def test_multi_file_patch_is_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text(ORIGINAL)
    (tmp_path / "gone.txt").write_text("something else\n")  # the last hunk will not apply
    before = _snapshot(tmp_path)
    with pytest.raises(TaskFailed, match=r"gone\.txt"):
        await _write(tmp_path, patch=MULTI_PATCH)
    assert _snapshot(tmp_path) == before


async def test_multi_file_patch_outside_workspace_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    patch = "--- /dev/null\n+++ b/../evil.txt\n@@ -0,0 +1 @@\n+x\n"
    with pytest.raises(TaskFailed, match="outside the workspace"):
        await _write(root, patch=patch)
    assert not (tmp_path / "evil.txt").exists()


async def test_patch_with_path_refuses_several_files(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="touches 3 files"):
        await _write(tmp_path, path="x.txt", patch=MULTI_PATCH)


async def test_patch_keeps_crlf_line_endings(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_bytes(ORIGINAL.replace("\n", "\r\n").encode())
    await _write(tmp_path, path="x.txt", patch=PATCH_X)
    assert (tmp_path / "x.txt").read_bytes() == b"one\r\n2\r\nthree\r\n"


# --------------------------------------------------------------------------- file_write: changes


async def test_changes_create_modify_and_delete(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("old")
    (tmp_path / "d.txt").write_text("bye")
    changes = [
        {"action": "create", "path": "src/c.txt", "new_content": "new", "description": "agents add notes"},
        {"action": "modify", "path": "m.txt", "new_content": "changed"},
        {"action": "delete", "path": "d.txt"},
    ]
    out = await _write(tmp_path, changes=changes)
    assert (tmp_path / "src/c.txt").read_text() == "new"
    assert (tmp_path / "m.txt").read_text() == "changed"
    assert not (tmp_path / "d.txt").exists()
    assert out["written"] == [
        {"path": "src/c.txt", "action": "create", "bytes": 3},
        {"path": "m.txt", "action": "modify", "bytes": 7},
        {"path": "d.txt", "action": "delete", "bytes": 0},
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"action": "modify", "path": "missing.txt", "new_content": "x"},
        {"action": "delete", "path": "missing.txt"},
        {"action": "create", "path": "../outside.txt", "new_content": "x"},
        {"action": "modify", "path": ".git/config", "new_content": "[core]\n\tfsmonitor = touch /tmp/x\n"},
    ],
    ids=["modify-missing", "delete-missing", "outside", "protected"],
)
async def test_changes_with_one_bad_entry_change_nothing(tmp_path: Path, bad: dict[str, Any]) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "m.txt").write_text("old")
    (root / "d.txt").write_text("bye")
    before = _snapshot(tmp_path)
    changes = [
        {"action": "create", "path": "src/c.txt", "new_content": "new"},
        {"action": "modify", "path": "m.txt", "new_content": "changed"},
        {"action": "delete", "path": "d.txt"},
        bad,
    ]
    with pytest.raises(TaskFailed) as info:
        await _write(root, changes=changes)
    assert info.value.retryable is False
    assert _snapshot(tmp_path) == before


async def test_changes_failing_midway_roll_back_what_was_written(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("old")
    (tmp_path / "d.txt").write_text("bye")
    (tmp_path / "blocker").write_text("a file, so blocker/x.txt cannot be created")
    before = _snapshot(tmp_path)
    changes = [
        {"action": "create", "path": "src/deep/c.txt", "new_content": "new"},
        {"action": "modify", "path": "m.txt", "new_content": "changed"},
        {"action": "delete", "path": "d.txt"},
        {"action": "create", "path": "blocker/x.txt", "new_content": "x"},
    ]
    with pytest.raises(TaskFailed, match=r"blocker/x\.txt"):
        await _write(tmp_path, changes=changes)
    assert _snapshot(tmp_path) == before


async def test_changes_touching_a_file_twice_are_refused(tmp_path: Path) -> None:
    changes = [
        {"action": "create", "path": "a.txt", "new_content": "1"},
        {"action": "create", "path": "./a.txt", "new_content": "2"},
    ]
    with pytest.raises(TaskFailed, match="more than once"):
        await _write(tmp_path, changes=changes)
    assert not (tmp_path / "a.txt").exists()


# --------------------------------------------------------------------------- file_write: config


@pytest.mark.parametrize(
    ("with_", "message"),
    [
        ({"path": "a.txt"}, "got none of them"),
        ({"path": "a.txt", "content": "x", "patch": "p"}, "got `content` and `patch`"),
        ({"content": "x", "changes": []}, "got `content` and `changes`"),
        ({"content": "x"}, "`content` needs a `path`"),
        ({"path": "a.txt", "changes": []}, "remove `path`"),
        ({"path": "a.txt", "patch": "p", "mode": "append"}, "`mode` applies only to `content`"),
        ({"path": "a.txt", "content": "x", "mode": "truncate"}, "mode"),
        ({"path": "a.txt", "content": "x", "overwrite": True}, "Extra inputs are not permitted"),
        ({"changes": [{"action": "modify", "path": "a.txt"}]}, "needs `new_content`"),
        ({"changes": [{"action": "rename", "path": "a.txt"}]}, "action"),
    ],
    ids=[
        "none",
        "content-and-patch",
        "content-and-changes",
        "content-without-path",
        "changes-with-path",
        "mode-without-content",
        "bad-mode",
        "unknown-key",
        "modify-without-content",
        "unknown-action",
    ],
)
def test_write_config_validation(with_: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FileWriteTask.Config(**with_)


async def test_changes_create_of_an_existing_file_is_applied_as_a_modify(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("old\n")
    changes = [{"action": "create", "path": "hello.txt", "new_content": "new\n"}]
    (file,) = (await _preview(tmp_path, changes=changes))["files"]
    assert file["action"] == "modify" and "-old\n+new\n" in file["diff"]
    out = await _write(tmp_path, changes=changes)
    assert out["written"] == [{"path": "hello.txt", "action": "modify", "bytes": 4}]
    assert (tmp_path / "hello.txt").read_text() == "new\n"


async def test_a_change_to_the_current_content_is_shown_and_reported_unchanged(tmp_path: Path) -> None:
    (tmp_path / "same.txt").write_text("same\n")
    before = (tmp_path / "same.txt").stat().st_mtime_ns
    changes = [{"action": "modify", "path": "same.txt", "new_content": "same\n"}]
    (file,) = (await _preview(tmp_path, changes=changes))["files"]
    assert file == {"path": "same.txt", "action": "unchanged", "diff": ""}
    out = await _write(tmp_path, changes=changes)
    assert out["written"] == [{"path": "same.txt", "action": "unchanged", "bytes": 5}]
    assert (tmp_path / "same.txt").stat().st_mtime_ns == before


async def test_changes_made_from_stale_content_are_a_conflict_and_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("edited since\n")
    changes = [
        {"action": "create", "path": "b.txt", "new_content": "b\n"},
        {"action": "modify", "path": "a.txt", "new_content": "mine\n", "original_content": "what I saw\n"},
    ]
    with pytest.raises(TaskFailed, match=r"conflict: 'a\.txt' changed") as info:
        await _write(tmp_path, changes=changes)
    assert info.value.details == {"path": "a.txt", "conflict": True}
    assert _snapshot(tmp_path) == {"a.txt": b"edited since\n"}


# --------------------------------------------------------------------------- protected paths

HOSTILE = "[core]\n\tfsmonitor = touch /tmp/x\n"


@pytest.mark.parametrize(
    "with_",
    [
        {"path": ".git/config", "content": HOSTILE},
        {"patch": "--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-[core]\n+[core] # x\n"},
        {"changes": [{"action": "create", "path": "ok.txt", "new_content": "x"},
                     {"action": "modify", "path": ".git/config", "new_content": HOSTILE}]},
    ],
    ids=["content", "patch", "changes"],
)  # fmt: skip
async def test_a_write_into_git_fails_before_anything_is_written(tmp_path: Path, with_: dict[str, Any]) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    before = _snapshot(tmp_path)
    for attempt in (_preview, _write):
        with pytest.raises(TaskFailed, match=r"'\.git/config' is a protected path.*allow_protected: true") as info:
            await attempt(tmp_path, **with_)
        assert info.value.retryable is False
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "path", [".GIT/config", "sub/.git/hooks/pre-commit", ".git", ".env", ".env.local", "deploy/id_rsa", ".ssh/config",
             "certs/server.KEY"],
)  # fmt: skip
async def test_protected_paths_are_refused_at_any_depth_and_case(tmp_path: Path, path: str) -> None:
    with pytest.raises(TaskFailed, match="protected path"):
        await _write(tmp_path, path=path, content="x")
    assert _snapshot(tmp_path) == {}


async def test_a_symlink_into_git_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    (tmp_path / "notes.txt").symlink_to(".git/config")
    (tmp_path / "meta").symlink_to(".git")
    for path in ("notes.txt", "meta/hooks/post-checkout"):
        with pytest.raises(TaskFailed, match=r"'\.git/.*' is a protected path"):
            await _write(tmp_path, path=path, content=HOSTILE)
    assert (tmp_path / ".git" / "config").read_text() == "[core]\n"
    assert not (tmp_path / ".git" / "hooks").exists()


async def test_allow_protected_writes_and_the_preview_says_so_loudly(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    changes = [{"action": "modify", "path": ".git/config", "new_content": "[core]\n\tbare = false\n"}]
    preview = await _preview(tmp_path, allow_protected=True, changes=changes)
    assert preview["files"][0]["protected"] is True
    assert preview["warning"].startswith("PROTECTED PATHS: this step writes .git/config")
    await _write(tmp_path, allow_protected=True, changes=changes)
    assert (tmp_path / ".git" / "config").read_text() == "[core]\n\tbare = false\n"


async def test_clarions_own_folder_is_refused_even_with_allow_protected(tmp_path: Path) -> None:
    for path in (".clarion/intents/x/intent.json", ".Clarion/notes"):
        with pytest.raises(TaskFailed, match="inside Clarion's own folder, which no step may write"):
            await _write(tmp_path, allow_protected=True, path=path, content="{}")
    with pytest.raises(TaskFailed, match="which no step may read"):
        await _read(tmp_path, allow_protected=True, path=".clarion/intents/lock")


async def test_reading_a_credential_file_needs_allow_protected(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_KEY=sk-123\n")
    with pytest.raises(TaskFailed, match=r"'\.env' is a protected path \(\.git/ or credentials\): refused to read"):
        await _read(tmp_path, path=".env")
    assert (await _read(tmp_path, allow_protected=True, path=".env"))["content"] == "API_KEY=sk-123\n"
