"""What a ``%%clarion`` cell may change: it runs what it holds, never rewrites a saved workflow,
and an embedded engine in a kernel judges steps by the server's own configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebooks import api, run_in_server_kernel

from clarion_jupyter.testing.server import JupyterServerProcess

pytestmark = pytest.mark.timeout(300)

SAVED = {"id": "tour", "name": "Saved tour", "steps": [{"id": "a", "task": "echo", "with": {"value": "saved"}}]}
CELL = """%%clarion
id: tour
name: Tour as the cell has it
steps:
  - id: a
    task: echo
    with: {value: from the cell}
"""


def notebook_of(*cells: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in ("%load_ext clarion_jupyter", *cells)])


async def test_a_cell_with_a_saved_workflows_id_runs_its_own_document_and_saves_nothing(tmp_path: Path) -> None:
    with JupyterServerProcess(tmp_path) as server:
        await server.wait_ready()
        saved = await api(server, "POST", "api/v3/workflows", SAVED)
        path = server.root / "notebooks" / "cell.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook_of(CELL, "print(_.outputs, _.status.value)"), path)
        notebook = await run_in_server_kernel(server, path)
        after = await api(server, "GET", "api/v3/workflows/tour")
        runs = (await server.request("GET", "runs"))["runs"]
    assert after == saved
    assert [(r["workflow_id"], r["status"]) for r in runs] == [("tour", "succeeded")]
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "succeeded" in printed


def test_an_embedded_engine_in_a_kernel_reads_the_servers_configuration(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps({"ClarionExtension": {"allow_shell": False}}))
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {"JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(runtime),
           "CLARION_DB": str(tmp_path / "kernel.duckdb"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
    shell_cell = "%%clarion --local\nname: Shell\nsteps:\n  - {id: s, task: shell, with: {command: 'echo hi'}}\n"
    notebook = notebook_of(shell_cell)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True)
    client.execute(cwd=str(tmp_path), env={**os.environ, **env})
    said = "".join(o.get("text", "") + o.get("evalue", "") for o in notebook.cells[-1].outputs)
    assert "step 's' field 'task': shell steps are disabled on this server (allow_shell=False)" in said
