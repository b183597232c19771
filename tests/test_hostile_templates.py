"""Hostile templates against a real server: a typo or a costly expression fails its own step,
with a clear error, and neither wedges the engine nor holds the event loop; templates cannot
change what they read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest_server import ECHO_WORKFLOW, create_workflow, start_run, wait_run

from clarion_jupyter.testing.loop import LoopProbe

MAX_HOLD_S = 0.1


def echo_workflow(workflow_id: str, value: Any, outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": workflow_id,
        "name": workflow_id,
        "steps": [
            {"id": "a", "task": "echo", "with": {"value": {"k": "original"}}},
            {"id": "s", "task": "echo", "needs": ["a"], "with": {"value": value}},
        ],
    }
    if outputs is not None:
        doc["outputs"] = outputs
    return doc


@asynccontextmanager
async def watched(jp_fetch: Callable[..., Awaitable[Any]]) -> AsyncIterator[tuple[LoopProbe, list[float]]]:
    """A loop probe, and Jupyter's own ``/api/status`` polled meanwhile (its latencies)."""
    latencies: list[float] = []

    async def poll() -> None:
        while True:
            started = time.perf_counter()
            await jp_fetch("api", "status")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async with LoopProbe() as probe:
        poller = asyncio.create_task(poll())
        try:
            yield probe, latencies
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["step_id"] == step_id)


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{ [run.nope] }}", "nope"),
        ("{{ {'k': steps.a.output.nope} }}", "nope"),
        ("{{ [1]|map(attribute='__class__')|list }}", "__class__"),
        ("{{ [1]|map(attribute='missing') }}", "missing"),
        ("text {{ [steps.a.output.nope] }}", "nope"),
    ],
)
async def test_an_undefined_value_inside_a_result_fails_its_step_and_the_engine_runs_on(api, template, named):
    await create_workflow(api, echo_workflow("typo", template))
    run = await wait_run(api, await start_run(api, "typo"))
    assert run["status"] == "failed"
    error = step(run, "s")["error"]
    assert error["code"] == "template"
    assert named in error["message"] and "field 'value'" in error["message"]
    # Nothing is wedged: the next run of another workflow finishes.
    await create_workflow(api, ECHO_WORKFLOW)
    assert (await wait_run(api, await start_run(api, "echo")))["status"] == "succeeded"


async def test_an_undefined_value_inside_the_outputs_fails_the_run_naming_the_output(api):
    await create_workflow(api, echo_workflow("outs", "fine", outputs={"label": "{{ [steps.s.output.nope] }}"}))
    run = await wait_run(api, await start_run(api, "outs"))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "outputs"
    assert "field 'label'" in run["error"]["message"] and "nope" in run["error"]["message"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ 3 ** (2*10**7) > 0 }}",
        "{{ 'a' * 10**8 }}",
        "{{ 'x'|center(10**9) }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ [1]|batch(10**9, 0)|list }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{{ ('a www.example.com ' * 500000) | urlize }}",
        "{{ ('<b>x</b> ' * 1000000) | striptags }}",
        "{{ ('ab' * 4000000) | sort | join }}",
        "{{ range(100000) | map('string') | list | unique | list }}",
    ],
)
async def test_a_costly_template_fails_its_step_within_budget_and_never_holds_the_loop(api, jp_fetch, template):
    await create_workflow(api, echo_workflow("costly", template))
    async with watched(jp_fetch) as (probe, latencies):
        run = await wait_run(api, await start_run(api, "costly"))
    assert run["status"] == "failed"
    assert "template" in step(run, "s")["error"]["message"] or step(run, "s")["error"]["code"] == "template"
    assert "BudgetExceeded" in step(run, "s")["error"]["message"]
    assert probe.max_busy_s < MAX_HOLD_S, str(probe)
    assert latencies and max(latencies) < 1.0, f"/api/status took up to {max(latencies) * 1000:.0f} ms; {probe}"


async def test_a_costly_system_prompt_fails_the_llm_step_without_holding_the_loop(api, jp_fetch):
    agent = {"id": "costly", "name": "Costly", "model": "openai/gpt-4o", "system_prompt": "{{ 3 ** (2*10**7) > 0 }}"}
    assert (await api("POST", "agents", body=agent)).status == 201
    workflow = {
        "id": "ask",
        "name": "Ask",
        "steps": [
            {
                "id": "ask",
                "task": "llm_call",
                "with": {"agent": "costly", "prompt": "hi", "parameters": {"mock_response": "ok"}},
            }
        ],
    }
    await create_workflow(api, workflow)
    async with watched(jp_fetch) as (probe, _latencies):
        run = await wait_run(api, await start_run(api, "ask"))
    assert run["status"] == "failed"
    assert "system prompt" in step(run, "ask")["error"]["message"]
    assert "larger integer" in step(run, "ask")["error"]["message"]
    assert probe.max_busy_s < MAX_HOLD_S, str(probe)


@pytest.mark.parametrize(
    "template", ["{{ steps.a.output.value.update({'k': 'tampered'}) }}", "{{ run.update({'id': 'FAKE'}) }}"]
)
async def test_a_template_cannot_change_what_it_reads(api, template):
    doc = echo_workflow("tamper", template)
    doc["steps"].append(
        {"id": "after", "task": "echo", "needs": ["s"], "if": "{{ true }}", "with": {"value": "{{ run.id }}"}}
    )
    doc["steps"][1]["continue_on_error"] = True
    await create_workflow(api, doc)
    first = await wait_run(api, await start_run(api, "tamper"))
    assert "unsafe" in step(first, "s")["error"]["message"]
    second = await wait_run(api, await start_run(api, "tamper"))
    assert step(second, "a")["output"]["value"] == {"k": "original"}
    assert (await api("GET", "workflows", "tamper")).body["steps"][0]["with"]["value"] == {"k": "original"}
    assert step(first, "after")["output"]["value"] == first["run_id"]
