"""Scale-out: an engine with ``queue_url`` on a real Redis or NATS, and ``clarion worker`` processes.

Every behaviour runs on both brokers (a real ``redis-server`` and ``nats-server -js``, each
on a free port, fresh per test). Workers are real ``clarion worker`` subprocesses with their
own Jupyter config; the engine runs in the test's loop, or in a real Jupyter server.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from broker_support import RUN_TIMEOUT_S, SECRET_ENV, alive, broker, engine_on, finish, queue_secret, shell, step, until
from conftest_server import Api, create_workflow, start_run, wait_run

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import BadRequest, QueueUnavailable
from clarion_jupyter.core.protocol import EventType
from clarion_jupyter.task.queue import Job, JobResult
from clarion_jupyter.task.queues import make_queue
from clarion_jupyter.testing.brokers import BrokerProcess, WorkerProcess
from clarion_jupyter.testing.server import free_port

__all__ = ["broker", "queue_secret"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(90)


# -- running on workers ----------------------------------------------------------------------


async def test_a_worker_process_runs_the_steps_of_an_engine_with_a_broker(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    workflow = {
        "name": "remote",
        "steps": [
            {"id": "greet", "task": "echo", "with": {"value": "hello"}},
            shell("where", "echo $PPID"),
        ],
        "outputs": {"greeting": "{{ steps.greet.output.value }}", "pid": "{{ steps.where.output.stdout }}"},
    }
    async with engine_on(broker, tmp_path) as engine:
        async with WorkerProcess(broker.url, tmp_path) as worker:
            await worker.wait_ready()
            run = await finish(engine, workflow)

        assert run.status == "succeeded", run.error
        assert run.outputs == {"greeting": "hello", "pid": f"{worker.pid}\n"}
        assert engine.health()["queue"]["kind"] == broker.kind
        assert engine.health()["queue"]["workers"] == 0  # with a broker the server runs no steps itself


async def test_two_workers_share_the_jobs(broker: BrokerProcess, tmp_path: Path) -> None:
    workflow = {
        "name": "wide",
        "steps": [{"parallel": [shell(f"p{i}", "sleep 0.3; echo $PPID") for i in range(6)]}],
    }
    async with engine_on(broker, tmp_path) as engine:
        async with (
            WorkerProcess(broker.url, tmp_path, name="one") as one,
            WorkerProcess(broker.url, tmp_path, name="two") as two,
        ):
            await asyncio.gather(one.wait_ready(), two.wait_ready())
            run = await finish(engine, workflow)

        assert run.status == "succeeded", run.error
        ran_on = {int(s.output["stdout"]) for s in run.steps}
        assert ran_on == {one.pid, two.pid}


async def test_a_job_of_a_killed_worker_is_redelivered_to_another_after_the_visibility_timeout(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    url = f"{broker.url}?visibility_timeout=2"
    starts = tmp_path / "starts.log"
    workflow = {"name": "crash", "steps": [shell("work", "echo started >> starts.log; sleep 1; echo done")]}
    async with engine_on(broker, tmp_path, url) as engine:
        doomed = WorkerProcess(url, tmp_path, name="doomed").start()
        run_id = await engine.submit(workflow)
        await until(starts.exists)
        await doomed.stop(signal.SIGKILL)
        async with WorkerProcess(url, tmp_path, name="rescuer"):
            run = await asyncio.wait_for(engine.wait(run_id), RUN_TIMEOUT_S)

        completed = [e for e in await engine.events(run_id) if e.type == EventType.step_completed]

    assert run.status == "succeeded", run.error
    assert starts.read_text().splitlines() == ["started", "started"]  # ran once more, on the rescuer
    assert step(run, "work").attempt == 1  # the same job delivered again, not a retry
    assert completed[0].data["deliveries"] == 2  # the step's record says its job was redelivered


async def test_a_worker_stopped_by_sigterm_gives_its_job_back_at_once(broker: BrokerProcess, tmp_path: Path) -> None:
    """No waiting for the visibility timeout (30 s here): the stopping worker gives the job back."""
    starts = tmp_path / "starts.log"
    workflow = {"name": "handover", "steps": [shell("work", "echo started >> starts.log; sleep 1")]}
    async with engine_on(broker, tmp_path) as engine:
        leaving = WorkerProcess(broker.url, tmp_path, name="leaving").start()
        run_id = await engine.submit(workflow)
        await until(starts.exists)

        assert await leaving.stop(signal.SIGTERM) == 0
        async with WorkerProcess(broker.url, tmp_path, name="staying"):
            run = await asyncio.wait_for(engine.wait(run_id), 15)

        assert run.status == "succeeded", run.error
        assert len(starts.read_text().splitlines()) == 2


async def test_a_duplicate_result_is_ignored(broker: BrokerProcess, tmp_path: Path) -> None:
    workflow = {
        "name": "dup",
        "steps": [
            {"id": "first", "task": "echo", "with": {"value": "original"}},
            shell("second", "while [ ! -e go ]; do sleep 0.02; done"),
        ],
        "outputs": {"first": "{{ steps.first.output.value }}"},
    }
    async with engine_on(broker, tmp_path) as engine:
        forger = make_queue(broker.url)
        await forger.start()
        async with WorkerProcess(broker.url, tmp_path):
            run_id = await engine.submit(workflow)
            events = engine.subscribe(run_id)
            async for event in events:
                if event.type == EventType.step_completed and event.step_id == "first":
                    break
            for forged in ("forged", "forged again"):  # a redelivered job's second result, say
                await forger.report(JobResult(run_id, "first", 1, "ok", output={"value": forged}))
            await forger.report(JobResult("no-such-run", "first", 1, "ok", output={}))
            await forger.close()
            (tmp_path / "go").touch()  # the run ends only after the duplicates were read
            rest = [event async for event in events]

        run = await engine.get_run(run_id)
        assert run.status == "succeeded", run.error
        assert run.outputs == {"first": "original"}
        assert step(run, "first").output == {"value": "original"}
        assert [e.step_id for e in rest if e.type == EventType.step_completed] == ["second"]


async def test_cancel_reaches_a_remote_worker_and_kills_its_shell_command(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    workflow = {"name": "long", "steps": [shell("nap", "echo $$ > nap.pid && exec sleep 30")]}
    pid_file = tmp_path / "nap.pid"
    async with engine_on(broker, tmp_path) as engine:
        async with WorkerProcess(broker.url, tmp_path):
            run_id = await engine.submit(workflow)
            await until(lambda: pid_file.exists() and pid_file.read_text().strip())
            pid = int(pid_file.read_text())
            await engine.cancel(run_id)
            run = await asyncio.wait_for(engine.wait(run_id), RUN_TIMEOUT_S)
            await until(lambda: not alive(pid), timeout=10)

        assert run.status == "cancelled"


async def test_an_engine_restart_while_a_worker_holds_a_job_adopts_it_and_runs_it_once(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.log"
    workflow = {
        "name": "restart",
        "steps": [
            shell("slow", "echo started >> starts.log; sleep 1; echo done"),
            {"id": "after", "task": "echo", "with": {"value": "{{ steps.slow.output.stdout }}"}},
        ],
        "outputs": {"after": "{{ steps.after.output.value }}"},
    }
    db = tmp_path / "runs.duckdb"
    async with WorkerProcess(broker.url, tmp_path) as worker:
        await worker.wait_ready()
        async with Engine(db, workspace_root=tmp_path, queue_url=broker.url) as first:
            run_id = await first.submit(workflow)
            await until(starts.exists)
        # The worker finishes the old attempt while no engine runs; its result waits in the broker.
        async with Engine(db, workspace_root=tmp_path, queue_url=broker.url) as second:
            assert second.resumed == [run_id]
            run = await asyncio.wait_for(second.wait(run_id), RUN_TIMEOUT_S)

    assert run.status == "succeeded", run.error
    assert run.outputs == {"after": "done\n"}
    # The attempt ran to its end on the worker while no engine ran; the restarted engine found
    # its job (or its result) still in the broker and took that result instead of sending it again.
    assert step(run, "slow").attempt == 1
    assert starts.read_text().splitlines() == ["started"]


# -- the worker's configuration --------------------------------------------------------------


async def test_the_worker_masks_secrets_by_the_configured_secret_env_pattern(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    workflow = {"name": "env", "steps": [shell("show", 'printf "%s %s" "$SHOP_PASSPHRASE" "$OTHER_API_KEY"')]}
    env = {"SHOP_PASSPHRASE": "correct-horse", "OTHER_API_KEY": "not-a-secret-here"}
    traits = {"secret_env_pattern": "^SHOP_PASSPHRASE$"}
    async with engine_on(broker, tmp_path) as engine:
        async with WorkerProcess(broker.url, tmp_path, traits=traits, env=env):
            run = await finish(engine, workflow)

        assert run.status == "succeeded", run.error
        assert step(run, "show").output["stdout"] == "*** not-a-secret-here"


async def test_the_worker_refuses_api_keys_outside_the_configured_secret_env_pattern(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    async with engine_on(broker, tmp_path) as engine:
        await engine.create_agent(
            {"id": "keyed", "name": "Keyed", "model": "openai/gpt-4o-mini", "api_key_env": "OTHER_API_KEY"}
        )
        workflow = {
            "name": "ask",
            "steps": [{"id": "ask", "task": "llm_call", "with": {"agent": "keyed", "prompt": "hi"}}],
        }
        async with WorkerProcess(broker.url, tmp_path, traits={"secret_env_pattern": "^SHOP_PASSPHRASE$"}):
            run = await finish(engine, workflow)

        assert run.status == "failed"
        assert "OTHER_API_KEY may not be used as an API key" in step(run, "ask").error["message"]
        assert "^SHOP_PASSPHRASE$" in step(run, "ask").error["message"]


async def test_the_worker_refuses_shell_steps_when_allow_shell_is_false(broker: BrokerProcess, tmp_path: Path) -> None:
    workflow = {"name": "sh", "steps": [shell("touch", "touch made-it")]}
    async with engine_on(broker, tmp_path) as engine:
        async with WorkerProcess(broker.url, tmp_path, traits={"allow_shell": False}):
            run = await finish(engine, workflow)

        assert run.status == "failed"
        assert "shell steps are disabled" in step(run, "touch").error["message"]
        assert not (tmp_path / "made-it").exists()

    # -- the queue itself --------------------------------------------------------------------------


async def test_a_full_broker_queue_makes_put_wait_and_drops_nothing(broker: BrokerProcess) -> None:
    queue = make_queue(f"{broker.url}?max_pending=2&prefix=bounded")
    await queue.start()
    try:
        jobs = [Job("r", f"s{n}", f"s{n}", 1, "echo", {"value": n}) for n in range(3)]
        await queue.put(jobs[0])
        await queue.put(jobs[1])
        blocked = asyncio.ensure_future(queue.put(jobs[2]))
        await asyncio.sleep(0.3)
        assert not blocked.done()

        consumer = queue.consume()
        first = await asyncio.wait_for(anext(consumer), 5)
        await queue.ack(first)
        await asyncio.wait_for(blocked, 5)
        rest = [await asyncio.wait_for(anext(consumer), 5) for _ in range(2)]
        for delivery in rest:
            await queue.ack(delivery)
        await consumer.aclose()
    finally:
        await queue.close()

    assert [d.job.key for d in [first, *rest]] == ["s0", "s1", "s2"]


async def test_servers_with_other_prefixes_on_one_broker_do_not_mix(broker: BrokerProcess) -> None:
    ours, theirs = make_queue(f"{broker.url}?prefix=ours"), make_queue(f"{broker.url}?prefix=theirs")
    await ours.start()
    await theirs.start()
    try:
        await theirs.put(Job("r", "theirs", "theirs", 1, "echo", {}))
        await ours.put(Job("r", "ours", "ours", 1, "echo", {}))
        taken = []
        for queue in (ours, theirs):
            consumer = queue.consume()
            taken.append(await asyncio.wait_for(anext(consumer), 5))
            await queue.ack(taken[-1])
            await consumer.aclose()
    finally:
        await ours.close()
        await theirs.close()

    assert [d.job.key for d in taken] == ["ours", "theirs"]


def test_health_shows_the_broker_url_without_its_password() -> None:
    queue = make_queue("redis://clarion:s3cret@broker.internal:6379/0?prefix=team-a")
    assert queue.health()["url"] == "redis://clarion:***@broker.internal:6379/0?prefix=team-a"
    assert make_queue("nats://t0ken@broker.internal:4222").health()["url"] == "nats://***@broker.internal:4222"


def test_an_unknown_queue_scheme_is_a_bad_request_naming_the_choices() -> None:
    with pytest.raises(BadRequest, match=r"unknown kind of queue 'amqp'.*redis://.*nats://"):
        make_queue("amqp://broker:5672")
    with pytest.raises(BadRequest, match="visibility_timeout"):
        make_queue("redis://127.0.0.1:6379/0?visibility_timeout=-1")


# -- an unreachable broker -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["redis", "nats"])
def test_clarion_worker_on_an_unreachable_broker_says_so_in_one_line(scheme: str, tmp_path: Path) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "clarion_jupyter.cli", "worker", "--queue", url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot reach the {scheme} broker at {url}")


@pytest.mark.parametrize("scheme", ["redis", "nats"])
async def test_an_engine_on_an_unreachable_broker_fails_to_start_naming_the_url(scheme: str, tmp_path: Path) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}"
    engine = Engine(tmp_path / "runs.duckdb", workspace_root=tmp_path, queue_url=url)
    with pytest.raises(QueueUnavailable, match=f"cannot reach the {scheme} broker at {url}"):
        await engine.start()
    # nothing was left open: the database can be opened by the next engine
    async with Engine(tmp_path / "runs.duckdb", workspace_root=tmp_path) as local:
        assert (
            await finish(local, {"name": "ok", "steps": [{"id": "e", "task": "echo", "with": {"value": 1}}]})
        ).status == "succeeded"


# -- a real Jupyter server -------------------------------------------------------------------------


@pytest.fixture
def clarion_traits(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The server's traits: its queue on this test's broker, unless the test's marker names another."""
    marker = request.node.get_closest_marker("clarion")
    traits = {"db_path": str(tmp_path / "clarion.duckdb"), "workers": 4, **(marker.kwargs if marker else {})}
    if "queue_url" not in traits:
        traits["queue_url"] = request.getfixturevalue("broker").url
    return traits


async def test_the_jupyter_server_runs_a_workflow_through_the_broker_and_a_worker(
    api: Api, broker: BrokerProcess, clarion_traits: dict[str, Any], jp_root_dir: Path, tmp_path: Path
) -> None:
    workflow = {
        "id": "through-broker",
        "name": "Through the broker",
        "steps": [
            {"id": "write", "task": "file_write", "with": {"path": "out.txt", "content": "written remotely"}},
            shell("count", "wc -c < out.txt"),
        ],
        "outputs": {"bytes": "{{ steps.count.output.stdout | trim }}"},
    }
    async with WorkerProcess(clarion_traits["queue_url"], tmp_path, workspace=jp_root_dir) as worker:
        await worker.wait_ready()
        run_id = await start_run(api, await create_workflow(api, workflow))
        run = await wait_run(api, run_id)
        health = (await api("GET", "health")).body

    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"] == {"bytes": "16"}
    assert (jp_root_dir / "out.txt").read_text() == "written remotely"
    assert health["queue"]["kind"] == broker.kind
    assert health["queue"]["url"] == broker.url
    assert health["queue"]["backlog"] == 0


async def test_the_jupyter_servers_health_is_degraded_while_its_broker_is_down(
    api: Api, broker: BrokerProcess, clarion_traits: dict[str, Any]
) -> None:
    assert (await api("GET", "health")).body["status"] == "ok"
    broker.stop()
    async with asyncio.timeout(10):
        while (reply := await api("GET", "health")).body["status"] != "degraded":
            await asyncio.sleep(0.1)

    assert reply.status == 200  # the server itself still answers; runs wait for the broker
    assert reply.body["queue"]["up"] is False
    assert reply.body["queue"]["url"] == broker.url
    assert reply.body["queue"]["down_since"].endswith("+00:00")


@pytest.mark.clarion(queue_url="redis://:hunter2@127.0.0.1:9/0")
async def test_a_jupyter_server_whose_broker_is_unreachable_answers_503_naming_it(api: Api) -> None:
    reply = await api("GET", "health")

    assert reply.status == 503
    assert reply.body["status"] == "stopped"
    assert reply.body["error"]["code"] == "queue_unavailable"
    assert "cannot reach the redis broker at redis://:***@127.0.0.1:9/0" in reply.body["error"]["message"]
    assert "hunter2" not in json.dumps(reply.body)
    assert (await api("GET", "runs")).status == 503


@pytest.fixture
def without_queue_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)


async def test_a_jupyter_server_on_a_broker_without_the_secret_answers_503_saying_how_to_set_it(
    without_queue_secret: None, api: Api, broker: BrokerProcess
) -> None:
    reply = await api("GET", "health")

    assert reply.status == 503
    assert reply.body["error"]["code"] == "queue_unavailable"
    assert f"set the environment variable {SECRET_ENV}" in reply.body["error"]["message"]
