"""Where W4's time goes: the CPU of each process per LLM call, and a cProfile of one of them.

W4 (bench/engine.py) is 1,000 ``llm_call`` steps at 100 ms of provider latency with 64
workers. Its wall time is bounded below by the latency (1.56 s) and by the CPU the calls
need: the engine's own (render, dispatch, record), litellm's in the provider's child
processes (clarion_jupyter/llm/host.py), and the stub server's. On a machine with C cores
the wall is at least (sum of CPU) / C, so this prints each share per call:

    python bench/profile_llm.py                      # CPU per call of every process
    python bench/profile_llm.py --profile engine     # + cProfile of the engine process
    python bench/profile_llm.py --profile litellm    # cProfile of LiteLLMProvider in this process
                                                     # (what one child does), same calls
    python bench/profile_llm.py --profile child      # cProfile of one child's whole loop (host._serve:
                                                     # pipes, JSON lines, litellm), run in this process
                                                     # and fed over pipes by a thread, as the engine does

Options: ``--calls N`` (1000), ``--delay-s`` (0.1), ``--workers`` (64), ``--sort``, ``--top``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from clarion_jupyter import Engine
from clarion_jupyter.llm import host
from clarion_jupyter.llm.provider import LiteLLMProvider, LLMRequest, load_litellm
from clarion_jupyter.task.builtin.llm_call import DEFAULT_PROVIDER
from clarion_jupyter.testing.workloads import cpu_s, llm_map, stub_agent, stub_server

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(task: int) -> float:
    """User + system CPU of one of this process's threads so far (Linux ``/proc``)."""
    fields = Path(f"/proc/self/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def threads_cpu_s() -> Counter[str]:
    """This process's CPU so far by thread name (threads of one name added up)."""
    names = {thread.native_id: thread.name.split("_")[0] for thread in threading.enumerate()}
    spent: Counter[str] = Counter()
    for task in Path("/proc/self/task").iterdir():
        with suppress(FileNotFoundError):  # a thread that ended meanwhile
            spent[names.get(int(task.name), "other")] += thread_cpu_s(int(task.name))
    return spent


async def engine_run(args: argparse.Namespace, profile: cProfile.Profile | None) -> dict:
    with stub_server(args.delay_s) as (url, stub_pid), tempfile.TemporaryDirectory() as tmp:
        async with Engine(Path(tmp) / "w4.duckdb", workers=args.workers, workspace_root=tmp) as engine:
            await engine.agents.upsert(stub_agent(url))
            await engine.wait(await engine.submit(llm_map(), {"prompts": list(range(args.workers))}))
            await DEFAULT_PROVIDER.settled()  # the LLM processes that warm-up started have imported litellm
            children = DEFAULT_PROVIDER.pids
            before = {pid: cpu_s(pid) for pid in [*children, stub_pid]}
            threads = threads_cpu_s()
            start, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
            if profile:
                profile.enable()
            run = await engine.wait(await engine.submit(llm_map(), {"prompts": list(range(args.calls))}))
            if profile:
                profile.disable()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            loop_cpu = time.thread_time() - loop_cpu
            threads = threads_cpu_s() - threads
            assert run.status == "succeeded", run.error
            after = {pid: cpu_s(pid) for pid in before}
    per_call = 1000 / args.calls
    spent = {pid: after[pid] - before[pid] for pid in before}
    return {
        "calls": args.calls,
        "wall_s": round(wall, 3),
        "ideal_s": round(args.calls * args.delay_s / args.workers, 3),
        "engine_cpu_ms_per_call": round(cpu * per_call, 3),
        "engine_loop_cpu_ms_per_call": round(loop_cpu * per_call, 3),
        "engine_threads_cpu_ms_per_call": {name: round(t * per_call, 3) for name, t in threads.most_common()},
        "llm_children": len(children),
        "llm_cpu_ms_per_call": round(sum(spent[pid] for pid in children) * per_call, 3),
        "llm_children_cpu_share": [
            round(spent[pid] / max(sum(spent[p] for p in children), 1e-9), 2) for pid in children
        ],
        "stub_cpu_ms_per_call": round(spent[stub_pid] * per_call, 3),
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


async def litellm_run(args: argparse.Namespace, profile: cProfile.Profile) -> dict:
    """The child's work, in this process: the same calls through :class:`LiteLLMProvider`."""
    with stub_server(args.delay_s) as (url, _pid):
        provider = LiteLLMProvider()
        await provider.warm()
        gate = asyncio.Semaphore(args.workers)

        async def one(i: int) -> None:
            request = LLMRequest(
                model=stub_agent(url).model, messages=[{"role": "user", "content": f"item {i}"}], api_base=url
            )
            async with gate:
                await provider.call(request, "bench-key")

        await asyncio.gather(*(one(i) for i in range(args.workers)))
        start, cpu = time.perf_counter(), time.process_time()
        profile.enable()
        await asyncio.gather(*(one(i) for i in range(args.calls)))
        profile.disable()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        await provider.aclose()
    return {"calls": args.calls, "wall_s": round(wall, 3), "litellm_cpu_ms_per_call": round(cpu * 1000 / args.calls, 3)}


def feed(
    args: argparse.Namespace, url: str, requests: int, replies: int, start: Callable[[], None], stop: Callable[[], None]
) -> None:
    """The engine's side of one child, in a thread: keeps ``--workers`` calls in flight, the
    first ``--workers`` of them a warm-up before ``start``, then ``--calls`` more before ``stop``."""
    request = {"model": stub_agent(url).model, "messages": [], "api_base": url}
    ask, answers = os.fdopen(requests, "wb"), os.fdopen(replies, "rb")
    room = threading.Semaphore(args.workers)

    def send(first: int, count: int) -> None:
        for i in range(first, first + count):
            room.acquire()
            messages = [{"role": "user", "content": f"item {i}"}]
            ask.write(
                host._line({"id": i, "op": "complete", "request": {**request, "messages": messages}, "api_key": "k"})
            )
            ask.flush()

    def receive(count: int) -> None:
        while count:
            message = json.loads(answers.readline())
            assert "token" in message or "ready" in message or "result" in message, message
            if "id" in message and "token" not in message:
                room.release()
                count -= 1

    receive_warm_up = threading.Thread(target=receive, args=(args.workers,))
    receive_warm_up.start()
    send(0, args.workers)
    receive_warm_up.join()
    start()
    receiving = threading.Thread(target=receive, args=(args.calls,))
    receiving.start()
    send(args.workers, args.calls)
    receiving.join()
    stop()
    ask.close()


async def child_run(args: argparse.Namespace, profile: cProfile.Profile) -> dict:
    """What one child does, in this process: :func:`host._serve` reads JSON lines from a pipe a
    thread (:func:`feed`) writes, and answers on another that thread reads."""
    await load_litellm()  # imported by the child before it says it is ready: not a call's cost
    loop = asyncio.get_running_loop()
    main_thread = threading.get_native_id()
    marks: dict[str, float] = {}

    def mark(name: str, switch: Callable[[], None]) -> Callable[[], None]:
        def at_loop() -> None:
            marks[name] = time.perf_counter()
            marks[f"{name}_cpu"] = thread_cpu_s(main_thread)
            switch()

        return lambda: loop.call_soon_threadsafe(at_loop)

    with stub_server(args.delay_s) as (url, _pid):
        requests_out, requests_in = os.pipe()
        replies_out, replies_in = os.pipe()
        reader = asyncio.StreamReader(limit=2**31)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(requests_out, "rb"))
        feeder = threading.Thread(
            target=feed,
            args=(args, url, requests_in, replies_out, mark("start", profile.enable), mark("stop", profile.disable)),
        )
        feeder.start()
        with os.fdopen(replies_in, "wb") as replies:
            await host._serve(reader, replies)
        feeder.join()
    cpu = marks["stop_cpu"] - marks["start_cpu"]
    return {
        "calls": args.calls,
        "wall_s": round(marks["stop"] - marks["start"], 3),
        "child_loop_cpu_ms_per_call": round(cpu * 1000 / args.calls, 3),
        "note": "profiled: cProfile's own cost is in these figures; bench/profile_llm.py without --profile gives the real CPU",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--delay-s", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--profile", choices=("engine", "litellm", "child"))
    parser.add_argument("--sort", default="tottime", help="pstats sort key: tottime, cumulative, ...")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--callees", help="also print what the functions matching this call (a pstats pattern)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="what the profile counts: the profiled thread's CPU (default: a loaded machine's preemptions "
        "otherwise land on whatever call was running) or the wall clock",
    )
    args = parser.parse_args()
    timer = time.thread_time if args.clock == "cpu" else time.perf_counter
    profile = cProfile.Profile(timer) if args.profile else None
    if args.profile == "litellm":
        figures = asyncio.run(litellm_run(args, profile))
    elif args.profile == "child":
        figures = asyncio.run(child_run(args, profile))
    else:
        figures = asyncio.run(engine_run(args, profile))
    DEFAULT_PROVIDER.close()
    print(json.dumps(figures), flush=True)
    if profile is not None:
        stats = pstats.Stats(profile).strip_dirs().sort_stats(args.sort)
        stats.print_stats(args.top)
        if args.callees:
            stats.print_callees(args.callees)
    return 0


if __name__ == "__main__":
    sys.exit(main())
