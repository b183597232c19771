"""The engine and its run executor, end to end: a real DuckDB file, real shell subprocesses.

Each test states one behaviour of the contract in ARCHITECTURE.md ("Workflow document",
"Run lifecycle and events", "Python API of the engine").
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import Conflict, NotFound, ValidationFailed
from clarion_jupyter.storage.records import Event
from clarion_jupyter.workflow import supervisor
from clarion_jupyter.workflow.models import StepRun, WorkflowRun

TERMINAL = {"workflow_succeeded", "workflow_failed", "workflow_cancelled"}
pytestmark = pytest.mark.timeout(60)
FAIL_TWICE = "n=$(cat c 2>/dev/null || echo 0); echo $((n+1)) > c; [ $n -ge 2 ]"
"""Fails on its first two runs and succeeds from the third on (counts runs in the file ``c``)."""


# -- helpers -------------------------------------------------------------------


@asynccontextmanager
async def engine_at(tmp_path: Path, **options: Any) -> AsyncIterator[Engine]:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path, **options) as engine:
        yield engine


def workflow(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "test", "steps": list(steps), **fields}


def echo(step_id: str, value: Any, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "task": "echo", "with": {"value": value}, **fields}


def shell(step_id: str, command: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "task": "shell", "with": {"command": command}, **fields}


async def run_to_end(engine: Engine, doc: Any, inputs: dict[str, Any] | None = None) -> WorkflowRun:
    run_id = await engine.submit(doc, inputs)
    return await asyncio.wait_for(engine.wait(run_id), 20)


class Reopened(NamedTuple):
    """A run as the engine that ran it shows it, and as an engine opened anew on the file reads it."""

    live: WorkflowRun
    live_events: list[Event]
    stored: WorkflowRun
    stored_events: list[Event]
    resumed: list[str]


async def run_then_reopened(tmp_path: Path, doc: Any) -> Reopened:
    async with engine_at(tmp_path) as engine:
        live = await run_to_end(engine, doc)
        live_events = await engine.events(live.run_id)
    async with engine_at(tmp_path) as reopened:
        stored = await reopened.get_run(live.run_id)
        stored_events = await reopened.events(live.run_id)
        return Reopened(live, live_events, stored, stored_events, list(reopened.resumed))


def step(run: WorkflowRun, key: str) -> StepRun:
    found = [s for s in run.steps if s.key == key]
    assert found, f"no step {key!r} in {[s.key for s in run.steps]}"
    return found[0]


def statuses(run: WorkflowRun) -> dict[str, str]:
    return {s.key: s.status.value for s in run.steps}


def of_type(events: list[Event], type_: str, step_id: str | None = None) -> list[Event]:
    return [e for e in events if e.type == type_ and (step_id is None or e.step_id == step_id)]


def assert_event_log(events: list[Event]) -> None:
    """Gap-free seq from 1, exactly one terminal event, and it is the last."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events if e.type in TERMINAL] == [events[-1].type]
    assert events[0].type == "run_queued"


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def processes_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def kill_leftovers(pids: list[int]) -> None:
    """Never leave a test's processes behind, even when the test fails."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def read_pid(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was never written")


async def wait_for_event(engine: Engine, run_id: str, type_: str, step_id: str | None = None) -> list[Event]:
    """Poll the stored events until one of ``type_`` (for ``step_id``) is there; return them all."""
    for _ in range(500):
        events = await engine.events(run_id)
        if of_type(events, type_, step_id):
            return events
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {type_} event for {step_id} in run {run_id}")


# -- sequence, parallel, DAG -------------------------------------------------------


async def test_sequential_chain_passes_outputs_through_templates(tmp_path: Path) -> None:
    doc = workflow(
        echo("a", "{{ inputs.n * 2 }}"),
        echo("b", "{{ steps.a.output.value + 1 }}"),
        shell("c", "echo got-{{ steps.b.output.value }}"),
        inputs={"n": {"type": "integer"}},
    )
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc, {"n": 5})
        events = await engine.events(run.run_id)
    assert run.status == "succeeded"
    assert step(run, "a").output == {"value": 10}
    assert step(run, "b").output == {"value": 11}
    assert step(run, "c").output["stdout"] == "got-11\n"
    order = [(e.type, e.step_id) for e in events if e.type in ("step_started", "step_completed")]
    assert order == [
        ("step_started", "a"), ("step_completed", "a"),
        ("step_started", "b"), ("step_completed", "b"),
        ("step_started", "c"), ("step_completed", "c"),
    ]  # fmt: skip


async def test_a_lone_surrogate_in_an_output_becomes_the_replacement_character_as_it_enters_the_run(
    tmp_path: Path,
) -> None:
    """``json.loads`` of a hostile reply makes a lone surrogate, which no UTF-8 text holds: the
    run still succeeds, and what it shows while the engine runs (its view, its events, the next
    step's input) is what is stored, U+FFFD in its place."""
    doc = workflow(echo("a", "cut \ud800 here"), echo("b", "{{ steps.a.output.value }}!"))
    expected = [{"value": "cut \ufffd here"}, {"value": "cut \ufffd here!"}]
    seen = await run_then_reopened(tmp_path, doc)
    assert seen.live.status == "succeeded"
    for run, run_events in ((seen.live, seen.live_events), (seen.stored, seen.stored_events)):
        assert [step(run, "a").output, step(run, "b").output] == expected
        assert [e.data["output"] for e in run_events if e.type == "step_completed"] == expected


async def test_a_lone_surrogate_in_the_workflow_document_becomes_the_replacement_character_as_it_arrives(
    tmp_path: Path,
) -> None:
    """A document comes as JSON from a client, where ``"\\ud800"`` parses to a lone surrogate:
    the run's own copy of it holds U+FFFD from the start, as the stored copy does."""
    doc = workflow(echo("a", "cut \ud800 here"))
    doc["name"] = "name \udfff"
    seen = await run_then_reopened(tmp_path, doc)
    for run in (seen.live, seen.stored):
        assert run.workflow["name"] == run.workflow_name == "name \ufffd"
        assert run.workflow["steps"][0]["with"] == {"value": "cut \ufffd here"}


async def test_parallel_group_members_run_concurrently(tmp_path: Path) -> None:
    doc = workflow({"parallel": [shell("left", "sleep 0.5"), shell("right", "sleep 0.5")]}, echo("after", 1))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert run.status == "succeeded"
    left, right, after = step(run, "left"), step(run, "right"), step(run, "after")
    assert left.started_at < right.finished_at and right.started_at < left.finished_at
    assert after.started_at >= max(left.finished_at, right.finished_at)


async def test_needs_empty_list_starts_at_once_even_at_the_end_of_the_list(tmp_path: Path) -> None:
    doc = workflow(
        shell("slow", "sleep 0.5"),
        echo("next", 1),
        echo("free", 2, needs=[]),
        echo("joined", 3, needs=["slow", "free"]),
    )
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "succeeded"
    seq = {(e.type, e.step_id): e.seq for e in events}
    assert seq[("step_completed", "free")] < seq[("step_completed", "slow")]
    assert seq[("step_started", "next")] > seq[("step_completed", "slow")]
    assert seq[("step_started", "joined")] > max(seq[("step_completed", "slow")], seq[("step_completed", "free")])


# -- conditions and skips ------------------------------------------------------------


async def test_false_if_skips_the_step(tmp_path: Path) -> None:
    doc = workflow(echo("maybe", 1, **{"if": "{{ inputs.n > 10 }}"}), inputs={"n": {"type": "integer", "default": 3}})
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "succeeded"
    assert step(run, "maybe").status == "skipped"
    assert [e.data.get("reason") for e in of_type(events, "step_skipped", "maybe")] == ["condition is false"]
    assert not of_type(events, "step_started", "maybe")


async def test_skip_propagates_through_explicit_needs(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1, **{"if": False}), echo("b", 2, needs=["a"]), echo("c", 3, needs=["b"]))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "succeeded"
    assert statuses(run) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    reasons = {e.step_id: e.data.get("reason") for e in of_type(events, "step_skipped")}
    assert reasons == {"a": "condition is false", "b": "dependency 'a' skipped", "c": "dependency 'b' skipped"}


async def test_skip_propagates_through_a_template_reading_the_skipped_output(tmp_path: Path) -> None:
    doc = workflow(
        echo("a", 1, **{"if": False}),
        echo("between", "unrelated"),
        echo("reader", "{{ steps.a.output.value }}"),
    )
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert run.status == "succeeded"
    assert statuses(run) == {"a": "skipped", "between": "succeeded", "reader": "skipped"}


async def test_list_order_alone_does_not_propagate_a_skip(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1, **{"if": False}), echo("b", "runs anyway"))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert statuses(run) == {"a": "skipped", "b": "succeeded"}
    assert step(run, "b").output == {"value": "runs anyway"}


async def test_dependants_own_if_decides_even_when_its_dependency_was_skipped(tmp_path: Path) -> None:
    doc = workflow(
        echo("x", 1, **{"if": False}),
        echo("fallback", "x was {{ steps.x.status }}", needs=["x"], **{"if": "{{ steps.x.status == 'skipped' }}"}),
    )
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert statuses(run) == {"x": "skipped", "fallback": "succeeded"}
    assert step(run, "fallback").output == {"value": "x was skipped"}


# -- for_each --------------------------------------------------------------------------


async def test_for_each_runs_one_child_per_item_and_gathers_outputs_in_item_order(tmp_path: Path) -> None:
    # The first item is the slowest, so completion order differs from item order.
    doc = workflow(
        shell("m", "sleep {{ item }}; echo {{ item }}", for_each="{{ inputs.delays }}"),
        echo("total", "{{ steps.m.output | length }}"),
        inputs={"delays": {"type": "array"}},
    )
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc, {"delays": [0.3, 0.1, 0]})
        events = await engine.events(run.run_id)
    assert run.status == "succeeded"
    children = [s for s in run.steps if s.step_id == "m" and s.key != "m"]
    assert sorted((s.key, s.item_index) for s in children) == [("m[0]", 0), ("m[1]", 1), ("m[2]", 2)]
    assert [o["stdout"] for o in step(run, "m").output] == ["0.3\n", "0.1\n", "0\n"]
    assert step(run, "total").output == {"value": 3}
    completed = [e.step_id for e in of_type(events, "step_completed") if e.step_id.startswith("m[")]
    assert completed[0] != "m[0]", "items are expected to finish out of order in this test"


async def test_for_each_over_an_empty_list_succeeds_with_an_empty_output(tmp_path: Path) -> None:
    doc = workflow(echo("m", "{{ item }}", for_each=[]), echo("after", "{{ steps.m.output }}"))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert run.status == "succeeded"
    assert step(run, "m").status == "succeeded"
    assert step(run, "m").output == []
    assert step(run, "after").output == {"value": []}
    assert [s.key for s in run.steps if s.key.startswith("m[")] == []


async def test_for_each_over_a_non_list_fails_the_step_with_a_clear_message(tmp_path: Path) -> None:
    doc = workflow(echo("m", "{{ item }}", for_each="{{ inputs.n }}"), inputs={"n": {"type": "integer", "default": 3}})
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert run.status == "failed"
    assert step(run, "m").status == "failed"
    assert step(run, "m").error["message"] == "for_each must give a list, got int"
    assert "step 'm'" in run.error["message"] and "for_each must give a list" in run.error["message"]


async def test_one_failing_for_each_item_fails_the_map_and_the_run(tmp_path: Path) -> None:
    doc = workflow(shell("m", "exit {{ item }}", for_each=[0, 3, 0]), echo("after", 1))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert run.status == "failed"
    assert statuses(run)["m[0]"] == "succeeded"
    assert statuses(run)["m[1]"] == "failed"
    assert statuses(run)["m[2]"] == "succeeded"
    assert step(run, "m").status == "failed"
    assert "for_each items failed" in step(run, "m").error["message"]
    assert "after" not in statuses(run)


# -- retries, timeouts, failures ------------------------------------------------------------


async def test_step_failing_twice_succeeds_on_its_third_attempt(tmp_path: Path) -> None:
    doc = workflow(shell("flaky", FAIL_TWICE, retry={"max_attempts": 3, "backoff_s": 0.05}))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "succeeded"
    assert step(run, "flaky").status == "succeeded"
    assert step(run, "flaky").attempt == 3
    assert [e.data["attempt"] for e in of_type(events, "step_retrying", "flaky")] == [1, 2]
    assert [e.data["attempt"] for e in of_type(events, "step_started", "flaky")] == [1, 2, 3]
    assert of_type(events, "step_completed", "flaky")[0].data["attempt"] == 3
    assert (tmp_path / "c").read_text().strip() == "3"


async def test_exhausted_retries_fail_the_step_and_the_run(tmp_path: Path) -> None:
    doc = workflow(shell("never", "echo try >> tries; exit 1", retry={"max_attempts": 2, "backoff_s": 0.05}))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "failed"
    assert step(run, "never").status == "failed"
    assert step(run, "never").attempt == 2
    assert len(of_type(events, "step_retrying")) == 1
    assert [e.data["attempt"] for e in of_type(events, "step_failed")] == [2]
    assert (tmp_path / "tries").read_text().count("try") == 2


async def test_retry_backoff_delays_grow_between_attempts(tmp_path: Path) -> None:
    retry = {"max_attempts": 4, "backoff_s": 0.1, "jitter": 0}
    doc = workflow(shell("never", "exit 1", retry=retry))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "failed"
    retrying = of_type(events, "step_retrying")
    started = of_type(events, "step_started")[1:]
    assert [e.data["delay_s"] for e in retrying] == [0.1, 0.2, 0.4]
    gaps = [(s.ts - r.ts).total_seconds() for r, s in zip(retrying, started, strict=True)]
    for gap, delay in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert delay * 0.9 <= gap < delay + 0.3, gaps
    assert gaps[0] < gaps[1] < gaps[2]


async def test_step_is_retrying_between_attempts(tmp_path: Path) -> None:
    doc = workflow(shell("flaky", FAIL_TWICE, retry={"max_attempts": 3, "backoff_s": 0.3, "jitter": 0}))
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        await wait_for_event(engine, run_id, "step_retrying", "flaky")
        between = await engine.get_run(run_id)
        run = await asyncio.wait_for(engine.wait(run_id), 10)
    assert (step(between, "flaky").status.value, step(between, "flaky").attempt) == ("retrying", 1)
    assert between.status == "running"
    assert run.status == "succeeded"


async def test_step_timeout_fails_a_long_step_early(tmp_path: Path) -> None:
    doc = workflow(shell("slow", "sleep 5", timeout_s=0.5))
    async with engine_at(tmp_path) as engine:
        started = time.monotonic()
        run = await run_to_end(engine, doc)
        took = time.monotonic() - started
    assert took < 3, f"a 0.5 s timeout took {took:.2f} s"
    assert run.status == "failed"
    assert step(run, "slow").status == "failed"
    assert "timed out" in step(run, "slow").error["message"]
    assert "timed out" in run.error["message"]


async def test_continue_on_error_lets_the_run_succeed_with_the_step_failed(tmp_path: Path) -> None:
    doc = workflow(shell("optional", "exit 3", continue_on_error=True), echo("after", "done"))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    assert run.status == "succeeded"
    assert statuses(run) == {"optional": "failed", "after": "succeeded"}
    assert "exited with 3" in step(run, "optional").error["message"]
    assert run.error is None


async def test_failed_step_fails_the_run_and_the_error_names_the_step(tmp_path: Path) -> None:
    doc = workflow(echo("first", 1), shell("boom", "exit 3"), echo("never", 2))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "failed"
    assert run.error["step_id"] == "boom"
    assert "step 'boom'" in run.error["message"] and "exited with 3" in run.error["message"]
    assert "never" not in statuses(run)
    assert events[-1].type == "workflow_failed"
    assert events[-1].data["error"] == run.error


# -- cancellation -------------------------------------------------------------------------


async def test_cancel_stops_a_running_shell_step_and_kills_its_processes(tmp_path: Path) -> None:
    # The pause before the pid files makes sure the command is past its start-up when cancelled.
    command = "sleep 0.3; echo $$ > shell.pid; sleep 30 & echo $! > sleep.pid; wait"
    doc = workflow(shell("wait", command), echo("after", 1))
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        shell_pid = await read_pid(tmp_path / "shell.pid")
        sleep_pid = await read_pid(tmp_path / "sleep.pid")
        started = time.monotonic()
        await engine.cancel(run_id)
        run = await asyncio.wait_for(engine.wait(run_id), 3)
        try:
            gone = await processes_gone([shell_pid, sleep_pid], timeout=3)
        finally:
            kill_leftovers([shell_pid, sleep_pid])
        took = time.monotonic() - started
        events = await engine.events(run_id)
    assert run.status == "cancelled"
    assert step(run, "wait").status == "cancelled"
    assert "after" not in statuses(run)
    assert gone, "the cancelled step's processes are still running"
    assert took < 3
    assert events[-1].type == "workflow_cancelled"
    assert_event_log(events)


async def test_each_step_a_cancel_stops_gets_its_own_event_before_the_runs_end(tmp_path: Path) -> None:
    doc = workflow({"parallel": [shell("left", "sleep 30"), shell("right", "sleep 30")]}, echo("after", 1))
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        started = set()
        async for event in engine.subscribe(run_id):
            started |= {event.step_id} if event.type == "step_started" else set()
            if started == {"left", "right"}:
                break
        await engine.cancel(run_id)
        await asyncio.wait_for(engine.wait(run_id), 5)
        events = await engine.events(run_id)
    stopped = [e for e in events if e.type == "step_cancelled"]
    assert sorted((e.step_id, e.data["reason"]) for e in stopped) == [
        ("left", "the run was cancelled"),
        ("right", "the run was cancelled"),
    ]
    assert events.index(stopped[-1]) < len(events) - 1 and events[-1].type == "workflow_cancelled"
    assert_event_log(events)


async def test_cancel_right_after_submit_leaves_no_process_behind(tmp_path: Path) -> None:
    """Cancelling while the commands are still starting up must stop all of them too.

    Eight commands start together; cancelling right after ``submit`` returns lands while the
    worker is still setting up the pipes of commands that have already started children.
    """
    group = {"parallel": [shell(f"s{i}", f"sleep 30 & echo $! > sleep-{i}.pid; wait") for i in range(8)]}
    pids: list[int] = []
    async with engine_at(tmp_path) as engine:
        for turns in (0, 1):
            for pid_file in tmp_path.glob("sleep-*.pid"):
                pid_file.unlink()
            run_id = await engine.submit(workflow(group))
            for _ in range(turns):
                await asyncio.sleep(0)
            await engine.cancel(run_id)
            assert (await asyncio.wait_for(engine.wait(run_id), 3)).status == "cancelled"
            await asyncio.sleep(0.3)  # a command that had not started yet may still write its pid file
            pids += [int(f.read_text()) for f in tmp_path.glob("sleep-*.pid") if f.read_text().strip()]
        try:
            gone = await processes_gone(pids, timeout=3)
            leaked = [pid for pid in pids if alive(pid)]
        finally:
            kill_leftovers(pids)
    assert gone, f"{len(leaked)} of {len(pids)} started commands kept running after their run was cancelled"


async def test_cancelled_run_does_not_start_steps_still_waiting_for_a_worker(tmp_path: Path) -> None:
    async with engine_at(tmp_path, workers=1) as engine:
        busy = await engine.submit(workflow(shell("busy", "sleep 0.5")))
        await wait_for_event(engine, busy, "step_started", "busy")
        queued = await engine.submit(workflow(shell("side_effect", "echo ran > side-effect.txt")))
        await engine.cancel(queued)
        cancelled = await asyncio.wait_for(engine.wait(queued), 3)
        await asyncio.wait_for(engine.wait(busy), 5)
        await asyncio.sleep(0.3)
    assert cancelled.status == "cancelled"
    assert not (tmp_path / "side-effect.txt").exists(), "a step of a cancelled run ran after the cancel"


async def test_cancel_during_a_retry_backoff_ends_the_run_without_another_attempt(tmp_path: Path) -> None:
    doc = workflow(shell("flaky", "echo try >> tries; exit 1", retry={"max_attempts": 3, "backoff_s": 30}))
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        await wait_for_event(engine, run_id, "step_retrying", "flaky")
        await engine.cancel(run_id)
        run = await asyncio.wait_for(engine.wait(run_id), 2)
    assert run.status == "cancelled"
    assert (step(run, "flaky").status.value, step(run, "flaky").attempt) == ("cancelled", 1)
    assert (tmp_path / "tries").read_text().count("try") == 1


async def test_cancel_of_a_finished_or_unknown_run_is_refused(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, workflow(echo("a", 1)))
        with pytest.raises(Conflict, match="already succeeded"):
            await engine.cancel(run.run_id)
        with pytest.raises(NotFound):
            await engine.cancel("no-such-run")
        assert (await engine.get_run(run.run_id)).status == "succeeded"


# -- events and subscriptions -----------------------------------------------------------------


async def test_every_run_has_gap_free_events_and_exactly_one_terminal_event(tmp_path: Path) -> None:
    ok = workflow(echo("a", 1), {"parallel": [echo("b", 2), echo("c", 3)]}, echo("m", "{{ item }}", for_each=[1, 2]))
    failing = workflow(shell("flaky", "exit 1", retry={"max_attempts": 2, "backoff_s": 0.01}))
    slow = workflow(shell("slow", "sleep 30"))
    async with engine_at(tmp_path) as engine:
        ok_run = await run_to_end(engine, ok)
        failed_run = await run_to_end(engine, failing)
        cancelled_id = await engine.submit(slow)
        await wait_for_event(engine, cancelled_id, "step_started", "slow")
        await engine.cancel(cancelled_id)
        await asyncio.wait_for(engine.wait(cancelled_id), 5)
        logs = {rid: await engine.events(rid) for rid in (ok_run.run_id, failed_run.run_id, cancelled_id)}
    for events in logs.values():
        assert_event_log(events)
    assert [log[-1].type for log in logs.values()] == ["workflow_succeeded", "workflow_failed", "workflow_cancelled"]


async def test_the_run_document_names_the_newest_event_it_includes(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, workflow(echo("a", 1), echo("b", 2)))
        events = await engine.events(run.run_id)
        assert run.last_seq == events[-1].seq > 1
    async with engine_at(tmp_path) as engine:  # a new engine reads the run from the database
        assert (await engine.get_run(run.run_id)).last_seq == events[-1].seq


async def test_the_run_document_holds_the_workflow_as_the_run_ran_it(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        await engine.create_workflow({"id": "w", **workflow(echo("a", 1))})
        run = await asyncio.wait_for(engine.wait(await engine.submit_saved("w", {})), 20)
        await engine.replace_workflow("w", workflow(echo("a", 1), echo("b", 2)))
        assert [s["id"] for s in (await engine.get_run(run.run_id)).workflow["steps"]] == ["a"]
        listed, _ = await engine.list_runs()
        assert listed[0].workflow is None, "lists leave the snapshot out"


async def test_subscribe_since_replays_only_later_events_then_follows_live(tmp_path: Path) -> None:
    doc = workflow(shell("gate", "while [ ! -f go ]; do sleep 0.02; done"), echo("after", 1))
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        stored = await wait_for_event(engine, run_id, "step_started", "gate")
        received: list[Event] = []
        first = asyncio.Event()

        async def follow() -> None:
            async for event in engine.subscribe(run_id, since=1):
                received.append(event)
                first.set()

        follower = asyncio.create_task(follow())
        await asyncio.wait_for(first.wait(), 5)
        (tmp_path / "go").touch()
        await asyncio.wait_for(follower, 10)
        all_events = await engine.events(run_id)
    assert received[0].seq == 2
    assert [e.seq for e in received] == list(range(2, all_events[-1].seq + 1))
    assert received[-1].type == "workflow_succeeded"
    assert len(received) > len(stored) - 1, "events after the gate opened must arrive live"


async def test_subscribe_after_the_run_ended_replays_and_stops(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, workflow(echo("a", 1), echo("b", 2)))
        everything = await asyncio.wait_for(_collect(engine.subscribe(run.run_id)), 5)
        tail = await asyncio.wait_for(_collect(engine.subscribe(run.run_id, since=3)), 5)
    assert_event_log(everything)
    assert [e.seq for e in tail] == [e.seq for e in everything if e.seq > 3]
    assert tail[-1].type == "workflow_succeeded"


async def test_stored_events_match_what_subscribe_delivered(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1), shell("b", "echo hi"), echo("m", "{{ item }}", for_each=["x", "y"]))
    async with engine_at(tmp_path) as engine:
        run_id = await engine.submit(doc)
        delivered = await asyncio.wait_for(_collect(engine.subscribe(run_id)), 10)
        stored = await engine.events(run_id)
    assert [e.as_dict() for e in delivered] == [e.as_dict() for e in stored]
    assert_event_log(stored)


async def _collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


# -- outputs, validation, submission --------------------------------------------------------------


async def test_workflow_outputs_are_rendered_with_native_types(tmp_path: Path) -> None:
    doc = workflow(
        echo("a", "{{ inputs.n * 2 }}"),
        echo("m", "{{ item | upper }}", for_each="{{ inputs.words }}"),
        inputs={"n": {"type": "integer"}, "words": {"type": "array", "default": ["x", "y"]}},
        outputs={
            "doubled": "{{ steps.a.output.value }}",
            "words": "{{ steps.m.output | map(attribute='value') | list }}",
            "text": "n={{ inputs.n }}",
            "fixed": 7,
        },
    )
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc, {"n": 4})
        events = await engine.events(run.run_id)
    assert run.outputs == {"doubled": 8, "words": ["X", "Y"], "text": "n=4", "fixed": 7}
    assert events[-1].data["outputs"] == run.outputs


async def test_an_outputs_template_error_fails_the_run(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1), outputs={"bad": "{{ steps.a.output.value.missing.deeper }}"})
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    assert run.status == "failed"
    assert step(run, "a").status == "succeeded"
    assert run.error["code"] == "outputs"
    assert "outputs could not be evaluated" in run.error["message"]
    assert events[-1].type == "workflow_failed"


@pytest.mark.parametrize(
    ("given", "message"),
    [({"x": "abc"}, "expected integer"), ({}, "missing required input"), ({"x": 1, "y": 2}, "unknown input")],
    ids=["wrong-type", "missing", "undeclared"],
)
async def test_invalid_inputs_are_refused_at_submit_naming_the_input(
    tmp_path: Path, given: dict[str, Any], message: str
) -> None:
    doc = workflow(echo("a", "{{ inputs.x }}"), inputs={"x": {"type": "integer"}})
    async with engine_at(tmp_path) as engine:
        with pytest.raises(ValidationFailed) as info:
            await engine.submit(doc, given)
        runs, _ = await engine.list_runs()
    problems = [p for p in info.value.problems if message in p.message]
    assert problems, info.value.problems
    assert problems[0].field in ("inputs.x", "inputs.y")
    assert "inputs." in str(info.value)
    assert runs == []


async def test_llm_call_with_an_unknown_agent_is_refused_at_submit(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1), {"id": "ask", "task": "llm_call", "with": {"agent": "nobody", "prompt": "hi"}})
    async with engine_at(tmp_path) as engine:
        with pytest.raises(ValidationFailed) as info:
            await engine.submit(doc)
        runs, _ = await engine.list_runs()
    [problem] = info.value.problems
    assert (problem.step, problem.field) == ("ask", "with.agent")
    assert "unknown agent 'nobody'" in problem.message
    assert runs == []


async def test_same_idempotency_key_returns_the_same_run(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1))
    async with engine_at(tmp_path) as engine:
        first = await engine.submit(doc, idempotency_key="order-42")
        again = await engine.submit(doc, idempotency_key="order-42")
        other = await engine.submit(doc, idempotency_key="order-43")
        for run_id in (first, other):
            await engine.wait(run_id)
        runs, _ = await engine.list_runs()
    assert again == first
    assert other != first
    assert len(runs) == 2


async def test_concurrent_submits_with_one_idempotency_key_start_one_run(tmp_path: Path) -> None:
    # An llm_call step makes submit await the agent check: the key must still be claimed once.
    ask = {"id": "ask", "task": "llm_call", "if": False, "with": {"agent": "helper", "prompt": "hi"}}
    async with engine_at(tmp_path) as engine:
        await engine.agents.create(
            {"id": "helper", "name": "Helper", "model": "openai/gpt-4o-mini", "system_prompt": "Be brief."}
        )
        run_ids = await asyncio.gather(*(engine.submit(workflow(ask), idempotency_key="once") for _ in range(5)))
        documents = [await engine.get_run(run_id) for run_id in run_ids]  # durable when returned
        await engine.wait(run_ids[0])
        runs, _ = await engine.list_runs()
    assert len(set(run_ids)) == 1
    assert {d.run_id for d in documents} == set(run_ids)
    assert len(runs) == 1


async def test_a_server_that_takes_keys_all_day_remembers_a_bounded_number_and_still_finds_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims are kept for the newest keys only (the database answers for the others)."""
    monkeypatch.setattr(supervisor, "MAX_CLAIMS", 3)
    doc = workflow(echo("a", 1))
    async with engine_at(tmp_path) as engine:
        first = [await engine.submit(doc, idempotency_key=f"order-{i}") for i in range(10)]
        assert len(engine._runs_live._claims) == 3
        again = [await engine.submit(doc, idempotency_key=f"order-{i}") for i in range(10)]
        for run_id in first:
            await engine.wait(run_id)
        runs, _ = await engine.list_runs(limit=100)
    assert again == first
    assert len(runs) == 10


async def test_idempotency_key_is_remembered_by_the_database(tmp_path: Path) -> None:
    doc = workflow(echo("a", 1))
    async with engine_at(tmp_path) as engine:
        first = await engine.submit(doc, idempotency_key="k")
        await engine.wait(first)
    async with engine_at(tmp_path) as engine:
        assert await engine.submit(doc, idempotency_key="k") == first


async def test_list_runs_is_newest_first_with_cursor_paging(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        submitted = [(await run_to_end(engine, workflow(echo("a", i)))).run_id for i in range(5)]
        page1, cursor1 = await engine.list_runs(limit=2)
        page2, cursor2 = await engine.list_runs(limit=2, cursor=cursor1)
        page3, cursor3 = await engine.list_runs(limit=2, cursor=cursor2)
        failed, _ = await engine.list_runs(status="failed")
    newest_first = list(reversed(submitted))
    assert [r.run_id for r in page1 + page2 + page3] == newest_first
    assert [len(page1), len(page2), len(page3)] == [2, 2, 1]
    assert cursor1 and cursor2 and cursor3 is None
    assert failed == []


async def test_run_document_steps_have_status_attempt_duration_and_output(tmp_path: Path) -> None:
    doc = workflow(shell("nap", "sleep 0.1; echo rested"), echo("skip", 1, **{"if": False}))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
    nap, skip = step(run, "nap"), step(run, "skip")
    assert (nap.status.value, nap.attempt, nap.step_id) == ("succeeded", 1, "nap")
    assert nap.duration_ms is not None and nap.duration_ms >= 100
    assert nap.output["stdout"] == "rested\n" and nap.output["exit_code"] == 0
    assert nap.started_at <= nap.finished_at
    assert skip.status == "skipped" and skip.output is None
    assert run.created_at <= run.started_at <= run.finished_at
    assert run.inputs == {} and run.workflow_id == "test"


async def test_stored_step_output_agrees_with_the_completion_event(tmp_path: Path) -> None:
    doc = workflow(shell("s", "echo out; echo err >&2"), echo("m", "{{ item }}", for_each=[1, 2]))
    async with engine_at(tmp_path) as engine:
        run = await run_to_end(engine, doc)
        events = await engine.events(run.run_id)
    completed = {e.step_id: e.data["output"] for e in of_type(events, "step_completed")}
    assert set(completed) == {"s", "m", "m[0]", "m[1]"}
    for key, output in completed.items():
        assert step(run, key).output == output


async def test_the_database_file_alone_holds_the_run_its_steps_and_events(tmp_path: Path) -> None:
    doc = workflow(
        echo("a", 1),
        shell("b", "echo hi"),
        echo("m", "{{ item }}", for_each=[1, 2]),
        outputs={"v": "{{ steps.a.output.value }}"},
    )
    seen = await run_then_reopened(tmp_path, doc)
    assert seen.resumed == []
    assert seen.stored.model_dump() == seen.live.model_dump()
    assert {s.key for s in seen.stored.steps} == {"a", "b", "m", "m[0]", "m[1]"}
    assert seen.stored.outputs == {"v": 1}
    assert [e.as_dict() for e in seen.stored_events] == [e.as_dict() for e in seen.live_events]
    assert_event_log(seen.stored_events)


async def test_a_submit_is_stored_without_waiting_for_the_busy_main_writer(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        gate = asyncio.Event()

        def hold_the_writer(cursor: Any) -> None:  # a long transaction of the running runs' writer
            while not gate.is_set():
                time.sleep(0.01)

        busy = asyncio.ensure_future(engine.storage._db.write(hold_the_writer))
        run_id = await engine.submit(workflow(echo("a", 1)))
        assert not busy.done(), "submit waited for the main writer"
        assert [e.type for e in await engine.events(run_id)] == ["run_queued"]  # stored, and nothing more yet
        gate.set()
        await busy
        assert (await engine.wait(run_id)).status == "succeeded"


async def test_a_runs_later_transitions_are_stored_only_after_its_queued_state(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        engine.runs._interval = 3600  # keep the journal unprojected, to read the order it was written in
        run_ids = await asyncio.gather(*(engine.submit(workflow(echo("a", i))) for i in range(20)))
        for run_id in run_ids:
            await engine.wait(run_id)
        journal_order = engine.storage._db._con.execute(
            "SELECT run_id, list((row->>'seq')::INTEGER ORDER BY id) FROM run_journal WHERE kind = 'event'"
            " GROUP BY run_id"
        ).fetchall()
        assert sorted(run_id for run_id, _ in journal_order) == sorted(run_ids)
        for run_id, seqs in journal_order:
            assert seqs == [1, 2, 3, 4, 5], f"run {run_id}: events journaled out of order {seqs}"
