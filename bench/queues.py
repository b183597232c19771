"""Queue benchmarks: what a broker costs per step, local vs Redis vs NATS, with 1, 2 and 4
worker processes; one JSON line per queue and worker count, then one with the scaling.

(Named ``queues.py``: a ``queue.py`` in bench/ would shadow the standard library's ``queue``
for every script run from here.)

For each queue: an engine with persistence on, and the steps run by W worker processes with
M slots each (for ``local``, the engine's own in-process workers, once; for Redis and NATS,
``clarion worker`` processes on a real broker started for the benchmark, as in
tests/test_scaleout.py).

- ``ms_per_step``: the marginal cost of one step in a chain of echo steps, where every step
  waits for the one before: (t(chain of 50) - t(chain of 1)) / 49, so a run's fixed cost is
  left out. This is a step's round trip: engine → queue → worker → queue → engine.
  ``over_local_ms`` is that less the local queue's (measured first, in the same invocation).
- ``steps_per_s``: N concurrent runs of a 10-step echo chain, all steps over the wall time.
- ``llm_steps_per_s``: one run whose ``for_each`` makes ``--llm-calls`` ``llm_call`` steps
  against the local OpenAI-compatible server answering after ``--llm-delay-s`` (litellm in
  each worker's own LLM processes); the ideal is W x M / delay.
- ``cpu_ms_per_step``: CPU of the engine, the workers (added up) and the broker server over
  the echo throughput workload, per step: on a machine with C cores, steps/s cannot pass
  C / (their sum), whatever the number of workers.
- ``failed_runs``, ``first_error``: runs of the throughput workload that did not succeed
  (their repetition is not timed). Seen on a loaded machine: a full garbage collection of
  100+ ms during a template's evaluation exceeds the template's 50 ms wall-clock budget.
- ``engine_peak_rss_mb`` / ``worker_peak_rss_mb``: peak resident memory of the engine
  process (each measurement runs in a fresh process) and of the largest worker process.

Usage: python bench/queues.py [--only local,redis,nats] [--workers 1,2,4] [--runs N] [--slots M]
       [--repeat R] [--llm-calls K] [--llm-delay-s D] [--no-llm] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("CLARION_QUEUE_SECRET", secrets.token_hex(32))  # signs the broker's messages
os.environ.setdefault("CLARION_BENCH_KEY", "bench-key-not-secret")  # the stub agent's key: workers inherit it

from clarion_jupyter import Engine
from clarion_jupyter.testing.brokers import BROKERS, BrokerProcess, WorkerProcess
from clarion_jupyter.testing.workloads import chain, cpu_s, llm_map, stub_agent, stub_server, timed_run

QUEUES = ("local", "redis", "nats")
profile = cProfile.Profile(time.thread_time)
CHAIN, THROUGHPUT_CHAIN = 50, 10


@dataclass
class Setup:
    engine: Engine
    workers: list[WorkerProcess] = field(default_factory=list)
    broker: BrokerProcess | None = None

    def cpu(self) -> dict[str, float]:
        spent = {"engine": time.process_time()}
        if self.workers:
            spent["workers"] = sum(cpu_s(w.pid) for w in self.workers)
        if self.broker is not None and self.broker.process is not None:
            spent["broker"] = cpu_s(self.broker.process.pid)
        return spent


@asynccontextmanager
async def setup(kind: str, tmp: Path, workers: int, slots: int) -> AsyncIterator[Setup]:
    """The engine, and the worker processes that run its steps (none: in-process, the local queue)."""
    async with AsyncExitStack() as stack:
        if kind == "local":
            engine = await stack.enter_async_context(Engine(tmp / "bench.duckdb", workers=slots, workspace_root=tmp))
            yield Setup(engine)
            return
        broker = stack.enter_context(BROKERS[kind](tmp))
        engine = await stack.enter_async_context(
            Engine(tmp / "bench.duckdb", workers=slots, workspace_root=tmp, queue_url=broker.url)
        )
        processes = [
            await stack.enter_async_context(WorkerProcess(broker.url, tmp, slots=slots, name=f"worker{i}"))
            for i in range(workers)
        ]
        await asyncio.gather(*(worker.wait_ready() for worker in processes))
        yield Setup(engine, processes, broker)


async def echo_throughput(engine: Engine, runs: int, repeat: int) -> tuple[float, list[dict[str, Any]]]:
    """The best wall time of ``runs`` concurrent echo chains, and the errors of failed runs."""
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
    return best, failed


async def llm_throughput(engine: Engine, calls: int, delay_s: float, capacity: int) -> float:
    """Steps/s of ``calls`` LLM steps answered after ``delay_s``, after a warm-up that starts
    every worker's LLM processes (each imports litellm for seconds)."""
    with stub_server(delay_s) as (url, _pid):
        await engine.agents.upsert(stub_agent(url))
        # The first runs start each worker's LLM processes, which import litellm for seconds: warm
        # up until a run is no faster than the one before.
        best = float("inf")
        for tries in range(12):
            start = time.perf_counter()
            await engine.wait(await engine.submit(llm_map(), {"prompts": list(range(capacity * 4))}))
            took = time.perf_counter() - start
            if took > best * 0.9 and tries >= 3:
                break
            best = min(best, took)
        start = time.perf_counter()
        run = await engine.wait(await engine.submit(llm_map(), {"prompts": list(range(calls))}))
        wall = time.perf_counter() - start
        assert run.status == "succeeded", run.error
    return calls / wall


async def measure(kind: str, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with setup(kind, Path(tmp), workers, args.slots) as bench:
            engine = bench.engine
            await timed_run(engine, chain(5))  # warm up: imports, connections, compiled templates
            gc.freeze()  # as the server does once its engine runs: full collections skip what lives on
            long = statistics.median([await timed_run(engine, chain(CHAIN)) for _ in range(args.repeat)])
            short = statistics.median([await timed_run(engine, chain(1)) for _ in range(args.repeat)])
            before = bench.cpu()
            if args.profile:
                profile.enable()
            best, failed = await echo_throughput(engine, args.runs, args.repeat)
            if args.profile:
                profile.disable()
            after = bench.cpu()
            steps = args.runs * THROUGHPUT_CHAIN * args.repeat
            figures: dict[str, Any] = {
                "queue": kind,
                "workers": workers if kind != "local" else 0,
                "slots": args.slots,
                "ms_per_step": round((long - short) * 1000 / (CHAIN - 1), 3),
                "run_fixed_ms": round(short * 1000, 2),
                "runs": args.runs,
                "steps": args.runs * THROUGHPUT_CHAIN,
                "steps_per_s": round(args.runs * THROUGHPUT_CHAIN / best) if best < float("inf") else None,
                "cpu_ms_per_step": {name: round((after[name] - before[name]) * 1000 / steps, 3) for name in after},
                "failed_runs": len(failed),
                "first_error": failed[0]["message"] if failed else None,
            }
            if args.llm:
                capacity = args.slots * max(workers if kind != "local" else 1, 1)
                rate = await llm_throughput(engine, args.llm_calls, args.llm_delay_s, capacity)
                figures |= {"llm_steps_per_s": round(rate, 1), "llm_ideal_steps_per_s": capacity / args.llm_delay_s}
            figures |= {
                "engine_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "worker_peak_rss_mb": round(max(w.peak_rss_mb() for w in bench.workers), 1) if bench.workers else None,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            return figures


def scaling(lines: list[dict[str, Any]], local_ms: float | None) -> dict[str, Any]:
    """Per broker: steps/s with W workers over steps/s with one, and the round trip over local's."""
    summary: dict[str, Any] = {"scaling": True}
    for kind in sorted({line["queue"] for line in lines if line["queue"] != "local"}):
        mine = {line["workers"]: line for line in lines if line["queue"] == kind}
        one = mine.get(1)
        entry: dict[str, Any] = {}
        if one is not None and local_ms is not None:
            entry["over_local_ms"] = round(one["ms_per_step"] - local_ms, 3)
        for count, line in sorted(mine.items()):
            if one is None or count == 1:
                continue
            for name in ("steps_per_s", "llm_steps_per_s"):
                if line.get(name) and one.get(name):
                    entry[f"{name}_{count}v1"] = round(line[name] / one[name], 2)
        summary[kind] = entry
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(QUEUES))
    parser.add_argument("--workers", default="1,2,4", help="worker process counts for the brokers")
    parser.add_argument("--runs", type=int, default=100, help="concurrent runs in the throughput workload")
    parser.add_argument("--slots", type=int, default=8, help="each worker's concurrent steps")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--llm-calls", type=int, default=400)
    parser.add_argument("--llm-delay-s", type=float, default=0.5)
    parser.add_argument("--no-llm", dest="llm", action="store_false", help="leave out the LLM-bound workload")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print a cProfile (the engine loop's CPU time) of the echo throughput workload, per measurement",
    )
    parser.add_argument("--one", choices=QUEUES, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        figures = asyncio.run(measure(args.one, args, args.count))
        if args.profile:
            pstats.Stats(profile, stream=sys.stderr).strip_dirs().sort_stats("tottime").print_stats(40)
        print(json.dumps(figures), flush=True)
        return 0
    lines = []
    for kind in args.only.split(","):
        for count in [1] if kind == "local" else [int(n) for n in args.workers.split(",")]:
            # A fresh process per measurement, so each peak RSS is that queue's own.
            command = [sys.executable, __file__, "--one", kind, "--count", str(count), "--runs", str(args.runs)]
            command += ["--slots", str(args.slots), "--repeat", str(args.repeat), "--llm-calls", str(args.llm_calls)]
            command += ["--llm-delay-s", str(args.llm_delay_s)] + ([] if args.llm else ["--no-llm"])
            command += ["--profile"] if args.profile else []
            done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
            print(done.stdout.strip(), flush=True)
            lines.append(json.loads(done.stdout.strip().splitlines()[-1]))
    local = next((line["ms_per_step"] for line in lines if line["queue"] == "local"), None)
    print(json.dumps(scaling(lines, local)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
