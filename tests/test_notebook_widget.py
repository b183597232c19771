"""The live run widget through its model state (rows, statuses, text, buttons) as a real
embedded engine's events arrive: success, failure, cancel, streamed text, catching up after
a reconnect, and a 1,000-step run whose update rate stays bounded."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from notebook_support import ECHO3, Shell

from clarion_jupyter import Agent
from clarion_jupyter.core.protocol import RunStatus, StepStatus
from clarion_jupyter.notebook.run import Run
from clarion_jupyter.notebook.widgets import UPDATE_INTERVAL_S, AgentWidget, RunWidget, Throttle

pytestmark = pytest.mark.timeout(90)

FAILING = """
id: failing
name: Failing
steps:
  - {id: fine, task: echo, with: {value: ok}}
  - {id: broken, task: shell, with: {command: "echo oops >&2; exit 4"}}
  - {id: never, task: echo, with: {value: no}}
"""
SLOW = """
id: slow
name: Slow
steps:
  - {id: first, task: echo, with: {value: 1}}
  - {id: nap, task: shell, with: {command: "sleep 30"}}
"""
GROUPS = """
id: groups
name: Groups
steps:
  - {id: start, task: echo, with: {value: 0}}
  - parallel:
      - {id: left, task: echo, with: {value: 1}}
      - {id: right, task: echo, with: {value: 2}}
  - {id: each, task: echo, for_each: "{{ [10, 20, 30] }}", with: {value: "{{ item }}"}}
"""
REPLY = "Durable runs, stored in DuckDB, streamed to the notebook as they happen."


def statuses(widget: RunWidget) -> dict[str, str]:
    """Step key -> status, as the rendered rows show them."""
    return dict(re.findall(r'data-key="([^"]+)" data-status="(\w+)"', widget.steps.value))


def header_status(widget: RunWidget) -> str:
    return re.search(r'clarion-run-header" data-status="(\w+)"', widget.header.value).group(1)


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_rows_start_pending_in_document_order_and_end_succeeded(shell: Shell) -> None:
    shell.cell("--no-wait", ECHO3)
    widget = shell.last.widget
    assert list(statuses(widget)) == ["one", "two", "three"]
    shell.last.wait(timeout=20)
    wait_for(lambda: header_status(widget) == "succeeded")
    assert statuses(widget) == {"one": "succeeded", "two": "succeeded", "three": "succeeded"}
    assert "yo" not in widget.result.value and "hi!!" in widget.result.value
    assert widget.cancel_button.disabled


def test_parallel_groups_and_for_each_items_are_shown_as_such(shell: Shell) -> None:
    shell.cell("", GROUPS)
    widget = shell.last.widget
    html = widget.steps.value
    assert html.count(">parallel<") == 1
    assert re.search(r'data-key="left"[^>]*border-left', html) and re.search(r'data-key="right"[^>]*border-left', html)
    assert "3/3 items" in html
    assert {k: v for k, v in statuses(widget).items() if k.startswith("each[")} == {
        "each[0]": "succeeded", "each[1]": "succeeded", "each[2]": "succeeded",
    }  # fmt: skip


def test_a_saved_workflow_run_by_id_shows_its_parallel_group_and_every_task_name(shell: Shell) -> None:
    shell.cell("--save", GROUPS)
    shell.line("run groups")
    run = shell.last
    html = run.widget.steps.value
    assert html.count(">parallel<") == 1
    assert re.search(r'data-key="left" data-status="succeeded" data-group="1"', html)
    tasks = dict(re.findall(r'data-key="([^"]+)".*?data-role="task"[^>]*>(\w+)<', html))
    assert tasks == {"start": "echo", "left": "echo", "right": "echo", "each": "echo",
                     "each[0]": "echo", "each[1]": "echo", "each[2]": "echo"}  # fmt: skip


def durations(widget: RunWidget) -> dict[str, str]:
    return dict(re.findall(r'data-key="([^"]+)".*?data-role="duration"[^>]*>· ([^<]+)<', widget.steps.value))


def test_a_running_steps_duration_ticks_and_every_time_stops_when_the_run_ends(shell: Shell) -> None:
    shell.cell("--no-wait", SLOW)
    run = shell.last
    wait_for(lambda: run.state.steps["nap"].status == StepStatus.running)
    wait_for(lambda: "nap" in durations(run.widget))
    first = durations(run.widget)["nap"]
    wait_for(lambda: durations(run.widget)["nap"] != first, timeout=5)
    run.cancel()
    run.wait(timeout=20)
    ended = (run.widget.header.value, run.widget.steps.value)
    time.sleep(2.2)
    assert (run.widget.header.value, run.widget.steps.value) == ended


def test_a_failure_shows_the_failed_step_its_error_and_the_run_error(shell: Shell) -> None:
    shell.cell("", FAILING)
    widget = shell.last.widget
    wait_for(lambda: header_status(widget) == "failed")
    rows = statuses(widget)
    assert rows["fine"] == "succeeded" and rows["broken"] == "failed" and rows["never"] != "succeeded"
    assert "oops" in widget.steps.value or "exit" in widget.steps.value
    assert "broken" in widget.result.value


def test_the_cancel_button_cancels_the_run(shell: Shell) -> None:
    shell.cell("--no-wait", SLOW)
    run = shell.last
    widget = run.widget
    wait_for(lambda: statuses(widget).get("nap") == "running")
    widget.cancel_button.click()
    assert run.wait(timeout=20).status == RunStatus.cancelled
    wait_for(lambda: header_status(widget) == "cancelled")
    assert statuses(widget)["nap"] == "cancelled"
    assert widget.cancel_button.disabled


def _streaming_agent(shell: Shell) -> None:
    clarion = shell.magics.session(local=True).clarion()
    agent = Agent(id="streamer", name="Streamer", model="openai/gpt-4o-mini", parameters={"mock_response": REPLY})
    shell.magics.loop.run(clarion.create_agent(agent))


STREAMED = """
id: streamed
name: Streamed
steps:
  - {id: ask, task: llm_call, with: {agent: streamer, prompt: "Say it", stream: true}}
"""


def test_streamed_llm_text_tokens_and_cost_appear_on_the_row(shell: Shell) -> None:
    _streaming_agent(shell)
    shell.cell("", STREAMED)
    run = shell.last
    row = run.state.steps["ask"]
    assert row.status == StepStatus.succeeded
    assert row.text == REPLY
    assert row.tokens and row.tokens > 0 and row.cost_usd is not None
    assert "tokens" in run.widget.steps.value and "$" in run.widget.steps.value


def test_a_step_the_cache_answered_is_marked_cached_on_its_row(shell: Shell) -> None:
    """``%%clarion --cache`` run again: the row of the replayed call says so, the first call's does not."""
    _streaming_agent(shell)
    shell.cell("--cache", STREAMED)
    first = shell.last
    shell.cell("--cache", STREAMED)
    again = shell.last
    assert first.state.steps["ask"].output["cached"] is False
    assert 'data-role="cached"' not in first.widget.steps.value
    row = again.state.steps["ask"]
    assert row.output["cached"] is True and row.cost_usd == 0 and row.text == REPLY
    assert 'data-role="cached"' in again.widget.steps.value
    (line,) = [line for line in again.state.to_text().splitlines() if " ask " in line]
    assert line.endswith(" cached")


def test_a_view_that_reconnects_catches_up_from_since_without_counting_twice(shell: Shell) -> None:
    _streaming_agent(shell)
    shell.cell("", STREAMED)
    finished = shell.last
    events = shell.magics.loop.run(finished.session.clarion().events(finished.run_id))
    tokens = [e for e in events if e.type == "llm_token"]
    assert tokens, "the run streamed no tokens"
    # A view that saw the events up to the first token, then lost its connection:
    later = Run(finished.session, finished.run_id)
    for event in events[: events.index(tokens[0]) + 1]:
        later.state.apply(event)
    assert later.state.status == RunStatus.running
    later.wait(timeout=20)  # follows again from the last seq it applied
    assert later.state.status == RunStatus.succeeded
    assert later.state.steps["ask"].text == REPLY
    assert later.state.last_seq == events[-1].seq


def test_show_of_a_run_already_under_way_follows_it_live(shell: Shell) -> None:
    shell.cell("--no-wait", SLOW)
    run_id = shell.last.run_id
    wait_for(lambda: shell.last.state.steps["nap"].status == StepStatus.running)
    shell.line(f"show {run_id}")
    shown = shell.last
    assert shown.run_id == run_id
    widget = shown.widget
    wait_for(lambda: statuses(widget).get("nap") == "running")
    shown.cancel()
    wait_for(lambda: header_status(widget) == "cancelled")


def test_a_thousand_step_run_updates_the_browser_at_most_twenty_times_a_second(shell: Shell) -> None:
    many = 'id: many\nname: Many\nsteps:\n  - {id: item, task: echo, for_each: "{{ range(1000) | list }}", with: {value: "{{ item }}"}}\n'
    started = time.monotonic()
    shell.cell("", many)
    elapsed = time.monotonic() - started
    run = shell.last
    widget = run.widget
    assert run.status == RunStatus.succeeded
    assert "1000/1000 items" in widget.steps.value
    assert widget.updates <= elapsed / UPDATE_INTERVAL_S + 3, (widget.updates, elapsed)
    assert len(widget.steps.value) < 200_000  # items beyond the row limit are counted, not rendered
    assert "… and 800 more (800 succeeded)" in widget.steps.value


def test_the_throttle_coalesces_a_burst_into_a_few_flushes() -> None:
    flushes: list[float] = []
    started = time.monotonic()

    async def burst() -> None:
        throttle = Throttle(asyncio.get_running_loop(), lambda: flushes.append(time.monotonic()), 0.05)
        for _ in range(500):
            throttle.poke()
            await asyncio.sleep(0.0005)
        await asyncio.sleep(0.1)

    asyncio.run(burst())
    assert 2 <= len(flushes) <= (time.monotonic() - started) / 0.05 + 1
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(flushes))


APPROVE = """
id: gated
name: Gated write
steps:
  - id: draft
    task: echo
    with: {value: "hello"}
  - id: write
    task: file_write
    approval: {message: "Write the greeting?"}
    with: {path: greeting.txt, content: "{{ steps.draft.output.value }}\\n"}
"""


def decide_when_waiting(shell: Shell, decide: Callable[[Run], None]) -> threading.Thread:
    """Takes a decision from another thread once the cell's run waits (as a person would,
    while the cell blocks)."""

    def act() -> None:
        wait_for(lambda: isinstance(shell.ip.user_ns.get("_"), Run) and shell.last.state.status == RunStatus.waiting)
        wait_for(lambda: shell.last.widget.approvals.children)
        decide(shell.last)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_a_blocking_cell_waits_through_an_approval_taken_in_its_widget_and_goes_on_to_the_end(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    clicker = decide_when_waiting(shell, lambda run: run.widget.approvals.children[0].children[2].children[0].click())
    shell.cell("", APPROVE)
    clicker.join(5)
    run = shell.last
    assert run.state.status == RunStatus.succeeded
    assert "waits for your decision on write" in capsys.readouterr().err
    assert (Path.cwd() / "greeting.txt").read_text().strip() == "hello"
    assert statuses(run.widget)["write"] == "succeeded" and not run.widget.approvals.children


def test_a_blocking_cell_goes_on_after_a_decision_taken_elsewhere(shell: Shell) -> None:
    elsewhere = decide_when_waiting(shell, lambda run: Run(run.session, run.run_id).reject("write", comment="no"))
    shell.cell("", APPROVE)
    elsewhere.join(5)
    assert shell.last.state.status == RunStatus.failed
    assert not (Path.cwd() / "greeting.txt").exists()


def test_a_waiting_step_shows_its_message_diff_and_approve_reject_buttons(shell: Shell) -> None:
    shell.cell("--no-wait", APPROVE)
    run = shell.last.wait(timeout=20, until="decision")
    assert run.state.status == RunStatus.waiting
    [box] = run.widget.approvals.children
    assert box.step_key == "write"
    message, preview, buttons = box.children
    assert "Write the greeting?" in message.value
    assert "create" in preview.value and "greeting.txt" in preview.value and "+hello" in preview.value
    approve, reject = buttons.children
    assert approve.description == "Approve write" and reject.description == "Reject"
    approve.click()
    assert run.wait(timeout=20).status == RunStatus.succeeded
    wait_for(lambda: not run.widget.approvals.children)


def test_rejecting_from_the_widget_fails_the_step_with_the_reason(shell: Shell) -> None:
    shell.cell("--no-wait", APPROVE)
    run = shell.last.wait(timeout=20, until="decision")
    run.widget.approvals.children[0].children[2].children[1].click()
    assert run.wait(timeout=20).status == RunStatus.failed
    assert not (Path.cwd() / "greeting.txt").exists()
    wait_for(lambda: statuses(run.widget)["write"] == "failed")
    assert "rejected" in run.widget.steps.value


def test_approve_and_reject_through_the_run_handle_and_the_line_magic(shell: Shell) -> None:
    shell.cell("--no-wait", APPROVE)
    first = shell.last.wait(timeout=20, until="decision")
    first.reject("write", comment="not today")
    assert first.wait(timeout=20).status == RunStatus.failed
    shell.cell("--no-wait", APPROVE)
    second = shell.last.wait(timeout=20, until="decision")
    shell.line(f"approve {second.run_id} write --comment fine")
    assert second.wait(timeout=20).status == RunStatus.succeeded
    assert "approved: fine" in second.widget.steps.value or "approved" in second.widget.steps.value
    assert "not waiting" in usage_error_text(shell.line(f"approve {second.run_id} write"))


def usage_error_text(result: object) -> str:
    return str(result.error_in_exec)  # type: ignore[attr-defined]


CODER_REPLY = {
    "summary": "Adds a greeting.",
    "file_changes": [{"action": "create", "path": "hello.py", "new_content": "print('hello')\n"}],
}


def _coder(shell: Shell) -> None:
    reply = json.dumps(CODER_REPLY)
    shell.cell("save-agent", f"id: coder\nname: Coder\nmodel: openai/gpt-4o-mini\nparameters: {{mock_response: {json.dumps(reply)}}}\n"
               "output_schema: {type: object, properties: {summary: {type: string}, file_changes: {type: array}}}")  # fmt: skip


def test_an_agent_cell_renders_the_reply_and_its_diff_with_apply_and_discard(shell: Shell) -> None:
    _coder(shell)
    shell.cell("agent coder --no-wait", "Add a greeting")
    run = shell.last.wait(timeout=20, until="decision")
    widget = run.widget
    assert isinstance(widget, AgentWidget)
    assert run.state.status == RunStatus.waiting
    [reply] = widget.reply_tree.outputs
    assert reply["data"]["application/json"] == CODER_REPLY
    assert (
        "hello.py" in widget.changes.value
        and "create" in widget.changes.value
        and "+print(&#x27;hello&#x27;)" in widget.changes.value
    )
    assert widget.apply_button.layout.display is None and widget.discard_button.layout.display is None
    assert not widget.approvals.children  # Apply / Discard stand for the apply step's approval
    widget.apply_button.click()
    assert run.wait(timeout=20).status == RunStatus.succeeded
    assert (Path.cwd() / "hello.py").read_text() == "print('hello')\n"
    wait_for(lambda: "applied" in widget.changes.value)
    assert widget.apply_button.layout.display == "none"


def test_discard_rejects_the_apply_step_and_writes_nothing(shell: Shell) -> None:
    _coder(shell)
    shell.cell("agent coder --no-wait", "Add a greeting")
    run = shell.last.wait(timeout=20, until="decision")
    run.widget.discard_button.click()
    run.wait(timeout=20)
    assert not (Path.cwd() / "hello.py").exists()
    wait_for(lambda: "discarded" in run.widget.changes.value)


def test_an_agent_reply_without_json_is_rendered_as_sanitised_markdown(shell: Shell) -> None:
    shell.cell(
        "save-agent",
        'id: writer\nname: Writer\nmodel: openai/gpt-4o-mini\nparameters: {mock_response: "# Title\\n\\nSome *text*"}',
    )
    shell.cell("agent writer --apply never", "Write something")
    run = shell.last
    assert run.state.status == RunStatus.succeeded
    assert "<h1>Title</h1>" in run.widget.reply.value and "<em>text</em>" in run.widget.reply.value
    assert not run.widget.reply_tree.outputs
    assert "<h1>Title</h1>" in run._repr_mimebundle_()["text/html"]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "img", "iframe", "svg", "object", "embed"):
            self.found.append(tag)
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"{tag} {name}={value}")


def dangerous_markup(html: str) -> list[str]:
    """Elements and attributes of ``html`` that could run script (the parse a browser makes)."""
    parser = _Elements()
    parser.feed(html)
    return parser.found


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)><details open ontoggle=alert(3)><a href='javascript:alert(4)'>x</a>"


def test_payloads_in_outputs_errors_and_replies_stay_text_in_every_html_the_views_build(shell: Shell) -> None:
    quoted = json.dumps(HOSTILE)
    shell.cell("", f"name: {json.dumps('Hostile ' + HOSTILE[:60])}\nsteps:\n"
               f"  - {{id: out, task: echo, with: {{value: {quoted}}}}}\n"
               f"  - {{id: bad, task: shell, continue_on_error: true, with: {{command: {json.dumps(f'echo {quoted} >&2; exit 1')}}}}}\n")  # fmt: skip
    workflow = shell.last
    shell.cell("save-agent", f"id: writer\nname: Writer\nmodel: openai/gpt-4o-mini\nparameters: {{mock_response: {json.dumps(HOSTILE + ' [y](javascript:alert(5))')}}}")  # fmt: skip
    shell.cell("agent writer --apply never", "Write something")
    agent = shell.last
    for run in (workflow, agent):
        assert run.state.status == RunStatus.succeeded
        run.refresh()
        widget = run.widget
        htmls = [run._repr_mimebundle_()["text/html"], run._repr_html_(), widget.header.value, widget.steps.value,
                 widget.result.value, getattr(widget, "reply", widget.result).value]  # fmt: skip
        for html in htmls:
            assert not dangerous_markup(html), html
    assert "&lt;img src=x onerror=alert(2)&gt;" in workflow.widget.steps.value


def test_the_run_handle_reads_a_followed_runs_state_without_fetching_the_document(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell.cell("--no-wait", SLOW)
    run = shell.last
    wait_for(lambda: run.state.steps["nap"].status == StepStatus.running)
    clarion = run.session.clarion()
    fetched: list[str] = []
    get_run = clarion.get_run

    async def counted(run_id: str) -> object:
        fetched.append(run_id)
        return await get_run(run_id)

    monkeypatch.setattr(clarion, "get_run", counted)
    seen = [(run.status, run.outputs, [s.key for s in run.steps]) for _ in range(20)]
    assert fetched == []
    assert seen[-1] == (RunStatus.running, None, ["first", "nap"])
    run.cancel()
    assert run.wait(timeout=20).status == RunStatus.cancelled
