"""Codebase context: which workspace files an agent's prompt carries, and how they render."""

from __future__ import annotations

from pathlib import Path

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
    return [f.path for f in await gather_context(ctx, workspace)]


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
    files = await gather_context(CodebaseContext(max_bytes=100), ws)
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
    files = await gather_context(CodebaseContext(), ws)
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

    files = await gather_context(CodebaseContext(include_globs=["*", ".*"]), Workspace(tmp_path))

    assert [f.path for f in files] == ["app.py"]
