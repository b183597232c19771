"""Run one LLM step with the cache on, and stall the commit of its success: the state a crash
leaves when a reply came back (and was cached) but the step's completion was not yet durable.

    python tests/support/run_stalled_commit.py DB_FILE WORKSPACE API_BASE

Prints ``run <run_id>`` once the run is durably queued, then ``stalled`` when the step's
success reaches the group commit, which from then on writes nothing; the process then waits
to be killed. The engine stores a reply in the cache before it records the step's success,
so by the time ``stalled`` is printed the entry is in the file.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from clarion_jupyter import Engine
from clarion_jupyter.storage.records import Batch

WORKFLOW = {"name": "Ask", "steps": [{"id": "ask", "task": "llm_call", "with": {"agent": "asker", "prompt": "Why?"}}]}


async def main(db: str, workspace: str, api_base: str) -> None:
    async with Engine(db, workspace_root=workspace) as engine:
        await engine.create_agent({"id": "asker", "name": "Asker", "model": "openai/fake", "api_base": api_base})
        store: Any = engine.storage.runs
        write = store.write

        async def stalled(batch: Batch, *, submission: bool = False) -> None:
            if any(s.key == "ask" and s.status == "succeeded" for s in batch.steps.values()):
                print("stalled", flush=True)
                await asyncio.Event().wait()
            await write(batch, submission=submission)

        store.write = stalled
        print(f"run {await engine.submit(WORKFLOW, cache=True)}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
