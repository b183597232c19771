"""Every notebook in notebooks/ runs top to bottom in a real kernel, against a real server.

The kernel finds the server the way a notebook in JupyterLab does (the runtime dir's server
list), so this also proves that notebook runs are the server's runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from clarion_jupyter.testing.server import JupyterServerProcess

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
async def test_notebook_runs_cleanly_against_the_server(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = JupyterServerProcess(tmp_path)
    for folder in ("notebooks", "examples"):
        shutil.copytree(REPO / folder, server.root / folder)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    with server:
        await server.wait_ready()
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(server.root / "notebooks")}},
        )
        await client.async_execute()
        runs = (await server.request("GET", "runs"))["runs"]

    outputs = "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "workflow_succeeded" in outputs
    assert runs and all(run["status"] == "succeeded" for run in runs)
