"""The ``%%clarion`` and ``%clarion`` magics in a real IPython shell, on the embedded engine
(a real DuckDB file): loading, argument parsing, every error message, the Run handle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError
from notebook_support import ECHO3, Shell, shell_at

from clarion_jupyter.core.protocol import RunStatus, StepStatus
from clarion_jupyter.notebook.magic import HELP
from clarion_jupyter.notebook.run import Run

pytestmark = pytest.mark.timeout(60)

SLEEP = """
id: sleeper
name: Sleeper
steps:
  - {id: nap, task: shell, with: {command: "sleep 30"}}
"""
TYPED = """
id: typed
name: Typed inputs
inputs:
  n: {type: integer}
  flags: {type: array}
  enabled: {type: boolean}
  label: {type: string}
steps:
  - {id: show, task: echo, with: {value: {n: "{{ inputs.n }}", flags: "{{ inputs.flags }}", enabled: "{{ inputs.enabled }}", label: "{{ inputs.label }}"}}}
outputs:
  got: "{{ steps.show.output.value }}"
"""


def usage_error(result: object) -> str:
    error = result.error_in_exec  # type: ignore[attr-defined]
    assert isinstance(error, UsageError), f"expected a UsageError, got {error!r}"
    return str(error)


# -- loading and help ------------------------------------------------------------------


def test_load_ext_registers_the_line_and_cell_magic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with shell_at(tmp_path, monkeypatch) as shell:
        shell.ip.run_line_magic("load_ext", "clarion_jupyter")
        magics = shell.ip.magics_manager.magics
        assert "clarion" in magics["line"] and "clarion" in magics["cell"]


def test_help_and_the_question_mark_show_usage(shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.line("help")
    assert "%%clarion agent AGENT_ID" in capsys.readouterr().out
    assert shell.ip.find_line_magic("clarion").__doc__ == HELP


# -- workflow cells -------------------------------------------------------------------


def test_a_workflow_cell_runs_to_the_end_and_leaves_a_run_in_underscore(shell: Shell) -> None:
    result = shell.cell("--input word=yo --name first", ECHO3)
    assert result.error_in_exec is None
    run = shell.last
    assert isinstance(run, Run) and shell.ip.user_ns["first"] is run
    assert run.status == RunStatus.succeeded
    assert run.outputs == {"said": "yo!!"}
    assert [s.status for s in run.steps] == [StepStatus.succeeded] * 3
    assert run.workflow_id == "echo3"


def test_input_values_are_yaml_scalars(shell: Shell) -> None:
    shell.cell("--input n=3 --input flags=[a,b] --input enabled=true --input label=hello", TYPED)
    assert shell.last.outputs == {"got": {"n": 3, "flags": ["a", "b"], "enabled": True, "label": "hello"}}


def test_dollar_name_and_braces_take_python_values_from_the_namespace(shell: Shell) -> None:
    shell.ip.user_ns.update(count=7, items=["x", "y"], who="ada lovelace")
    shell.cell("--input n={count * 2} --input flags=$items --input enabled=false --input label=$who", TYPED)
    assert shell.last.outputs == {"got": {"n": 14, "flags": ["x", "y"], "enabled": False, "label": "ada lovelace"}}


def test_no_wait_returns_while_the_run_goes_on(shell: Shell) -> None:
    shell.cell("--no-wait", SLEEP)
    run = shell.last
    assert not run.state.status.terminal
    run.cancel()
    assert run.wait(timeout=20).status == RunStatus.cancelled


def test_save_stores_the_workflow_for_clarion_run(shell: Shell) -> None:
    shell.cell("--save", ECHO3)
    first = shell.last
    shell.line("run echo3 --input word=again")
    second = shell.last
    assert second.run_id != first.run_id
    assert second.outputs == {"said": "again!!"}


def test_an_invalid_workflow_lists_every_problem_with_its_step_and_field(shell: Shell) -> None:
    message = usage_error(
        shell.cell(
            "",
            "name: Broken\nsteps:\n  - {id: a, task: nosuchtask}\n  - {id: a, task: echo, with: {value: 1}}\n"
            "  - {id: c, task: echo, needs: [ghost], with: {value: 1}}\n",
        )
    )
    assert "invalid workflow: 3 problems" in message
    assert "step 'a' field 'task'" in message and "nosuchtask" in message
    assert "duplicate" in message
    assert "ghost" in message
    assert "Traceback" not in message


def test_a_bad_template_names_the_step_and_field(shell: Shell) -> None:
    message = usage_error(shell.cell("", "name: T\nsteps:\n  - {id: a, task: echo, with: {value: '{{ inputz.x }}'}}\n"))
    assert "step 'a'" in message and "inputz" in message


def test_a_missing_required_input_is_a_usage_error(shell: Shell) -> None:
    message = usage_error(shell.cell("", TYPED))
    assert "n" in message and "required" in message.lower()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("--input word", "--input 'word': write it as name=value"),
        ("--input word=$nobody", "no variable 'nobody'"),
        ("--input word={1/0}", "ZeroDivisionError"),
        ("--frobnicate", "unrecognized arguments: --frobnicate"),
        ("--name 3x", "'3x' is not a Python variable name"),
        ("--input 'word=unclosed", "cannot parse the arguments"),
    ],
)
def test_workflow_cell_argument_errors(shell: Shell, line: str, expected: str) -> None:
    assert expected in usage_error(shell.cell(line, ECHO3))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("frob", "unknown command 'frob'"),
        ("show", "the following arguments are required: run_id"),
        ("approve onlyrun", "the following arguments are required: step"),
        ("runs --status sleeping", "invalid choice: 'sleeping'"),
        ("runs --limit many", "invalid int value: 'many'"),
        ("sql", "give a query"),
        ("show nosuchrun", "run 'nosuchrun' not found"),
        ("cancel nosuchrun", "run 'nosuchrun' not found"),
        ("run nosuchworkflow", "workflow 'nosuchworkflow' not found"),
    ],
)
def test_line_magic_errors(shell: Shell, line: str, expected: str) -> None:
    assert expected in usage_error(shell.line(line))


def test_agent_cell_argument_errors(shell: Shell) -> None:
    assert "invalid choice: 'sometimes'" in usage_error(shell.cell("agent helper --apply sometimes", "hi"))
    assert "the cell is the prompt, and it is empty" in usage_error(shell.cell("agent helper", "   "))
    assert "required: agent_id" in usage_error(shell.cell("agent", "hi"))


# -- line magics ----------------------------------------------------------------------


def test_runs_lists_recent_runs_newest_first(shell: Shell) -> None:
    shell.cell("", ECHO3)
    shell.cell("--input word=two", ECHO3)
    newest = shell.last.run_id
    frame = shell.line("runs").result
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["status"]) == ["succeeded", "succeeded"]
    assert frame["run_id"].iloc[0] == newest


def test_show_displays_the_widget_of_a_finished_run(shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.cell("", ECHO3)
    run_id = shell.last.run_id
    capsys.readouterr()
    shell.line(f"show {run_id}")
    shown = capsys.readouterr().out
    assert run_id in shown and "succeeded" in shown and "three" in shown


def test_cancel_stops_a_running_run(shell: Shell) -> None:
    shell.cell("--no-wait", SLEEP)
    run = shell.last
    shell.line(f"cancel {run.run_id}")
    assert run.wait(timeout=20).status == RunStatus.cancelled


def test_sql_line_and_cell_answer_data_frames(shell: Shell) -> None:
    shell.cell("", ECHO3)
    frame = shell.line("sql SELECT workflow_id, status FROM runs").result
    assert frame.to_dict("records") == [{"workflow_id": "echo3", "status": "succeeded"}]
    cell = shell.cell("sql", "SELECT step_key, task FROM steps\nORDER BY step_key").result
    assert list(cell["step_key"]) == ["one", "three", "two"] and set(cell["task"]) == {"echo"}


def test_sql_refusals_are_usage_errors(shell: Shell) -> None:
    assert "read_csv" in usage_error(shell.line("sql SELECT * FROM read_csv('/etc/passwd')"))


def test_workflows_lists_saved_workflows(shell: Shell) -> None:
    shell.cell("--save", ECHO3)
    frame = shell.line("workflows").result
    assert "echo3" in list(frame["id"])


# -- the Run handle ----------------------------------------------------------------------


def test_run_handle_events_and_dataframe(shell: Shell) -> None:
    shell.cell("", ECHO3)
    run = shell.last
    types = [e["type"] for e in run.events()]
    assert types[0] == "run_queued" and types[-1] == "workflow_succeeded"
    frame = run.to_dataframe()
    assert list(frame["key"]) == ["one", "two", "three"] and set(frame["status"]) == {"succeeded"}


def test_wait_async_awaits_without_blocking_the_callers_loop(shell: Shell) -> None:
    shell.cell("--no-wait", ECHO3.replace("echo3", "later"))
    run = shell.last

    async def wait_and_tick() -> list[str]:
        ticks: list[str] = []

        async def tick() -> None:
            ticks.append("tick")

        await asyncio.gather(run.wait_async(), tick())
        return ticks

    assert asyncio.run(wait_and_tick()) == ["tick"]
    assert run.state.status == RunStatus.succeeded


def test_the_run_renders_as_html_and_text_where_widgets_cannot(shell: Shell) -> None:
    shell.cell("", ECHO3)
    run = shell.last
    bundle = run._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert 'data-status="succeeded"' in bundle["text/html"]
    assert "✓ three" in bundle["text/plain"]
    assert "succeeded" in run._repr_html_()


def test_local_says_which_engine_it_uses(shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.cell("--local", ECHO3)
    assert "an embedded engine in this kernel" in capsys.readouterr().out
    assert "embedded engine" in shell.last.widget.header.value


def test_a_yaml_error_names_the_line_the_editor_shows(shell: Shell) -> None:
    """The editor counts the %%clarion line as line 1: the problem's line is the editor's."""
    message = usage_error(shell.cell("", "name: Broken\nsteps:\n  - id: a\n    task: [unclosed\n"))
    assert "line 6, column 1" in message  # the cell's fifth line, its end: the editor's sixth
