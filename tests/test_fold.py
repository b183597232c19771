"""The one event fold (``workflow/fold.py``): the golden files in ``tests/fixtures/folds/``
(also read by the sidebar reducer's jest test, ``labextension/src/__tests__/fold.spec.ts``),
its purity, and agreement with the run document the engine itself stores."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.workflow.fold import fold, initial

FOLDS = Path(__file__).parent / "fixtures" / "folds"
CASES = sorted(FOLDS.glob("*.json"))
pytestmark = pytest.mark.timeout(60)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_the_fold_gives_each_golden_state_after_each_event(path: Path) -> None:
    case = load(path)
    state = initial(case["initial"])
    for event, after in zip(case["events"], case["after"], strict=True):
        state = fold(state, event)
        run = state["run"]
        assert (run["status"], {s["key"]: s["status"] for s in run["steps"]}, [a["step_key"] for a in run["approvals"]]) == (
            after["status"], after["steps"], after["approvals"],
        ), f"after seq {event['seq']} ({event['type']})"  # fmt: skip
        if "budget" in after:  # a run with a budget: what it spent and holds, event by event
            assert run.get("budget") == after["budget"], f"budget after seq {event['seq']} ({event['type']})"
    assert state == case["expected"]


def test_the_golden_files_cover_every_case_the_views_disagreed_on() -> None:
    names = {p.stem for p in CASES}
    assert {"sequential", "parallel", "for_each", "skips", "retries", "continue_on_error", "approval_granted",
            "approval_rejected", "cancel_mid_step", "resumed", "llm_tokens", "budget"} <= names  # fmt: skip
    kinds = {e["type"] for p in CASES for e in load(p)["events"]}
    assert {"step_retrying", "step_skipped", "llm_token", "approval_granted", "approval_rejected",
            "workflow_cancelled", "workflow_failed"} <= kinds  # fmt: skip


def test_the_fold_changes_neither_its_state_nor_its_event_and_ignores_a_replay() -> None:
    case = load(FOLDS / "approval_granted.json")
    state = initial(case["initial"])
    for event in case["events"]:
        before, seen = copy.deepcopy(state), copy.deepcopy(event)
        after = fold(state, event)
        assert (state, event) == (before, seen)
        assert fold(after, event) is after
        state = after


def test_an_approved_step_is_running_from_the_decision_on() -> None:
    case = load(FOLDS / "approval_granted.json")
    state = initial(case["initial"])
    for event in case["events"]:
        state = fold(state, event)
        if event["type"] == "approval_granted":
            break
    assert state["run"]["status"] == "running"
    assert [(s["key"], s["status"]) for s in state["run"]["steps"]] == [("plan", "succeeded"), ("write", "running")]
    assert state["decisions"]["write"] == {"decision": "approved", "by": "ada", "comment": None}


WORKFLOW = {
    "name": "fold check",
    "steps": [
        {"id": "first", "task": "echo", "with": {"value": 1}},
        {"parallel": [
            {"id": "a", "task": "shell", "with": {"command": "echo a"}},
            {"id": "skipped", "task": "echo", "if": "{{ false }}", "with": {"value": 0}},
            {"id": "bad", "task": "shell", "continue_on_error": True, "with": {"command": "exit 3"}},
        ]},
        {"id": "each", "task": "echo", "for_each": "{{ [1, 2, 3] }}", "if": "{{ item != 2 }}",
         "with": {"value": "{{ item }}"}},
        {"id": "gate", "task": "echo", "approval": {"message": "go?"}, "with": {"value": "gated"}},
        {"id": "flaky", "task": "shell", "retry": {"max_attempts": 3, "backoff_s": 0.01},
         "with": {"command": "n=$(cat c 2>/dev/null || echo 0); echo $((n+1)) > c; [ $n -ge 1 ]"}},
    ],
    "outputs": {"each": "{{ steps.each.output }}"},
}  # fmt: skip


async def test_the_fold_of_a_real_runs_events_is_the_document_the_engine_stored(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        run_id = await engine.submit(WORKFLOW)
        async for event in engine.subscribe(run_id):
            if event.type == "approval_requested":
                await engine.approve(run_id, "gate", by="ada")
            if event.terminal:
                break
        stored = (await asyncio.wait_for(engine.wait(run_id), 20)).model_dump(mode="json")
        events = [e.as_dict() for e in await engine.events(run_id)]
    first = copy.deepcopy(stored)
    state = initial({**first, "last_seq": 0, "steps": [], "approvals": [], "status": "queued"})
    for event in events:
        state = fold(state, event)
    folded = state["run"]

    def by_key(run: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
        return {s["key"]: (s["status"], s["attempt"], s["item_index"], s["output"], s["error"]) for s in run["steps"]}

    assert by_key(folded) == by_key(stored)
    assert (folded["status"], folded["outputs"], folded["error"], folded["usage"], folded["last_seq"]) == (
        stored["status"], stored["outputs"], stored["error"], stored["usage"], stored["last_seq"],
    )  # fmt: skip
    assert folded["approvals"] == stored["approvals"] == []
