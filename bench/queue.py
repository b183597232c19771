"""Queue benchmarks: what a broker costs per step, local vs Redis vs NATS; one JSON line per queue.

For each queue: an engine with persistence on, and the steps run by one worker with M slots
(for ``local``, the engine's own in-process workers; for Redis and NATS, one ``clarion
worker`` process on a real broker started for the benchmark, as in tests/test_scaleout.py).

- ``ms_per_step``: the marginal cost of one step in a chain of echo steps, where every step
  waits for the one before: (t(chain of 50) - t(chain of 1)) / 49, so a run's fixed cost is
  left out. This is a step's round trip: engine → queue → worker → queue → engine.
- ``steps_per_s``: N concurrent runs of a 10-step echo chain, all steps over the wall time.
- ``engine_peak_rss_mb`` / ``worker_peak_rss_mb``: peak resident memory of the engine
  process (each queue is measured in a fresh process) and of the worker process.

Usage: python bench/queue.py [--only local,redis,nats] [--runs N] [--slots M] [--repeat R]
"""

from __future__ import annotations

import sys

# Run as `python bench/queue.py`, this file's folder heads the import path, and its name would
# shadow the standard library's `queue` (which concurrent.futures imports): drop the folder.
sys.path.pop(0)

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from clarion_jupyter import Engine
from clarion_jupyter.testing.brokers import BROKERS, WorkerProcess

QUEUES = ("local", "redis", "nats")
CHAIN, THROUGHPUT_CHAIN = 50, 10


def chain(n: int) -> dict[str, Any]:
    steps = [{"id": "s0", "task": "echo", "with": {"value": 0}}]
    steps += [
        {"id": f"s{i}", "task": "echo", "with": {"value": f"{{{{ steps.s{i - 1}.output.value + 1 }}}}"}}
        for i in range(1, n)
    ]
    return {"name": f"chain-{n}", "steps": steps}


async def timed_run(engine: Engine, workflow: dict[str, Any]) -> float:
    start = time.perf_counter()
    run = await engine.wait(await engine.submit(workflow))
    assert run.status == "succeeded", run.error
    return time.perf_counter() - start


@asynccontextmanager
async def setup(kind: str, tmp: Path, slots: int) -> AsyncIterator[tuple[Engine, WorkerProcess | None]]:
    """The engine, and the worker process that runs its steps (None: in-process, the local queue)."""
    async with AsyncExitStack() as stack:
        if kind == "local":
            engine = await stack.enter_async_context(Engine(tmp / "bench.duckdb", workers=slots, workspace_root=tmp))
            yield engine, None
            return
        broker = stack.enter_context(BROKERS[kind](tmp))
        engine = await stack.enter_async_context(
            Engine(tmp / "bench.duckdb", workers=slots, workspace_root=tmp, queue_url=broker.url)
        )
        worker = await stack.enter_async_context(WorkerProcess(broker.url, tmp, slots=slots))
        await worker.wait_ready()
        yield engine, worker


async def measure(kind: str, runs: int, slots: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with setup(kind, Path(tmp), slots) as (engine, worker):
            await timed_run(engine, chain(5))  # warm up: imports, connections, compiled templates
            long = statistics.median([await timed_run(engine, chain(CHAIN)) for _ in range(repeat)])
            short = statistics.median([await timed_run(engine, chain(1)) for _ in range(repeat)])
            best = float("inf")
            workflow = chain(THROUGHPUT_CHAIN)
            for _ in range(repeat):
                start = time.perf_counter()
                ids = await asyncio.gather(*(engine.submit(workflow) for _ in range(runs)))
                results = await asyncio.gather(*(engine.wait(i) for i in ids))
                failed = [r.error for r in results if r.status != "succeeded"]
                assert not failed, failed[:3]
                best = min(best, time.perf_counter() - start)
            return {
                "queue": kind,
                "slots": slots,
                "ms_per_step": round((long - short) * 1000 / (CHAIN - 1), 3),
                "run_fixed_ms": round(short * 1000, 2),
                "runs": runs,
                "steps": runs * THROUGHPUT_CHAIN,
                "steps_per_s": round(runs * THROUGHPUT_CHAIN / best),
                "engine_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "worker_peak_rss_mb": round(worker.peak_rss_mb(), 1) if worker else None,
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(QUEUES))
    parser.add_argument("--runs", type=int, default=100, help="concurrent runs in the throughput workload")
    parser.add_argument("--slots", type=int, default=8, help="the worker's concurrent steps")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=QUEUES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one, args.runs, args.slots, args.repeat))), flush=True)
        return 0
    for kind in args.only.split(","):
        # A fresh process per queue, so each peak RSS is that queue's own.
        command = [sys.executable, __file__, "--one", kind, "--runs", str(args.runs), "--slots", str(args.slots)]
        subprocess.run([*command, "--repeat", str(args.repeat)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
