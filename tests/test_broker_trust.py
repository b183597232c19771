"""Broker messages are signed: only holders of the queue's secret can make a worker run a job
or the engine record a result (security #15, part 2).

Every test runs on a real ``redis-server`` and ``nats-server -js`` with real ``clarion worker``
processes; a forger writes to the broker with its own client, as anyone who can reach it could.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import nats
import pytest
import redis.asyncio as aioredis
from broker_support import SECRET_ENV, broker, engine_on, finish, queue_secret, shell, until
from prometheus_client import REGISTRY

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import QueueUnavailable
from clarion_jupyter.core.protocol import EventType
from clarion_jupyter.task.queue import Job, JobResult
from clarion_jupyter.task.queues import make_queue
from clarion_jupyter.testing.brokers import BrokerProcess, WorkerProcess

__all__ = ["broker", "queue_secret"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)


FIELD = {"jobs": "job", "results": "result"}
"""The Redis stream entry's field that holds the message."""


class Forger:
    """Writes to a broker's job and result streams directly, and reads what they hold."""

    def __init__(self, broker: BrokerProcess, prefix: str = "clarion") -> None:
        self.broker = broker
        self.prefix = prefix

    async def add(self, stream: str, data: bytes, **fields: str) -> None:
        """``fields``: a Redis entry's unsigned fields besides the message (a job's ``nonce`` and ``run``)."""
        if self.broker.kind == "redis":
            client = aioredis.from_url(self.broker.url)
            await client.xadd(f"{self.prefix}:{stream}", {FIELD[stream]: data, **fields})
            await client.aclose()
        else:
            client = await nats.connect(self.broker.url)
            await client.jetstream().publish(f"{self.prefix}.{stream}", data, stream=f"{self.prefix}_{stream}")
            await client.close()

    async def held(self, stream: str) -> list[bytes]:
        """The messages waiting in a stream, as a wiretap would have seen them."""
        if self.broker.kind == "redis":
            client = aioredis.from_url(self.broker.url)
            entries = await client.xrange(f"{self.prefix}:{stream}")
            await client.aclose()
            return [fields[FIELD[stream].encode()] for _, fields in entries]
        client = await nats.connect(self.broker.url)
        js = client.jetstream()
        state = (await js.stream_info(f"{self.prefix}_{stream}")).state
        found = [
            (await js.get_msg(f"{self.prefix}_{stream}", seq)).data
            for seq in range(state.first_seq, state.last_seq + 1)
        ]
        await client.close()
        return found


def forged_job(command: str) -> dict[str, object]:
    return Job("forged-run", "pwn", "pwn", 1, "shell", {"command": command}).as_dict()


@pytest.mark.parametrize("forgery", ["unsigned", "signed with another secret"])
async def test_a_forged_job_is_dropped_by_the_worker_and_never_runs(
    broker: BrokerProcess, tmp_path: Path, forgery: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine_on(broker, tmp_path) as engine:
        if forgery == "unsigned":
            await Forger(broker).add("jobs", json.dumps(forged_job("touch pwned")).encode())
        else:
            monkeypatch.setenv("MALLORY_SECRET", "not-the-queue-secret-at-all")
            mallory = make_queue(f"{broker.url}?secret_env=MALLORY_SECRET")
            await mallory.start()
            await mallory.put(Job(**forged_job("touch pwned")))
            await mallory.close()
        async with WorkerProcess(broker.url, tmp_path) as worker:
            # One slot takes jobs in order: once this run is done, the forged job was looked at.
            run = await finish(engine, {"name": "after", "steps": [shell("ok", "echo ok")]})

    assert run.status == "succeeded", run.error
    assert not (tmp_path / "pwned").exists()
    reason = "unsigned" if forgery == "unsigned" else "bad_signature"
    assert f"dropped a job message on {broker.url}: {reason} (1 so far)" in worker.log()
    assert "touch pwned" not in worker.log()


async def test_forged_results_and_events_are_dropped_and_counted_by_the_engine(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    workflow = {
        "name": "gated",
        "steps": [shell("wait", "while [ ! -e go ]; do sleep 0.02; done; echo real")],
        "outputs": {"out": "{{ steps.wait.output.stdout }}"},
    }
    forger = Forger(broker)
    async with engine_on(broker, tmp_path) as engine:
        async with WorkerProcess(broker.url, tmp_path):
            run_id = await engine.submit(workflow)
            events = engine.subscribe(run_id)
            async for event in events:
                if event.type == EventType.step_started:
                    break
            [job] = [json.loads(data.split(b".", 4)[4]) for data in await forger.held("jobs")]
            result = JobResult(run_id, "wait", 1, "ok", output={"stdout": "forged"}, nonce=job["nonce"])
            await forger.add("results", json.dumps(result.as_dict()).encode())
            # A worker holds the secret, but may not send what only the engine decides:
            insider = make_queue(broker.url)
            await insider.start()
            for event_type in (EventType.workflow_succeeded, EventType.approval_granted, "made_up"):
                progress = JobResult(run_id, "wait", 1, "progress", event_type=event_type, data={"by": "mallory"})
                progress.nonce = job["nonce"]
                await insider.report(progress)
            await insider.report(JobResult(run_id, "wait", 1, "ok", output={"stdout": "no nonce"}))
            await insider.close()
            await until(lambda: sum(engine.health()["queue"]["dropped"].values()) == 5, timeout=10)
            (tmp_path / "go").touch()
            rest = [event async for event in events]
            run = await engine.get_run(run_id)
        health = engine.health()

    assert health["queue"]["dropped"] == {"unsigned": 1, "event_type": 3, "not_awaited": 1}
    assert REGISTRY.get_sample_value("clarion_queue_dropped_messages", {"reason": "event_type"}) == 3
    assert [e.type for e in rest] == [EventType.step_completed, EventType.workflow_succeeded]
    assert run.outputs == {"out": "real\n"}


@pytest.mark.parametrize("named", ["not", "as itself", "as another job"])
async def test_a_replayed_job_does_not_run_again(broker: BrokerProcess, tmp_path: Path, named: str) -> None:
    """``named``: the unsigned nonce and run a Redis entry names its job by, from which the
    script that takes it reads its state: none, the job's own, or a fresh job's (a lie)."""
    if named != "not" and broker.kind != "redis":
        pytest.skip("NATS messages name nothing outside the signed job")
    workflow = {"name": "once", "steps": [shell("count", "echo ran >> count.log")]}
    forger = Forger(broker)
    async with engine_on(broker, tmp_path) as engine:
        run_id = await engine.submit(workflow)
        await until(lambda: engine.health()["queue"]["backlog"] == 1, timeout=10)
        [captured] = await forger.held("jobs")  # a wiretap's copy of the signed job
        async with WorkerProcess(broker.url, tmp_path) as worker:
            run = await asyncio.wait_for(engine.wait(run_id), 20)
            job = json.loads(captured.split(b".", 4)[4])
            nonce = {"as itself": job["nonce"], "as another job": "0" * 24}.get(named)
            await forger.add("jobs", captured, **({"nonce": nonce, "run": job["run_id"]} if nonce else {}))
            await until(lambda: "replayed" in worker.log(), timeout=10)
            again = await finish(engine, {"name": "after", "steps": [shell("ok", "true")]})

    assert run.status == again.status == "succeeded"
    assert (tmp_path / "count.log").read_text().splitlines() == ["ran"]
    assert f"dropped a job message on {broker.url}: replayed (1 so far)" in worker.log()


async def test_the_engine_refuses_to_start_on_a_broker_without_the_secret(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(QueueUnavailable, match=f"set the environment variable {SECRET_ENV}"):
        await engine_on(broker, tmp_path).start()
    with pytest.raises(QueueUnavailable, match="set the environment variable TEAM_QUEUE_KEY"):
        await Engine(tmp_path / "b.duckdb", queue_url=f"{broker.url}?secret_env=TEAM_QUEUE_KEY").start()


def test_clarion_worker_refuses_to_start_without_the_secret_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    done = subprocess.run(
        [sys.executable, "-m", "clarion_jupyter.cli", "worker", "--queue", "redis://127.0.0.1:9/0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "the shared secret that signs broker messages is not set" in line
    assert f"export {SECRET_ENV}=" in line
