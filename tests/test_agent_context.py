"""Codebase context: which workspace files an agent's prompt carries, and how they render."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from clarion_jupyter.agent.context import ContextFile, gather_context, render_context
from clarion_jupyter.agent.models import CodebaseContext
from clarion_jupyter.core.workspace import Workspace


def make_tree(root: Path, files: dict[str, str | bytes]) -> Workspace:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return Workspace(root)


async def paths(ctx: CodebaseContext, workspace: Workspace) -> list[str]:
    return [f.path for f in (await gather_context(ctx, workspace)).files]


async def test_include_globs_match_gitignore_style_at_any_depth_in_sorted_order(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"b.py": "b", "src/a.py": "a", "src/deep/c.py": "c", "notes.md": "n"})
    assert await paths(CodebaseContext(include_globs=["*.py"]), ws) == ["b.py", "src/a.py", "src/deep/c.py"]


async def test_exclude_globs_remove_matching_files(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"src/a.py": "a", "tests/test_a.py": "t", "src/gen/x.py": "x"})
    ctx = CodebaseContext(include_globs=["**/*.py"], exclude_globs=["tests/", "src/gen/**"])
    assert await paths(ctx, ws) == ["src/a.py"]


async def test_empty_include_selects_every_file(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"a.txt": "a", "d/b.md": "b"})
    assert await paths(CodebaseContext(), ws) == ["a.txt", "d/b.md"]


async def test_content_regex_keeps_only_files_whose_content_matches(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"a.py": "def run():\n    pass\n", "b.py": "X = 1\n"})
    assert await paths(CodebaseContext(include_globs=["*.py"], content_regex=r"^def \w+", max_files=5), ws) == ["a.py"]


async def test_max_files_stops_the_selection(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {f"f{i}.txt": str(i) for i in range(5)})
    assert await paths(CodebaseContext(max_files=2), ws) == ["f0.txt", "f1.txt"]


async def test_max_bytes_bounds_the_total_and_skips_files_that_do_not_fit(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"a.txt": "x" * 40, "b.txt": "y" * 80, "c.txt": "z" * 50})
    files = (await gather_context(CodebaseContext(max_bytes=100), ws)).files
    assert [f.path for f in files] == ["a.txt", "c.txt"]
    assert sum(len(f.content) for f in files) <= 100


async def test_binary_files_are_skipped(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"logo.png": b"\x89PNG\r\n\x1a\n\x00\x00", "a.txt": "text"})
    assert await paths(CodebaseContext(), ws) == ["a.txt"]


async def test_symlink_leading_outside_the_workspace_is_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not send")
    ws = make_tree(tmp_path / "ws", {"a.txt": "inside"})
    (tmp_path / "ws" / "leak.txt").symlink_to(outside / "secret.txt")
    (tmp_path / "ws" / "leakdir").symlink_to(outside, target_is_directory=True)
    files = (await gather_context(CodebaseContext(), ws)).files
    assert [f.path for f in files] == ["a.txt"]


async def test_symlink_inside_the_workspace_is_read(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"real.txt": "content"})
    (tmp_path / "alias.txt").symlink_to(tmp_path / "real.txt")
    assert await paths(CodebaseContext(), ws) == ["alias.txt", "real.txt"]


async def test_tool_and_vcs_directories_are_never_walked(tmp_path: Path) -> None:
    ws = make_tree(
        tmp_path,
        {
            ".git/config": "g",
            ".clarion/intents/0a1b/done.json": "{}",
            "node_modules/x/index.js": "n",
            ".venv/lib/site.py": "v",
            "pkg/__pycache__/m.pyc.txt": "c",
            "pkg/m.py": "m",
        },
    )
    assert await paths(CodebaseContext(), ws) == ["pkg/m.py"]


def test_render_context_puts_each_file_in_a_fence_labelled_with_its_path() -> None:
    text = render_context([ContextFile("src/a.py", "print('a')\n"), ContextFile("b.md", "# B")])
    assert text == "## Codebase Context\n\n```src/a.py\nprint('a')\n```\n\n```b.md\n# B\n```"


def test_render_context_fence_outlasts_backticks_in_the_content() -> None:
    text = render_context([ContextFile("README.md", "```py\nx = 1\n```\n")])
    assert "````README.md\n```py\nx = 1\n```\n````" in text


def test_render_context_of_no_files_is_empty() -> None:
    assert render_context([]) == ""


async def test_credential_files_are_never_sent_even_when_included(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-secret\n")
    (tmp_path / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "app.py").write_text("print('hi')\n")

    files = (await gather_context(CodebaseContext(include_globs=["*", ".*"]), Workspace(tmp_path))).files

    assert [f.path for f in files] == ["app.py"]


# --- nothing in the workspace breaks a step (hardening) --------------------------------------


async def test_symlink_loops_and_broken_links_are_skipped_and_reported(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"ok.txt": "fine"})
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "self").symlink_to(tmp_path / "self")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "gone.txt")

    selection = await gather_context(CodebaseContext(), ws)

    assert [f.path for f in selection.files] == ["ok.txt"]
    reasons = {s["path"]: s["reason"] for s in selection.summary()["skipped"]}
    assert sorted(reasons) == ["dangling.txt", "loop_a", "loop_b", "self"]
    assert reasons["loop_a"].startswith("cannot follow the link")
    assert reasons["dangling.txt"].startswith("broken link")


async def test_credential_files_stay_out_even_when_an_exclude_glob_negates_them(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-secret\n")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    ctx = CodebaseContext(exclude_globs=["!.env", "!id_rsa", "!**/id_rsa"])

    assert await paths(ctx, Workspace(tmp_path)) == ["app.py"]


async def test_credential_files_stay_out_of_v2_contexts_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KEY=1\n")
    (tmp_path / "a.go").write_text("package a\n")
    ctx = CodebaseContext(glob_syntax="v2", include_globs=["*"])

    assert await paths(ctx, Workspace(tmp_path)) == ["a.go"]


async def test_a_catastrophic_content_regex_does_not_hold_the_event_loop(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {f"f{i}.txt": "a" * 26 + "!" for i in range(3)})
    ctx = CodebaseContext(content_regex="(a+)+$")
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    selection = await gather_context(ctx, ws)
    elapsed = time.perf_counter() - started
    beat.cancel()

    assert selection.files == []
    assert elapsed < 2.0
    assert max(gaps, default=0) < 0.5


async def test_a_content_regex_that_times_out_skips_the_file_and_says_why(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {"slow.txt": "a" * 40 + "!", "fast.txt": "b"})
    selection = await gather_context(CodebaseContext(content_regex="(a|a)+$|b"), ws)

    assert [f.path for f in selection.files] == ["fast.txt"]
    (skipped,) = selection.skipped
    assert skipped.path == "slow.txt"
    assert "content_regex took longer than" in skipped.reason


def test_content_regex_is_checked_with_the_same_engine_that_runs_it() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        CodebaseContext(content_regex="(unclosed")


async def test_no_limits_when_max_files_and_max_bytes_are_null(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {f"f{i:02}.txt": "x" * 1000 for i in range(60)})
    files = (await gather_context(CodebaseContext(max_files=None, max_bytes=None), ws)).files
    assert len(files) == 60


# --- v2 glob meaning: the files Clarion v2 selected ------------------------------------------

V2_TREE = {
    "main.go": "package main",
    "README.md": "# r",
    "cmd/app/main.go": "package app",
    "internal/api/server.go": "package api",
    "internal/api/server_test.go": "package api",
    "internal/db/deep/x.go": "package deep",
    "dist/bundle.js": "b",
    "build/out.go": "package out",
    "venv/lib.py": "v",
    ".vscode/settings.json": "{}",
    ".hidden.go": "package hidden",
}


async def test_v2_star_never_crosses_a_slash(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, V2_TREE)
    ctx = CodebaseContext(glob_syntax="v2", include_globs=["*.go"])
    assert await paths(ctx, ws) == [".hidden.go", "main.go"]


async def test_v2_double_star_is_just_a_star(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, V2_TREE)
    ctx = CodebaseContext(glob_syntax="v2", include_globs=["internal/**/*.go"])
    assert await paths(ctx, ws) == ["internal/api/server.go", "internal/api/server_test.go"]


async def test_v2_exclude_wins_and_empty_include_means_everything_else(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, V2_TREE)
    ctx = CodebaseContext(glob_syntax="v2", exclude_globs=["*/*/*_test.go", "*.md", "internal/db/*"])
    assert await paths(ctx, ws) == [
        ".hidden.go",
        "cmd/app/main.go",
        "internal/api/server.go",
        "internal/db/deep/x.go",  # `internal/db/*` does not reach into deep/
        "main.go",
    ]


async def test_v2_without_any_glob_selects_nothing_automatically(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, V2_TREE)
    assert await paths(CodebaseContext(glob_syntax="v2", content_regex="package"), ws) == []


async def test_v2_skips_the_folders_v2_never_walked(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, V2_TREE)
    selected = await paths(CodebaseContext(glob_syntax="v2", exclude_globs=["nothing"]), ws)
    assert not any(p.startswith(("dist/", "build/", "venv/", ".vscode/")) for p in selected)
    assert len(selected) == 7


async def test_v2_content_regex_and_file_cap_apply_after_the_globs(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, V2_TREE)
    ctx = CodebaseContext(glob_syntax="v2", include_globs=["*/*/*.go"], content_regex="^package api$", max_files=1)
    assert await paths(ctx, ws) == ["internal/api/server.go"]


# --- what a context never sends: credentials at their target, generated files by default ------


async def test_a_credential_file_and_a_link_to_it_are_left_out_and_reported(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, {".env": "OPENAI_API_KEY=sk-live\n", "app.py": "print('hi')\n"})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").symlink_to("../.env")

    selection = await gather_context(CodebaseContext(), ws)

    assert [f.path for f in selection.files] == ["app.py"]
    assert {s.path: s.reason for s in selection.skipped} == {
        ".env": "holds credentials: never sent to a model (.env)",
        "sub/notes.txt": "holds credentials: never sent to a model (.env)",
    }


GENERATED_TREE = {
    "src/app.py": "print('hi')\n",
    ".ipynb_checkpoints/nb-checkpoint.ipynb": "{}",
    "static/remoteEntry.js.map": '{"mappings": "AAAA"}',
    "static/vendor.min.js": "!function(){}",
    "yarn.lock": "# yarn lockfile v1\n",
    "package-lock.json": "{}",
    "dist/pkg-1.0.tar.gz": "not really",
    "build/lib/app.py": "print('hi')\n",
    "pkg.egg-info/PKG-INFO": "Name: pkg\n",
}


async def test_checkpoints_build_output_source_maps_and_lock_files_are_left_out_by_default(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, GENERATED_TREE)
    assert await paths(CodebaseContext(exclude_globs=["*.md"]), ws) == ["src/app.py"]
    assert await paths(CodebaseContext(include_globs=["*.map", "*.lock"]), ws) == []


async def test_default_excludes_can_be_turned_off(tmp_path: Path) -> None:
    ws = make_tree(tmp_path, GENERATED_TREE)
    selected = await paths(CodebaseContext(include_globs=["*.lock"], default_excludes=False), ws)
    assert selected == ["yarn.lock"]
