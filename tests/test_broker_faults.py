"""The broker's faults, each on real processes: a broker restarted without its data, a step
that kills its worker, a worker cut off while its run is cancelled, a server SIGKILLed with
jobs in flight, a broker that is down (reliability #17, parts 2, 3, 4, 5 and 8).

Visibility timeouts are short here so each test stays within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from broker_support import RUN_TIMEOUT_S, alive, broker, engine_on, finish, queue_secret, shell, step, until
from prometheus_client import REGISTRY

from clarion_jupyter.core.protocol import EventType
from clarion_jupyter.testing.brokers import BrokerProcess, RedisServer, TcpProxy, WorkerProcess

__all__ = ["broker", "queue_secret"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)
RUNNER = Path(__file__).parent / "support" / "run_workflow.py"


async def test_runs_finish_after_the_broker_restarts_without_its_data(
    broker: BrokerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis without persistence (as the README runs it), or a JetStream on an empty store:
    streams, groups and consumers are gone; the queue makes them again and the engine sends
    again the jobs it waits for."""
    url = f"{broker.url}?visibility_timeout=2"
    workflow = {
        "name": "chain",
        "steps": [shell("one", "touch started; sleep 0.3"), shell("two", "sleep 0.3"), shell("three", "echo done")],
        "outputs": {"out": "{{ steps.three.output.stdout }}"},
    }
    async with engine_on(broker, tmp_path, url) as engine, WorkerProcess(url, tmp_path, slots=2) as worker:
        await worker.wait_ready()
        before = [await engine.submit(workflow) for _ in range(3)]
        await until((tmp_path / "started").exists, timeout=10)
        broker.restart(wipe=True)
        after = await engine.submit(workflow)
        runs = [await asyncio.wait_for(engine.wait(run_id), RUN_TIMEOUT_S) for run_id in [*before, after]]

    assert [run.status for run in runs] == ["succeeded"] * 4, [run.error for run in runs]
    assert {run.outputs["out"] for run in runs} == {"done\n"}
    assert "lost the queue's state (restarted without persistence?)" in caplog.text


async def test_a_step_that_kills_its_worker_fails_as_worker_lost_after_max_deliveries(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    url = f"{broker.url}?visibility_timeout=1&max_deliveries=3"
    workflow = {"name": "poison", "steps": [shell("poison", "echo $PPID >> victims.log; kill -9 $PPID; sleep 5")]}
    async with engine_on(broker, tmp_path, url) as engine:
        workers = [WorkerProcess(url, tmp_path, name=f"w{i}").start() for i in range(4)]
        try:
            await asyncio.gather(*(worker.wait_ready() for worker in workers))
            run = await finish(engine, workflow)
        finally:
            for worker in workers:
                await worker.stop(signal.SIGKILL)

    assert run.status == "failed"
    error = step(run, "poison").error
    assert error["code"] == "worker_lost"
    assert error["details"]["deliveries"] == 3
    victims = {int(line) for line in (tmp_path / "victims.log").read_text().split()}
    assert len(victims) == 3 == len(error["details"]["workers"])
    assert {int(name.split("-")[-2]) for name in error["details"]["workers"]} == victims
    assert "delivered 3 times and its worker was lost each time" in error["message"]
    assert step(run, "poison").attempt == 1  # the step's own retry (none) decides what follows


async def test_a_worker_lost_attempt_counts_against_the_steps_retry(broker: BrokerProcess, tmp_path: Path) -> None:
    url = f"{broker.url}?visibility_timeout=1&max_deliveries=1"
    retry = {"max_attempts": 2, "backoff_s": 0}
    workflow = {"name": "poison", "steps": [shell("poison", "kill -9 $PPID; sleep 5", retry=retry)]}
    async with engine_on(broker, tmp_path, url) as engine:
        workers = [WorkerProcess(url, tmp_path, name=f"w{i}").start() for i in range(3)]
        try:
            await asyncio.gather(*(worker.wait_ready() for worker in workers))
            run = await finish(engine, workflow)
        finally:
            for worker in workers:
                await worker.stop(signal.SIGKILL)
        events = [(e.type, e.data.get("attempt")) for e in await engine.events(run.run_id) if e.step_id == "poison"]

    assert run.status == "failed"
    assert step(run, "poison").attempt == 2
    assert step(run, "poison").error["code"] == "worker_lost"
    assert (EventType.step_retrying, 1) in events


async def test_a_cancel_sent_while_a_worker_is_cut_off_stops_its_step_once_it_is_back(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    workflow = {"name": "long", "steps": [shell("nap", "echo $$ > nap.pid && exec sleep 30")]}
    pid_file = tmp_path / "nap.pid"
    async with (
        TcpProxy(broker.port) as link,
        engine_on(broker, tmp_path) as engine,
        WorkerProcess(link.url(broker.url), tmp_path) as worker,
    ):
        run_id = await engine.submit(workflow)
        await until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=15)
        pid = int(pid_file.read_text())
        link.cut()
        await engine.cancel(run_id)
        run = await asyncio.wait_for(engine.wait(run_id), 10)
        await asyncio.sleep(1.5)  # the broadcast is long gone
        assert alive(pid)
        link.heal()
        healed = asyncio.get_running_loop().time()
        await until(lambda: not alive(pid), timeout=10)
        stopped_after = asyncio.get_running_loop().time() - healed

    assert run.status == "cancelled"
    assert stopped_after < 6, worker.log()[-2000:]


async def test_a_redis_worker_whose_connections_go_silent_connects_again_and_runs_the_next_job(
    tmp_path: Path,
) -> None:
    """A partition that sends no reset leaves a connection open and silent: each call is
    bounded (the blocking wait, and a few seconds), so the worker gives it up and reconnects."""
    with RedisServer(tmp_path) as redis_server:
        async with (
            TcpProxy(redis_server.port) as link,
            engine_on(redis_server, tmp_path) as engine,
            WorkerProcess(link.url(redis_server.url), tmp_path) as worker,
        ):
            first = await finish(engine, {"name": "first", "steps": [shell("a", "echo a")]})
            link.stall()
            run_id = await engine.submit({"name": "after", "steps": [shell("b", "echo b")]})
            run = await asyncio.wait_for(engine.wait(run_id), 40)

    assert first.status == "succeeded"
    assert run.status == "succeeded", worker.log()[-2000:]


async def test_a_worker_started_after_a_cancel_does_not_run_the_cancelled_runs_queued_job(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    async with engine_on(broker, tmp_path) as engine:
        run_id = await engine.submit({"name": "late", "steps": [shell("touch", "touch made-it")]})
        await until(lambda: engine.health()["queue"]["backlog"] == 1, timeout=10)
        await engine.cancel(run_id)  # nobody hears the broadcast: no worker runs yet
        run = await asyncio.wait_for(engine.wait(run_id), 10)
        async with WorkerProcess(broker.url, tmp_path):
            await until(lambda: engine.health()["queue"]["backlog"] == 0, timeout=15)

    assert run.status == "cancelled"
    assert not (tmp_path / "made-it").exists()


async def test_after_an_engine_sigkill_no_queued_job_runs_twice(broker: BrokerProcess, tmp_path: Path) -> None:
    """The killed engine's jobs are still in the broker (queued, or running on the worker):
    the restarted engine adopts them instead of sending new attempts."""
    steps = [shell(f"s{i}", f"echo s{i} >> side.log; sleep 0.4") for i in range(8)]
    workflow = tmp_path / "wide.json"
    workflow.write_text(json.dumps({"name": "wide", "steps": [{"parallel": steps}]}))
    side = tmp_path / "side.log"
    db = tmp_path / "runs.duckdb"
    async with WorkerProcess(broker.url, tmp_path, slots=2) as worker:
        first = subprocess.Popen(
            [sys.executable, str(RUNNER), str(db), str(tmp_path), str(workflow), broker.url],
            stdout=subprocess.PIPE,
            text=True,
        )
        run_id = first.stdout.readline().split()[1]
        await until(lambda: side.exists() and len(side.read_text().split()) >= 2, timeout=20)
        first.kill()
        first.wait()
        async with engine_on(broker, tmp_path) as engine:
            assert engine.resumed == [run_id]
            run = await asyncio.wait_for(engine.wait(run_id), RUN_TIMEOUT_S)

    assert run.status == "succeeded", run.error
    assert sorted(side.read_text().split()) == [f"s{i}" for i in range(8)], worker.log()[-2000:]


async def test_health_is_degraded_while_the_broker_is_down_and_ok_within_seconds_of_its_return(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    def up_metric() -> float | None:
        return REGISTRY.get_sample_value("clarion_queue_up")

    async with engine_on(broker, tmp_path) as engine:
        assert engine.health()["status"] == "ok"
        assert up_metric() == 1.0
        broker.stop()
        await until(lambda: engine.health()["status"] == "degraded", timeout=5)
        down = engine.health()["queue"]
        assert down["up"] is False and down["down_since"] and down["backlog"] is None
        assert down["url"] == broker.url
        assert up_metric() == 0.0
        broker.start()
        back = asyncio.get_running_loop().time()
        await until(lambda: engine.health()["status"] == "ok", timeout=10)
        recovered_after = asyncio.get_running_loop().time() - back
        await until(lambda: engine.health()["queue"]["backlog"] is not None, timeout=3)
        assert up_metric() == 1.0

    assert recovered_after < 4
