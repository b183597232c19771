"""The magic in a real kernel process: the kernel's interrupt (the stop button) cancels the
run a cell waits for, and the extension loads from ``c.InteractiveShellApp.extensions``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

pytestmark = pytest.mark.timeout(120)


async def execute(client: Any, code: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
    """Run ``code``; its execute reply and everything it printed or displayed as text."""
    msg_id = client.execute(code)
    text = []
    while True:
        message = await client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        content = message["content"]
        text.append(content.get("text", "") + str(content.get("data", {}).get("text/plain", "")))
        text.append(content.get("evalue", ""))
        if message["msg_type"] == "status" and content["execution_state"] == "idle":
            break
    reply = await client.get_shell_msg(timeout=timeout)
    return reply["content"], "".join(text)


async def start_kernel(tmp_path: Path, **env: str) -> tuple[AsyncKernelManager, Any]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    manager = AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel(
        cwd=str(tmp_path),
        env={**os.environ, "CLARION_DB": str(tmp_path / "k.duckdb"), "JUPYTER_RUNTIME_DIR": str(runtime), **env},
    )
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    return manager, client


async def test_interrupting_the_kernel_cancels_the_run_the_cell_waits_for(tmp_path: Path) -> None:
    manager, client = await start_kernel(tmp_path)
    try:
        await execute(client, "%load_ext clarion_jupyter")
        cell = client.execute(
            "%%clarion\nid: long\nname: Long\nsteps:\n"
            '  - {id: nap, task: shell, with: {command: "touch started; exec sleep 60"}}\n'
        )
        for _ in range(300):
            if (tmp_path / "started").exists():
                break
            await asyncio.sleep(0.05)
        assert (tmp_path / "started").exists(), "the step never started"
        await manager.interrupt_kernel()
        while (reply := await client.get_shell_msg(timeout=60))["parent_header"]["msg_id"] != cell:
            pass
        assert reply["content"]["status"] == "ok", reply["content"]  # cancelled, not a KeyboardInterrupt traceback
        _, status = await execute(client, "print(_.status.value, [s.status.value for s in _.steps])")
        assert "cancelled ['cancelled']" in status
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def test_the_extension_loads_from_the_kernel_config(tmp_path: Path) -> None:
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text("c.InteractiveShellApp.extensions = ['clarion_jupyter']\n")
    manager, client = await start_kernel(tmp_path, IPYTHONDIR=str(tmp_path / "ipython"))
    try:
        reply, text = await execute(client, "%clarion sql SELECT count(*) AS n FROM runs")
        assert reply["status"] == "ok", text
        assert "runs go to an embedded engine" in text
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def test_a_kernel_that_shuts_down_stops_its_embedded_engine_cleanly(tmp_path: Path) -> None:
    manager, client = await start_kernel(tmp_path)
    try:
        await execute(client, "%load_ext clarion_jupyter")
        reply, text = await execute(
            client, "%%clarion\nname: Hello\nsteps:\n  - {id: hi, task: echo, with: {value: 1}}\n"
        )
        assert reply["status"] == "ok" and "succeeded" in text, text
    finally:
        client.stop_channels()
        await manager.shutdown_kernel()
    # A clean close folds the journal into the tables and checkpoints: no write-ahead log is left.
    assert not (tmp_path / "k.duckdb.wal").exists()
    import duckdb

    with duckdb.connect(str(tmp_path / "k.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM run_journal").fetchone() == (0,)
        assert db.execute("SELECT status FROM runs").fetchall() == [("succeeded",)]
