"""Queue benchmarks: what a broker costs per step, local vs Redis vs NATS; one JSON line per queue.

(Named ``queues.py``: a ``queue.py`` in bench/ would shadow the standard library's ``queue``
for every script run from here.)

For each queue: an engine with persistence on, and the steps run by one worker with M slots
(for ``local``, the engine's own in-process workers; for Redis and NATS, one ``clarion
worker`` process on a real broker started for the benchmark, as in tests/test_scaleout.py).

- ``ms_per_step``: the marginal cost of one step in a chain of echo steps, where every step
  waits for the one before: (t(chain of 50) - t(chain of 1)) / 49, so a run's fixed cost is
  left out. This is a step's round trip: engine → queue → worker → queue → engine.
- ``steps_per_s``: N concurrent runs of a 10-step echo chain, all steps over the wall time.
- ``failed_runs``, ``first_error``: runs of the throughput workload that did not succeed
  (their repetition is not timed). Seen on a loaded machine: a full garbage collection of
  100+ ms during a template's evaluation exceeds the template's 50 ms wall-clock budget.
- ``engine_peak_rss_mb`` / ``worker_peak_rss_mb``: peak resident memory of the engine
  process (each queue is measured in a fresh process) and of the worker process.

Usage: python bench/queues.py [--only local,redis,nats] [--runs N] [--slots M] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("CLARION_QUEUE_SECRET", secrets.token_hex(32))  # signs the broker's messages

from clarion_jupyter import Engine
from clarion_jupyter.testing.brokers import BROKERS, WorkerProcess
from clarion_jupyter.testing.workloads import chain, timed_run

QUEUES = ("local", "redis", "nats")
CHAIN, THROUGHPUT_CHAIN = 50, 10


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
            gc.freeze()  # as the server does once its engine runs: full collections skip what lives on
            long = statistics.median([await timed_run(engine, chain(CHAIN)) for _ in range(repeat)])
            short = statistics.median([await timed_run(engine, chain(1)) for _ in range(repeat)])
            best, failed = float("inf"), []
            workflow = chain(THROUGHPUT_CHAIN)
            for _ in range(repeat):
                start = time.perf_counter()
                ids = await asyncio.gather(*(engine.submit(workflow) for _ in range(runs)))
                results = await asyncio.gather(*(engine.wait(i) for i in ids))
                errors = [r.error for r in results if r.status != "succeeded"]
                if errors:  # a repetition with failed runs ended early: its time does not count
                    failed += errors
                else:
                    best = min(best, time.perf_counter() - start)
            return {
                "queue": kind,
                "slots": slots,
                "ms_per_step": round((long - short) * 1000 / (CHAIN - 1), 3),
                "run_fixed_ms": round(short * 1000, 2),
                "runs": runs,
                "steps": runs * THROUGHPUT_CHAIN,
                "steps_per_s": round(runs * THROUGHPUT_CHAIN / best) if best < float("inf") else None,
                "failed_runs": len(failed),
                "first_error": failed[0]["message"] if failed else None,
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
