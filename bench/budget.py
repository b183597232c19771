"""What a run's budget costs: the same for_each of llm_call steps with and without a budget.

With a budget the engine prepares and quotes each call (its prompt counted and priced by
litellm, in the provider's process) before it is sent, one after the other in the run's
executor. B1 runs N calls of a priced model (openai/gpt-4o-mini) against a local
OpenAI-compatible server that answers after DELAY s, both ways, and prints the wall times,
the extra time per call, and the quote's own latency.

Usage: python bench/budget.py [--calls N] [--delay S] [--workers W] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from clarion_jupyter import Agent, Engine
from clarion_jupyter.llm.provider import LLMRequest
from clarion_jupyter.task.builtin.llm_call import LLMCallTask

WORKFLOW = {
    "name": "llm-map",
    "inputs": {"prompts": {"type": "array"}},
    "steps": [
        {"id": "ask", "task": "llm_call", "for_each": "{{ inputs.prompts }}", "with": {"agent": "stub", "prompt": "item {{ item }}"}}
    ],
}  # fmt: skip


async def timed(engine: Engine, calls: int, budget: dict[str, float] | None) -> float:
    start = time.perf_counter()
    run = await engine.wait(await engine.submit(WORKFLOW, {"prompts": list(range(calls))}, budget=budget))
    wall = time.perf_counter() - start
    assert run.status == "succeeded", run.error
    return wall


async def main(args: argparse.Namespace) -> None:
    stub = subprocess.Popen(
        [sys.executable, "-m", "clarion_jupyter.testing.openai_server", "--delay-s", str(args.delay), "--reply", "ok"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = stub.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            async with Engine(Path(tmp) / "bench.duckdb", workspace_root=tmp, workers=args.workers) as engine:
                agent = Agent(
                    id="stub", name="stub", model="openai/gpt-4o-mini", api_base=url, parameters={"max_tokens": 50}
                )
                await engine.agents.upsert(agent)
                budget = {"usd": 1000.0, "tokens": 10**9}
                await timed(engine, args.workers, budget)  # warm: the provider's process, litellm, the plans
                free = statistics.median([await timed(engine, args.calls, None) for _ in range(args.repeat)])
                held = statistics.median([await timed(engine, args.calls, budget) for _ in range(args.repeat)])
                request = LLMRequest(
                    model=agent.model, messages=[{"role": "user", "content": "item 1"}], parameters={"max_tokens": 50}
                )
                quotes = []
                for _ in range(200):
                    start = time.perf_counter()
                    await LLMCallTask.provider.quote(request)
                    quotes.append(time.perf_counter() - start)
    finally:
        stub.terminate()
        stub.wait()
    quotes.sort()
    print(json.dumps({
        "workload": "B1", "calls": args.calls, "workers": args.workers, "delay_s": args.delay,
        "wall_s_without_budget": round(free, 3), "wall_s_with_budget": round(held, 3),
        "extra_ms_per_call": round((held - free) * 1000 / args.calls, 3),
        "quote_ms_p50": round(quotes[len(quotes) // 2] * 1000, 3), "quote_ms_p99": round(quotes[int(len(quotes) * 0.99)] * 1000, 3),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
