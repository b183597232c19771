"""`clarion agents import` of a v2 clarion.db larger than the server's 10 MB body limit, through
a real Jupyter server and the real CLI: the database is streamed, not held in one body."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from clarion_jupyter.agent.v2runs import V2_RUN_WORKFLOW_ID
from clarion_jupyter.testing.clarion_v2 import v2_agent, v2_run, write_clarion_db
from clarion_jupyter.testing.server import JupyterServerProcess

BODY_LIMIT = 10 * 1024 * 1024
RUNS = 1200


def large_clarion_db(path: Path) -> Path:
    """A v2 database of about 13 MB: two agents and many runs with sizeable outputs (v2 kept
    every run's raw reply, which is what makes real files grow)."""
    editor = v2_agent("basic_editor", "Basic editor", system_prompt="Edit the code.")
    reviewer = v2_agent("go_reviewer", "Go reviewer", provider="Anthropic", model="claude-3-5-sonnet-latest")
    runs = [
        (
            "project-1",
            v2_run(
                f"run-{i:05d}",
                prompt=f"Change number {i}",
                agent=editor if i % 2 else reviewer,
                summary=f"summary {i}",
                file_changes=[{"action": "modify", "path": f"src/f{i}.py", "new_content": "x = 1\n" * 1500}],
            ),
            f"2025-01-01 00:{i // 60 % 60:02d}:{i % 60:02d}",
        )
        for i in range(RUNS)
    ]
    projects = [{"id": "project-1", "name": "Project", "rootPath": "/home/me/project"}]
    return write_clarion_db(path, agents=[editor, reviewer], projects=projects, runs=runs)


def clarion(server: JupyterServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(server.workdir / "runtime"), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "clarion_jupyter.cli", *args, "--db", str(server.db_path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


async def test_a_clarion_db_over_the_body_limit_imports_through_a_running_server(tmp_path: Path) -> None:
    db = await asyncio.to_thread(large_clarion_db, tmp_path / "clarion.db")
    assert db.stat().st_size > BODY_LIMIT
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        result = await asyncio.to_thread(clarion, server, "agents", "import", str(db), "--json")
        agents = (await server.request("GET", "agents"))["agents"]  # the server holds the file: the CLI used it
        page = await server.request("GET", f"runs?workflow_id={V2_RUN_WORKFLOW_ID}&limit=1")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(c["id"], c["source"]) for c in report["changes"]] == [
        ("basic_editor", "clarion.db agents/basic_editor"),
        ("go_reviewer", "clarion.db agents/go_reviewer"),
    ]
    assert report["runs"]["found"] == report["runs"]["imported"] == RUNS
    assert {a["id"] for a in agents} == {"basic_editor", "go_reviewer"}
    assert page["runs"][0]["workflow_id"] == V2_RUN_WORKFLOW_ID


async def test_a_body_over_the_limit_that_is_not_a_database_says_how_to_send_one(tmp_path: Path) -> None:
    """A folder's multipart upload keeps the ordinary limit; the answer says what to do instead."""
    with JupyterServerProcess(tmp_path / "server", clarion={"max_body_bytes": 1024}) as server:
        await server.wait_ready()
        folder = tmp_path / "agents"
        folder.mkdir()
        (folder / "big.yml").write_text("# padding\n" * 500)
        result = await asyncio.to_thread(clarion, server, "agents", "import", str(folder))

    assert result.returncode != 0
    assert "larger than the limit of 1024 bytes" in result.stderr
    assert "clarion agents import path/to/clarion.db" in result.stderr
