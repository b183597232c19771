"""Run a workflow on an engine in this process, printing each committed event; used by the resume tests.

    python tests/support/run_workflow.py DB_FILE WORKSPACE [WORKFLOW_FILE [QUEUE_URL]]

Prints ``run <run_id>`` once the run is durably queued, then ``event <seq> <type> <step_id>``
for every event as it is committed (``subscribe`` only delivers committed events), so a
test can tell exactly how far the run got before it kills this process.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from clarion_jupyter import Engine

DEFAULT_WORKFLOW = Path(__file__).with_name("resumable.yaml")


async def main(db: str, workspace: str, workflow: Path, queue_url: str) -> int:
    async with Engine(db, workspace_root=workspace, queue_url=queue_url) as engine:
        run_id = await engine.submit(workflow.read_text())
        print(f"run {run_id}", flush=True)
        async for event in engine.subscribe(run_id):
            print(f"event {event.seq} {event.type} {event.step_id or '-'}", flush=True)
        run = await engine.get_run(run_id)
        print(f"done {run.status.value}", flush=True)
    return 0


if __name__ == "__main__":
    workflow_file = Path(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_WORKFLOW
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], workflow_file, sys.argv[4] if len(sys.argv) > 4 else "local")))
