"""The first ``llm_call`` of a fresh server imports litellm (seconds of CPU): in the provider's
own process, so Jupyter's own ``/api/status`` keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient

from clarion_jupyter.testing.server import JupyterServerProcess

WORKFLOW = {
    "id": "first",
    "name": "First call",
    "steps": [
        {
            "id": "ask",
            "task": "llm_call",
            "with": {"agent": "plain", "prompt": "hi", "parameters": {"mock_response": "ok"}},
        }
    ],
}
MAX_STATUS_S = 0.2
"""The import on the loop froze the server for 3-12 s; in a thread, C calls of the import that
hold the GIL still stalled it 0.1-0.5 s. In a child process the worst wait measured is ~15 ms;
the bound leaves room for a busy 2-core machine."""


async def test_the_first_llm_call_does_not_freeze_the_server(tmp_path: Path) -> None:
    with JupyterServerProcess(tmp_path) as server:
        await server.wait_ready()
        await server.request("POST", "agents", {"id": "plain", "name": "Plain", "model": "openai/gpt-4o"})
        await server.request("POST", "workflows", WORKFLOW)
        run_id = (await server.request("POST", "workflows/first/run", {}))["run_id"]
        http = AsyncHTTPClient(force_instance=True)
        latencies = []
        try:
            while (run := await server.request("GET", f"runs/{run_id}"))["status"] not in ("succeeded", "failed"):
                started = time.perf_counter()
                await http.fetch(f"{server.url}api/status", headers=server.headers)
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)
        finally:
            http.close()
    assert run["status"] == "succeeded", run
    assert max(latencies) < MAX_STATUS_S, f"/api/status waited up to {max(latencies) * 1000:.0f} ms"
    assert len(latencies) > 10, "the call ended before the import could be observed"
