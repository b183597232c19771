"""Clarion v2 import benchmark; one JSON line per workload.

I1  import of a clarion.db with 1,000 agents and 10,000 runs, written as v2 wrote it, into
    a new DuckDB file: seconds (target < 5 s)
I2  the same import again (everything already there: agents unchanged, no run twice)

``cpu_s`` is the process's CPU time (all threads): on a shared machine it shows the cost
when the wall time is inflated by other load.

Usage: python bench/import.py [--agents N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from clarion_jupyter import Engine
from clarion_jupyter.testing.clarion_v2 import FILE_OPERATIONS_SCHEMA, v2_agent, v2_run, write_clarion_db

START_MS = 1_714_557_600_000


def build(path: Path, agents: int, runs: int) -> Path:
    configs = [{"id": "cfg_openai", "name": "OpenAI", "provider": "OpenAI", "apiKey": "sk-bench"}]
    docs = [
        v2_agent(
            f"agent_{i:04d}", f"Agent {i}", system_prompt=f"You are agent {i}.", include_globs=["*.py"],
            schema=FILE_OPERATIONS_SCHEMA, parameters={"temperature": 0.2, "max_output_tokens": 2048},
            config_id="cfg_openai",
        )
        for i in range(agents)
    ]  # fmt: skip
    change = {"action": "modify", "path": "app.py", "new_content": "print('hi')\n" * 20}
    rows = [
        (
            "proj_1",
            v2_run(
                f"run-{START_MS + i * 1000}", prompt=f"Task {i}", agent=docs[i % agents], summary=f"Did {i}",
                file_changes=[change], raw_output={"summary": f"Did {i}", "file_changes": [change]},
                token_usage={"prompt_tokens": 900, "completion_tokens": 150},
            ),
            "2024-05-01 10:00:00",
        )
        for i in range(runs)
    ]  # fmt: skip
    project = {"id": "proj_1", "name": "Bench", "path": "/tmp/bench", "lastOpenedAt": "", "activeAgentId": ""}
    return write_clarion_db(path, agents=docs, llm_configs=configs, projects=[project], runs=rows)


def emit(name: str, **values: Any) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"workload": name, **values, "peak_rss_mb": round(peak, 1)}), flush=True)


async def main(agents: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = build(Path(tmp) / "clarion.db", agents, runs)
        async with Engine(Path(tmp) / "v3.duckdb", workspace_root=tmp, run_workers=False) as engine:
            for name in ("I1", "I2"):
                started, cpu = time.perf_counter(), time.process_time()
                report = await engine.import_v2(source)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                assert report.complete, report.errors[:3]
                emit(
                    name, agents=len(report.changes), runs_found=report.runs.found,
                    runs_imported=report.runs.imported, seconds=round(seconds, 2), cpu_s=round(cpu, 2), target_s=5.0,
                    source_mb=round(source.stat().st_size / 1e6, 1),
                )  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10_000)
    options = parser.parse_args()
    asyncio.run(main(options.agents, options.runs))
