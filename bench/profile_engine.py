"""cProfile of one engine workload (W1 chain, W2 fan-out or W3 many runs), persistence on.

Prints the top functions by cumulative and by own time, so the next person sees where a
step's time goes before changing anything:

    python bench/profile_engine.py --workload W1 --runs 20 [--sort tottime] [--top 40]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

from clarion_jupyter import Engine
from clarion_jupyter.testing.workloads import chain, fan_out


async def _workload(engine: Engine, name: str, runs: int) -> None:
    if name == "W1":
        for _ in range(runs):
            await engine.wait(await engine.submit(chain(50)))
    elif name == "W2":
        for _ in range(runs):
            await engine.wait(await engine.submit(fan_out(200)))
    else:
        for _ in range(runs):
            ids = await asyncio.gather(*(engine.submit(chain(5)) for _ in range(200)))
            await asyncio.gather(*(engine.wait(i) for i in ids))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("W1", "W2", "W3"), default="W1")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sort", default="cumulative", help="pstats sort key: cumulative, tottime, ...")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--save", help="also write the raw profile here (for pstats or snakeviz)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workers = 64 if args.workload == "W3" else 8
        async with Engine(Path(tmp) / "profile.duckdb", workers=workers, workspace_root=tmp) as engine:
            await _workload(engine, args.workload, 2)  # warm-up: imports, first compile, first commits
            profile = cProfile.Profile()
            profile.enable()
            await _workload(engine, args.workload, args.runs)
            profile.disable()
    if args.save:
        profile.dump_stats(args.save)
    pstats.Stats(profile).strip_dirs().sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
