"""With JupyterLab holding the database, the CLI goes through that server's API instead of
stopping at the lock, so its runs are the server's runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from clarion_jupyter.testing.server import JupyterServerProcess

FLOW = """
id: from-cli
name: From the CLI
inputs: {n: {type: integer}}
steps:
  - {id: double, task: echo, with: {value: "{{ inputs.n * 2 }}"}}
outputs: {doubled: "{{ steps.double.output.value }}"}
"""


def clarion(server: JupyterServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(server.workdir / "runtime"), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "clarion_jupyter.cli", *args, "--db", str(server.db_path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


async def test_run_goes_through_the_server_that_holds_the_database(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        result = await asyncio.to_thread(clarion, server, "run", str(flow), "--input", "n=21", "--verbose")
        runs = (await server.request("GET", "runs"))["runs"]
        listed = await asyncio.to_thread(clarion, server, "runs", "--json")
        shown = await asyncio.to_thread(clarion, server, "show", runs[0]["run_id"], "--json")

    assert result.returncode == 0, result.stderr
    assert f"(using the Jupyter server at {server.url})" in result.stderr
    assert "✓ double" in result.stdout and '"doubled": 42' in result.stdout
    assert [(r["workflow_id"], r["status"]) for r in runs] == [("from-cli", "succeeded")]
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == [runs[0]["run_id"]]
    assert json.loads(shown.stdout)["outputs"] == {"doubled": 42}


async def test_a_run_through_the_server_saves_the_file_only_when_asked(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        plain = await asyncio.to_thread(clarion, server, "run", str(flow), "--input", "n=1")
        after_plain = [w["id"] for w in (await server.request("GET", "workflows"))["workflows"]]
        saving = await asyncio.to_thread(clarion, server, "run", str(flow), "--input", "n=2", "--save")
        saved = await server.request("GET", "workflows/from-cli")
    assert plain.returncode == saving.returncode == 0, plain.stderr + saving.stderr
    assert "from-cli" not in after_plain
    assert saved["source"] == FLOW


async def test_without_a_server_for_that_file_the_lock_error_stands(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        stranger = JupyterServerProcess(tmp_path / "other", db_path=server.db_path)
        stranger.workdir.mkdir(parents=True)
        result = await asyncio.to_thread(clarion, stranger, "run", str(flow), "--input", "n=1")

    assert result.returncode != 0
    assert "in use by another process" in result.stderr


V2_AGENT = Path(__file__).parent / "fixtures" / "agents" / "code_reviewer.yaml"
REPLY = {"summary": "hello", "file_changes": [{"action": "create", "path": "hello.txt", "new_content": "hi"}]}
EDITOR = {
    "id": "basic_editor",
    "name": "Basic editor",
    "model": "openai/gpt-4o-mini",
    "parameters": {"mock_response": json.dumps(REPLY)},
    "output_schema": {"type": "object", "required": ["summary", "file_changes"]},
}


async def test_every_command_goes_through_the_server_that_holds_the_database(tmp_path: Path) -> None:
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        await server.request("POST", "agents", EDITOR)
        imported = await asyncio.to_thread(clarion, server, "agents", "import", str(V2_AGENT), "--verbose")
        listed = await asyncio.to_thread(clarion, server, "agents", "list")
        started = await asyncio.to_thread(clarion, server, "agent", "run", "basic_editor", "Say hi", "--json")
        run_id = json.loads(started.stdout)["run_id"]
        untouched = not (server.root / "hello.txt").exists()
        approved = await asyncio.to_thread(clarion, server, "approve", run_id, "apply", "--comment", "ok")
        resumed = await asyncio.to_thread(clarion, server, "resume", "--verbose")
        written = (server.root / "hello.txt").read_text()

    assert imported.returncode == 0, imported.stderr
    assert "using the Jupyter server" in imported.stderr and "created code" in imported.stdout
    assert "basic_editor" in listed.stdout.split() and len(listed.stdout.splitlines()) == 2
    assert started.returncode == 3 and json.loads(started.stdout)["status"] == "waiting"
    assert untouched and written == "hi"
    assert approved.returncode == 0, approved.stderr
    assert "✓ apply" in approved.stdout and f"run {run_id} succeeded" in approved.stdout
    assert resumed.returncode == 0 and "no interrupted runs" in resumed.stdout


async def test_a_folder_imported_through_the_server_names_each_file_in_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "v2" / "agents"
    folder.mkdir(parents=True)
    (folder / "reviewer.yaml").write_text(V2_AGENT.read_text())
    (folder / "broken.yaml").write_text("name: [unclosed\n")
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        imported = await asyncio.to_thread(clarion, server, "agents", "import", str(tmp_path / "v2"), "--verbose")
    assert "using the Jupyter server" in imported.stderr
    output = imported.stdout + imported.stderr
    assert "agents/reviewer.yaml" in output and "agents/broken.yaml" in output, output
    assert "request body" not in output
