"""Every notebook in notebooks/ runs top to bottom in a real kernel, both ways it is used:

* under a real Jupyter server with the extension, in a kernel that server started (through
  its sessions API, as JupyterLab does): the magic finds that server by the kernel's own id,
  so the notebook's runs are the server's runs (listed by ``GET /api/v3/runs``); also under
  a JupyterHub-style ``base_url``;
* with no server at all (nbclient starting its own kernel, as papermill does): the magic runs
  an embedded engine in the kernel on its own DuckDB file;
* in an environment built exactly as ``scripts/start.sh`` builds it (``scripts/env.sh``'s
  venv and ``pip install -e .``, no test extras): what the main job installs is enough.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool

from clarion_jupyter.testing.server import JupyterServerProcess

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.timeout(300)


class ServerKernel(AsyncKernelManager):
    """A kernel the Jupyter server started: this process only connects to it (and so never
    asks a provisioner it does not have whether the process lives)."""

    owns_kernel = Bool(False)

    @property
    def has_kernel(self) -> bool:
        return True


def outputs_text(notebook: Any) -> str:
    return "\n".join(
        str(output.get("text", "")) + json.dumps(output.get("data", {})) + str(output.get("evalue", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


async def api(server: JupyterServerProcess, method: str, path: str, body: Any = None, base: str = "/") -> Any:
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}{base}{path}",
        method=method,
        body=None if body is None else json.dumps(body),
        headers=server.headers,
    )
    return json.loads(response.body) if response.body else None


def copy_examples(root: Path) -> None:
    for folder in ("notebooks", "examples"):
        shutil.copytree(REPO / folder, root / folder, dirs_exist_ok=True)


async def run_in_server_kernel(server: JupyterServerProcess, path: Path, base: str = "/") -> Any:
    """Execute the notebook in a kernel that the server starts for it, as JupyterLab would."""
    relative = f"notebooks/{path.name}"
    session = await api(server, "POST", "api/sessions", {"path": relative, "type": "notebook", "name": path.name,
                                                          "kernel": {"name": "python3"}}, base)  # fmt: skip
    kernel = session["kernel"]["id"]
    try:
        manager = ServerKernel(connection_file=str(server.workdir / "runtime" / f"kernel-{kernel}.json"))
        manager.load_connection_file()
        notebook = nbformat.read(path, as_version=4)
        await NotebookClient(notebook, km=manager, timeout=120).async_execute()
        return notebook
    finally:
        await api(server, "DELETE", f"api/sessions/{session['id']}", None, base)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
async def test_notebook_runs_cleanly_in_a_kernel_of_the_server(path: Path, tmp_path: Path) -> None:
    server = JupyterServerProcess(tmp_path, env={"CLARION_DB": str(tmp_path / "not-the-server.duckdb")})
    copy_examples(server.root)
    with server:
        await server.wait_ready()
        notebook = await run_in_server_kernel(server, path)
        runs = (await server.request("GET", "runs?limit=200"))["runs"]
    text = outputs_text(notebook)
    assert "runs go to the Jupyter server at" in text or path.name == "rest_from_other_tools.ipynb"
    assert runs, "the notebook's runs are not the server's runs"
    assert not (tmp_path / "not-the-server.duckdb").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
async def test_notebook_runs_cleanly_without_a_server(path: Path, tmp_path: Path) -> None:
    copy_examples(tmp_path)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {"CLARION_DB": str(tmp_path / "kernel.duckdb"), "JUPYTER_RUNTIME_DIR": str(runtime),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3")
    await client.async_execute(cwd=str(tmp_path / "notebooks"), env={**os.environ, **env})
    if path.name != "rest_from_other_tools.ipynb":
        assert "runs go to an embedded engine in this kernel" in outputs_text(notebook)
        assert (tmp_path / "kernel.duckdb").exists()


async def test_the_magic_finds_its_server_under_a_jupyterhub_base_url(tmp_path: Path) -> None:
    base = "/user/ada/"
    server = JupyterServerProcess(tmp_path, server={"base_url": base},
                                  env={"CLARION_DB": str(tmp_path / "not-the-server.duckdb")})  # fmt: skip
    copy_examples(server.root)
    with server:
        await ready_under(server, base)
        notebook = await run_in_server_kernel(server, REPO / "notebooks" / "parallel_and_conditions.ipynb", base)
        runs = (await api(server, "GET", "api/v3/runs", None, base))["runs"]
    assert f"runs go to the Jupyter server at http://127.0.0.1:{server.port}{base}" in outputs_text(notebook)
    assert {run["workflow_id"] for run in runs} == {"fan-out", "branch", "evens", "resilient"}
    assert all(run["status"] == "succeeded" for run in runs)


async def ready_under(server: JupyterServerProcess, base: str) -> None:
    """Until the extension answers under ``base`` (the server's own wait assumes the root)."""
    for _ in range(600):
        try:
            await api(server, "GET", "api/v3/health", None, base)
            return
        except (OSError, HTTPClientError):
            if server.process is not None and server.process.poll() is not None:
                break
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server did not become ready:\n{server.log_tail()}")


@pytest.mark.timeout(1200)
async def test_every_notebook_runs_clean_with_only_what_the_start_command_installs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    build = subprocess.run(
        ["bash", "-c", 'source scripts/env.sh && pip_install -e "$ROOT"'],
        cwd=REPO, env={**os.environ, "CLARION_VENV": str(venv)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    installed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout.lower()  # fmt: skip
    assert "pytest" not in installed, "the start command's environment must not hold the test extras"
    kernels = tmp_path / "kernels" / "start-env"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "start.sh environment", "language": "python",
    }))  # fmt: skip
    copy_examples(tmp_path)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {**os.environ, "CLARION_DB": str(tmp_path / "kernel.duckdb"), "JUPYTER_RUNTIME_DIR": str(runtime),
           "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
    failures = {}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        manager = AsyncKernelManager(kernel_name="start-env", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels.parent)]))  # fmt: skip
        try:
            await NotebookClient(notebook, km=manager, timeout=120).async_execute(
                cwd=str(tmp_path / "notebooks"), env=env
            )
        except Exception as exc:  # every notebook is tried: the failures are reported together
            failures[path.name] = str(exc)[-2000:]
    assert not failures, failures
