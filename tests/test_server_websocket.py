"""The v3 WebSockets: replay then live, reconnect with ``since``, every run's stream, back-pressure, pings."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest_server import (
    ECHO_WORKFLOW,
    SLEEPY_WORKFLOW,
    create_workflow,
    read_until_closed,
    start_run,
    wait_run,
)
from tornado.httpclient import HTTPClientError

BURST_WORKFLOW = {
    "id": "burst",
    "name": "Burst",
    "steps": [
        {"id": "wait", "task": "shell", "with": {"command": "sleep 0.3"}},
        {"id": "each", "task": "echo", "for_each": list(range(40)), "with": {"value": "{{ item }}"}},
    ],
}
"""A pause (so a client can subscribe) and then a burst of events, far more than a tiny ws_buffer."""


async def test_subscribe_replays_a_finished_run_then_closes_1000(api, jp_ws_fetch):
    await create_workflow(api, ECHO_WORKFLOW)
    run_id = await start_run(api, "echo")
    await wait_run(api, run_id)
    ws = await jp_ws_fetch("ws", "runs", run_id, "subscribe")
    events = await read_until_closed(ws)
    stored = (await api("GET", "runs", run_id, "events")).body["events"]
    assert events == stored
    assert ws.close_code == 1000


async def test_reconnect_with_since_mid_run_misses_nothing(api, jp_ws_fetch):
    await create_workflow(api, SLEEPY_WORKFLOW)
    run_id = await start_run(api, "sleepy")
    ws = await jp_ws_fetch("ws", "runs", run_id, "subscribe", params={"since": 0})
    first = []
    while not first or first[-1]["type"] != "step_completed":
        first.append(json.loads(await asyncio.wait_for(ws.read_message(), 10)))
    ws.close()

    ws = await jp_ws_fetch("ws", "runs", run_id, "subscribe", params={"since": first[-1]["seq"]})
    rest = await read_until_closed(ws)
    seqs = [e["seq"] for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["type"] == "workflow_succeeded"
    assert len(seqs) == len((await api("GET", "runs", run_id, "events")).body["events"])


async def test_subscribe_to_unknown_run_closes_4404(jp_ws_fetch):
    ws = await jp_ws_fetch("ws", "runs", "no-such-run", "subscribe")
    assert await read_until_closed(ws) == []
    assert ws.close_code == 4404


async def test_subscribe_with_bad_since_is_refused_with_400(api, jp_ws_fetch):
    await create_workflow(api, ECHO_WORKFLOW)
    run_id = await start_run(api, "echo")
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("ws", "runs", run_id, "subscribe", params={"since": "soon"})
    assert refused.value.code == 400


async def test_all_runs_socket_receives_events_of_two_runs(api, jp_ws_fetch):
    await create_workflow(api, ECHO_WORKFLOW)
    ws = await jp_ws_fetch("ws", "runs")
    run_ids = {await start_run(api, "echo"), await start_run(api, "echo")}
    finished: set[str] = set()
    while finished != run_ids:
        event = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        if event["type"] == "workflow_succeeded":
            finished.add(event["run_id"])
    ws.close()


@pytest.mark.clarion(ws_buffer=2)
async def test_slow_subscriber_is_closed_4008_with_since_to_resume_from(api, jp_ws_fetch):
    await create_workflow(api, BURST_WORKFLOW)
    run_id = await start_run(api, "burst")
    ws = await jp_ws_fetch("ws", "runs", run_id, "subscribe")
    await wait_run(api, run_id)  # the client reads nothing meanwhile
    received = await read_until_closed(ws)
    assert ws.close_code == 4008
    resume_from = received[-1]["seq"] if received else 0
    assert f"since={resume_from}" in ws.close_reason


@pytest.mark.clarion(ws_buffer=2)
async def test_slow_all_runs_subscriber_is_closed_4008(api, jp_ws_fetch):
    await create_workflow(api, BURST_WORKFLOW)
    ws = await jp_ws_fetch("ws", "runs")
    await wait_run(api, await start_run(api, "burst"))
    await read_until_closed(ws)
    assert ws.close_code == 4008
    assert "reconnect" in ws.close_reason


@pytest.mark.clarion(ws_ping_interval_s=0.05)
async def test_idle_socket_gets_pings(jp_ws_fetch):
    ws = await jp_ws_fetch("ws", "runs")
    pinged = asyncio.Event()
    ws.on_ping = lambda data: pinged.set()
    await asyncio.wait_for(pinged.wait(), 5)
    ws.close()


async def test_server_stop_closes_sockets_1001(api, jp_ws_fetch, clarion):
    ws = await jp_ws_fetch("ws", "runs")
    await clarion.stop_extension()
    assert await asyncio.wait_for(ws.read_message(), 5) is None
    assert ws.close_code == 1001
    assert (await api("GET", "health")).status == 503
