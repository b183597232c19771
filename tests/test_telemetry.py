"""Metrics on Jupyter's own ``/metrics`` (behind its auth) and OpenTelemetry spans of runs and
steps, both derived from the committed events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest_server import ECHO_WORKFLOW, create_workflow, start_run, wait_run
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPClientError

from clarion_jupyter import Engine


async def scrape(jp_fetch) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await jp_fetch("metrics")
    text = response.body.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("clarion_")
    }


async def test_jupyters_metrics_endpoint_counts_runs_and_steps(api, jp_fetch) -> None:
    before = await scrape(jp_fetch)
    await create_workflow(api, ECHO_WORKFLOW)
    for _ in range(3):
        assert (await wait_run(api, await start_run(api, "echo")))["status"] == "succeeded"
    after = await scrape(jp_fetch)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("clarion_runs_total", workflow_id="echo", status="succeeded") == 3
    assert grew("clarion_steps_total", task="echo", status="succeeded") == 3
    assert grew("clarion_step_duration_seconds_count", task="echo") == 3
    assert grew("clarion_run_duration_seconds_count", workflow_id="echo") == 3
    assert after[("clarion_runs_active", ())] == 0


async def test_the_metrics_endpoint_needs_jupyters_auth(api, jp_fetch) -> None:
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("metrics", headers={"Authorization": "token wrong"})
    assert refused.value.code in (401, 403)


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_a_run_is_a_span_with_a_child_span_per_step_attempt(tmp_path: Path, spans) -> None:
    provider, exporter = spans
    workflow = {
        "name": "traced",
        "steps": [
            {"id": "a", "task": "echo", "with": {"value": 1}},
            {
                "parallel": [
                    {"id": "b", "task": "echo", "with": {"value": 2}},
                    {"id": "c", "task": "echo", "with": {"value": 3}},
                ]
            },
            {
                "id": "flaky",
                "task": "shell",
                "with": {"command": "exit 1"},
                "retry": {"max_attempts": 2, "backoff_s": 0.01},
            },
        ],
    }
    async with Engine(tmp_path / "t.duckdb", workspace_root=tmp_path, tracer=provider.get_tracer("test")) as engine:
        run_id = await engine.submit(workflow)
        run = await asyncio.wait_for(engine.wait(run_id), 20)
    assert run.status == "failed"
    finished = {span.name: span for span in exporter.get_finished_spans() if span.name != "clarion.step flaky"}
    flaky = [span for span in exporter.get_finished_spans() if span.name == "clarion.step flaky"]
    root = finished["clarion.run traced"]
    assert root.attributes["clarion.run_id"] == run_id and root.attributes["clarion.status"] == "failed"
    assert root.status.status_code == StatusCode.ERROR
    for name in ("clarion.step a", "clarion.step b", "clarion.step c"):
        assert finished[name].parent.span_id == root.context.span_id
        assert finished[name].context.trace_id == root.context.trace_id
        assert finished[name].attributes["clarion.task"] == "echo"
    assert [span.attributes["clarion.attempt"] for span in flaky] == [1, 2]
    assert all(span.status.status_code == StatusCode.ERROR for span in flaky)
    assert (
        root.start_time <= finished["clarion.step a"].start_time <= finished["clarion.step a"].end_time <= root.end_time
    )


async def test_a_waiting_step_is_an_event_on_its_runs_span(tmp_path: Path, spans) -> None:
    provider, exporter = spans
    workflow = {"name": "gated", "steps": [{"id": "g", "task": "echo", "approval": True, "with": {"value": 1}}]}
    async with Engine(tmp_path / "t.duckdb", workspace_root=tmp_path, tracer=provider.get_tracer("test")) as engine:
        run_id = await engine.submit(workflow)
        while (await engine.get_run(run_id)).status != "waiting":
            await asyncio.sleep(0.02)
        await engine.approve(run_id, "g")
        await asyncio.wait_for(engine.wait(run_id), 20)
    root = next(span for span in exporter.get_finished_spans() if span.name == "clarion.run gated")
    assert [event.name for event in root.events] == ["approval_requested", "approval_granted"]
