"""Approvals over REST, on a real server: a step with ``approval:`` shows what it would do,
waits for a person's decision without holding a worker, and acts only once approved."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api, create_workflow, start_run, wait_event, wait_run

from clarion_jupyter.testing.server import JupyterServerProcess

CHANGES = [
    {"action": "modify", "path": "notes.md", "new_content": "# Notes\nnew line\n"},
    {"action": "create", "path": "src/hello.txt", "new_content": "hi\n"},
]


def review_workflow(approval: Any = True, changes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "review",
        "name": "Review changes",
        "steps": [
            {"id": "apply", "task": "file_write", "approval": approval, "with": {"changes": changes or CHANGES}},
            {"id": "after", "task": "echo", "needs": ["apply"], "with": {"value": "done"}},
        ],
    }


@pytest.fixture
def workspace(jp_root_dir: Path) -> Path:
    (jp_root_dir / "notes.md").write_text("# Notes\nold line\n")
    return jp_root_dir


async def waiting_run(api: Api, doc: dict[str, Any]) -> str:
    run_id = await start_run(api, await create_workflow(api, doc))
    await wait_event(api, run_id, "approval_requested")
    return run_id


async def decide(api: Api, run_id: str, step: str, decision: str, comment: str | None = None) -> Any:
    body = {"decision": decision, **({"comment": comment} if comment else {})}
    return await api("POST", "runs", run_id, "approvals", step, body=body)


async def test_a_step_with_approval_waits_with_the_diff_and_touches_nothing(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow({"message": "Apply the agent's edits?"}))
    run = (await api("GET", "runs", run_id)).body
    assert run["status"] == "waiting"
    (approval,) = run["approvals"]
    assert approval["step_key"] == "apply" and approval["message"] == "Apply the agent's edits?"
    files = {f["path"]: f for f in approval["preview"]["files"]}
    assert files["notes.md"]["action"] == "modify"
    assert "-old line\n+new line\n" in files["notes.md"]["diff"]
    assert files["src/hello.txt"]["action"] == "create"
    assert "--- /dev/null\n+++ b/src/hello.txt\n" in files["src/hello.txt"]["diff"]
    assert {s["key"]: s["status"] for s in run["steps"]} == {"apply": "waiting"}
    assert (workspace / "notes.md").read_text() == "# Notes\nold line\n"
    assert not (workspace / "src").exists()


async def test_approving_applies_the_changes_and_the_run_goes_on(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow())
    reply = await decide(api, run_id, "apply", "approve", "looks right")
    assert reply.status == 200
    assert reply.body["decision"] == "approve" and reply.body["comment"] == "looks right"
    run = await wait_run(api, run_id)
    assert run["status"] == "succeeded" and run["approvals"] == []
    assert (workspace / "notes.md").read_text() == "# Notes\nnew line\n"
    assert (workspace / "src" / "hello.txt").read_text() == "hi\n"
    events = [e for e in (await api("GET", "runs", run_id, "events")).body["events"] if e["step_id"] == "apply"]
    types = [e["type"] for e in events]
    assert types == ["approval_requested", "approval_granted", "step_started", "step_completed"]
    assert events[1]["data"]["comment"] == "looks right" and events[1]["data"]["by"]


async def test_rejecting_writes_nothing_and_fails_the_run(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow())
    assert (await decide(api, run_id, "apply", "reject", "wrong file")).status == 200
    run = await wait_run(api, run_id)
    assert run["status"] == "failed"
    step = next(s for s in run["steps"] if s["key"] == "apply")
    assert step["status"] == "failed" and step["error"]["code"] == "rejected"
    assert "wrong file" in step["error"]["message"]
    assert (workspace / "notes.md").read_text() == "# Notes\nold line\n"
    assert not (workspace / "src").exists()


async def test_on_reject_skip_skips_the_step_and_what_needs_it(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow({"on_reject": "skip"}))
    await decide(api, run_id, "apply", "reject")
    run = await wait_run(api, run_id)
    assert run["status"] == "succeeded"
    assert {s["key"]: s["status"] for s in run["steps"]} == {"apply": "skipped", "after": "skipped"}


async def test_no_decision_within_the_timeout_rejects(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow({"timeout_s": 0.3}))
    run = await wait_run(api, run_id)
    assert run["status"] == "failed"
    events = (await api("GET", "runs", run_id, "events")).body["events"]
    (rejected,) = [e for e in events if e["type"] == "approval_rejected"]
    assert rejected["data"]["by"] == "timeout"
    assert (workspace / "notes.md").read_text() == "# Notes\nold line\n"


async def test_deciding_a_step_that_is_not_waiting_is_a_conflict(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow())
    assert (await decide(api, run_id, "after", "approve")).status == 409
    assert (await decide(api, run_id, "apply", "approve")).status == 200
    again = await decide(api, run_id, "apply", "reject")
    assert again.status == 409 and again.body["error"]["code"] == "conflict"
    assert (await decide(api, "no-such-run", "apply", "approve")).status == 404


async def test_a_decision_must_be_approve_or_reject(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow())
    reply = await decide(api, run_id, "apply", "maybe")
    assert reply.status == 422 and reply.body["error"]["details"][0]["field"] == "decision"


async def test_cancelling_a_waiting_run_ends_it_and_writes_nothing(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow())
    assert (await api("POST", "runs", run_id, "cancel")).status == 202
    run = await wait_run(api, run_id)
    assert run["status"] == "cancelled"
    assert {s["key"]: s["status"] for s in run["steps"]} == {"apply": "cancelled"}
    assert (await decide(api, run_id, "apply", "approve")).status == 409
    assert (workspace / "notes.md").read_text() == "# Notes\nold line\n"


async def test_waiting_runs_are_listed_by_status(api: Api, workspace: Path) -> None:
    run_id = await waiting_run(api, review_workflow())
    listed = (await api("GET", "runs", params={"status": "waiting"})).body["runs"]
    assert [r["run_id"] for r in listed] == [run_id]


@pytest.mark.clarion(workers=1)
async def test_a_waiting_step_holds_no_worker(api: Api, workspace: Path) -> None:
    await waiting_run(api, review_workflow())
    other = await start_run(
        api,
        await create_workflow(api, {"id": "quick", "name": "Quick", "steps": [{"id": "a", "task": "echo"}]}),
    )
    assert (await wait_run(api, other, timeout=5))["status"] == "succeeded"


async def test_a_shell_step_shows_its_command_for_review(api: Api, workspace: Path) -> None:
    doc = {
        "id": "deploy",
        "name": "Deploy",
        "steps": [{"id": "ship", "task": "shell", "approval": True, "with": {"command": "echo shipped > out.txt"}}],
    }
    run_id = await waiting_run(api, doc)
    (approval,) = (await api("GET", "runs", run_id)).body["approvals"]
    assert approval["preview"] == {"kind": "command", "command": "echo shipped > out.txt", "cwd": ".", "env": []}
    assert not (workspace / "out.txt").exists()
    await decide(api, run_id, "ship", "approve")
    assert (await wait_run(api, run_id))["status"] == "succeeded"
    assert (workspace / "out.txt").read_text() == "shipped\n"


async def test_a_change_made_from_stale_content_is_a_conflict_and_writes_nothing(api: Api, workspace: Path) -> None:
    changes = [
        {"action": "create", "path": "new.txt", "new_content": "x\n"},
        {"action": "modify", "path": "notes.md", "new_content": "mine\n", "original_content": "# Notes\nold line\n"},
    ]
    run_id = await waiting_run(api, review_workflow(changes=changes))
    (workspace / "notes.md").write_text("someone else's edit\n")
    await decide(api, run_id, "apply", "approve")
    run = await wait_run(api, run_id)
    step = next(s for s in run["steps"] if s["key"] == "apply")
    assert step["status"] == "failed"
    assert "conflict" in step["error"]["message"] and "notes.md" in step["error"]["message"]
    assert (workspace / "notes.md").read_text() == "someone else's edit\n"
    assert not (workspace / "new.txt").exists()


async def test_each_item_of_a_map_is_approved_on_its_own(api: Api, workspace: Path) -> None:
    doc = {
        "id": "per-file",
        "name": "Per file",
        "steps": [
            {
                "id": "write",
                "task": "file_write",
                "approval": True,
                "for_each": ["a.txt", "b.txt"],
                "with": {"path": "{{ item }}", "content": "file {{ item }}"},
            }
        ],
    }
    run_id = await start_run(api, await create_workflow(api, doc))
    for _ in range(100):
        run = (await api("GET", "runs", run_id)).body
        if len(run["approvals"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(a["step_key"] for a in run["approvals"]) == ["write[0]", "write[1]"]
    await decide(api, run_id, "write[0]", "approve")
    await decide(api, run_id, "write[1]", "reject")
    run = await wait_run(api, run_id)
    assert run["status"] == "failed"
    assert (workspace / "a.txt").read_text() == "file a.txt"
    assert not (workspace / "b.txt").exists()


async def test_a_run_killed_while_waiting_still_waits_with_its_preview_after_the_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "clarion.duckdb"
    first = JupyterServerProcess(tmp_path / "first", db_path).start()
    try:
        await first.wait_ready()
        (first.root / "notes.md").write_text("# Notes\nold line\n")
        await first.request("POST", "workflows", review_workflow())
        run_id = (await first.request("POST", "workflows/review/run", {}))["run_id"]
        for _ in range(200):
            if (await first.request("GET", f"runs/{run_id}"))["status"] == "waiting":
                break
            await asyncio.sleep(0.05)
        preview = (await first.request("GET", f"runs/{run_id}"))["approvals"][0]["preview"]
    finally:
        first.kill()
    second = JupyterServerProcess(tmp_path / "first", db_path).start()  # the same root: the same files
    try:
        await second.wait_ready()
        run = await second.request("GET", f"runs/{run_id}")
        assert run["status"] == "waiting"
        assert run["approvals"][0]["preview"] == preview
        await second.request("POST", f"runs/{run_id}/approvals/apply", {"decision": "approve"})
        for _ in range(200):
            run = await second.request("GET", f"runs/{run_id}")
            if run["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert run["status"] == "succeeded"
        assert (second.root / "notes.md").read_text() == "# Notes\nnew line\n"
        events = (await second.request("GET", f"runs/{run_id}/events"))["events"]
        assert [e["type"] for e in events].count("approval_requested") == 1
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    finally:
        second.kill()


def _ended(run: dict[str, Any]) -> bool:
    return run["status"] in ("succeeded", "failed", "waiting")


async def _decide_then_crash(
    tmp_path: Path, doc: dict[str, Any], decisions: dict[str, str], ran: str
) -> tuple[JupyterServerProcess, str]:
    """Run ``doc``, decide its approvals, SIGKILL the server once ``ran.txt`` holds ``ran``
    (an approved step is running), and start it again on the same database and files."""
    db_path, workdir = tmp_path / "clarion.duckdb", tmp_path / "server"
    first = JupyterServerProcess(workdir, db_path).start()
    try:
        await first.wait_ready()
        await first.request("POST", "workflows", doc)
        run_id = (await first.request("POST", f"workflows/{doc['id']}/run", {}))["run_id"]
        await first.run_until(run_id, lambda run: len(run["approvals"]) == len(decisions))
        for key, decision in decisions.items():
            await first.request("POST", f"runs/{run_id}/approvals/{key}", {"decision": decision})
        marker = first.root / "ran.txt"
        for _ in range(600):
            if marker.exists() and ran in marker.read_text():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"ran.txt never held {ran!r}:\n{first.log_tail()}")
    finally:
        first.kill()
    return JupyterServerProcess(workdir, db_path).start(), run_id


def _shell_step(word: str, **fields: Any) -> dict[str, Any]:
    """A step that notes each run of it in ran.txt, then takes long enough to be cut off."""
    return {"id": "ship", "task": "shell", "with": {"command": f"echo {word} >> ran.txt; sleep 2"}, **fields}


async def test_an_approved_step_cut_off_by_a_crash_runs_again_without_asking(tmp_path: Path) -> None:
    doc = {"id": "ship", "name": "Ship", "steps": [_shell_step("ran", approval=True)]}
    second, run_id = await _decide_then_crash(tmp_path, doc, {"ship": "approve"}, "ran")
    try:
        await second.wait_ready()
        run = await second.run_until(run_id, _ended)
        assert run["status"] == "succeeded" and run["approvals"] == []
        events = [e for e in (await second.request("GET", f"runs/{run_id}/events"))["events"] if e["step_id"] == "ship"]
        assert [e["type"] for e in events].count("approval_requested") == 1
        started = [e["data"] for e in events if e["type"] == "step_started"]
        assert [s["attempt"] for s in started] == [1, 2]
        assert "approval" not in started[0]
        assert started[1]["approval"]["approved"] is True and started[1]["approval"]["by"]
        assert "without asking again" in started[1]["approval"]["message"]
        assert (second.root / "ran.txt").read_text() == "ran\nran\n"  # at least once: the cut-off run, then the new one
    finally:
        second.kill()


async def test_a_rejected_item_stays_rejected_after_a_crash(tmp_path: Path) -> None:
    step = _shell_step("{{ item }}", approval={"on_reject": "skip"}, for_each=["a", "b"])
    doc = {"id": "per-item", "name": "Per item", "steps": [step]}
    second, run_id = await _decide_then_crash(tmp_path, doc, {"ship[0]": "reject", "ship[1]": "approve"}, "b")
    try:
        await second.wait_ready()
        run = await second.run_until(run_id, _ended)
        assert run["status"] == "succeeded" and run["approvals"] == []
        statuses = {s["key"]: s["status"] for s in run["steps"]}
        assert statuses == {"ship": "succeeded", "ship[0]": "skipped", "ship[1]": "succeeded"}
        types = [e["type"] for e in (await second.request("GET", f"runs/{run_id}/events"))["events"]]
        assert types.count("approval_requested") == 2 and types.count("approval_rejected") == 1
        assert (second.root / "ran.txt").read_text() == "b\nb\n"
    finally:
        second.kill()
