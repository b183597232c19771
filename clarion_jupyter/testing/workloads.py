"""Workflows, timings and processes the benchmarks share (bench/engine.py, bench/queues.py, bench/profile_llm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..agent.models import Agent
from ..workflow.engine import Engine


def chain(n: int) -> dict[str, Any]:
    """``n`` echo steps, each reading the one before: every step waits for its predecessor."""
    steps = [{"id": "s0", "task": "echo", "with": {"value": 0}}]
    steps += [
        {"id": f"s{i}", "task": "echo", "with": {"value": f"{{{{ steps.s{i - 1}.output.value + 1 }}}}"}}
        for i in range(1, n)
    ]
    return {"name": f"chain-{n}", "steps": steps}


def fan_out(n: int) -> dict[str, Any]:
    """``n`` parallel echo steps and a join step that reads the first and the last."""
    group = [{"id": f"p{i}", "task": "echo", "with": {"value": i}} for i in range(n)]
    join = {
        "id": "join",
        "task": "echo",
        "with": {"value": f"{{{{ steps.p0.output.value + steps.p{n - 1}.output.value }}}}"},
    }
    return {"name": f"fan-{n}", "steps": [{"parallel": group}, join]}


async def timed_run(engine: Engine, workflow: dict[str, Any]) -> float:
    """Seconds from submit to the end of a run, which must succeed."""
    start = time.perf_counter()
    run = await engine.wait(await engine.submit(workflow))
    assert run.status == "succeeded", run.error
    return time.perf_counter() - start


BENCH_KEY_ENV = "CLARION_BENCH_KEY"
"""The stub agent's key variable (a name the secret policy allows; worker processes inherit it)."""


def llm_map() -> dict[str, Any]:
    """One ``llm_call`` per item of ``inputs.prompts``, by agent ``stub`` (see :func:`stub_agent`)."""
    return {
        "name": "llm-map",
        "inputs": {"prompts": {"type": "array"}},
        "steps": [
            {
                "id": "ask",
                "task": "llm_call",
                "for_each": "{{ inputs.prompts }}",
                "with": {"agent": "stub", "prompt": "item {{ item }}"},
            }
        ],
    }


def stub_agent(url: str) -> Agent:
    """An agent on a priced model name (so litellm prices each call as in real use) at ``url``."""
    os.environ.setdefault(BENCH_KEY_ENV, "bench-key-not-secret")
    return Agent(id="stub", name="stub", model="openai/gpt-4o-mini", api_base=url, api_key_env=BENCH_KEY_ENV)


@contextmanager
def stub_server(delay_s: float) -> Iterator[tuple[str, int]]:
    """The local OpenAI-compatible server in its own process (its CPU is not the measured
    process's), answering after ``delay_s``: its URL and pid."""
    stub = subprocess.Popen(
        [sys.executable, "-m", "clarion_jupyter.testing.openai_server", "--delay-s", str(delay_s), "--reply", "ok"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield stub.stdout.readline().strip(), stub.pid
    finally:
        stub.terminate()
        stub.wait()


def cpu_s(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK")
