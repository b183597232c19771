"""The ``clarion`` command, run as a real process against a DuckDB file in a temporary folder."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clarion_jupyter import Engine
from clarion_jupyter.testing.clarion_v2 import v2_agent, v2_run, write_clarion_db, write_yaml_store
from clarion_jupyter.testing.server import JupyterServerProcess

ROOT = Path(__file__).resolve().parents[1]
AGENT_FIXTURES = Path(__file__).parent / "fixtures" / "agents"
pytestmark = pytest.mark.timeout(120)

GREET = """
    id: greet
    name: Greet
    inputs:
      name: {type: string, default: world}
    steps:
      - id: hello
        task: echo
        with: {value: "hello {{ inputs.name }}"}
      - id: shout
        task: shell
        with: {command: "echo {{ steps.hello.output.value | upper }}"}
    outputs:
      text: "{{ steps.shout.output.stdout | trim }}"
"""


def clarion(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``clarion ARGS --db tmp/x.duckdb --workspace tmp``, in tmp, without colours."""
    return subprocess.run(
        [sys.executable, "-m", "clarion_jupyter.cli", *args, "--db", str(tmp_path / "x.duckdb"), "--workspace", str(tmp_path)],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=timeout, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


async def make_runs(tmp_path: Path, count: int) -> list[str]:
    """Runs created in-process (fast); the CLI then reads the same file."""
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        run_ids = []
        for i in range(count):
            run_id = await engine.submit(textwrap.dedent(GREET), {"name": f"n{i}"})
            await engine.wait(run_id)
            run_ids.append(run_id)
    return run_ids


# -- validate ---------------------------------------------------------------------


def test_validate_accepts_a_valid_workflow(tmp_path: Path) -> None:
    result = clarion(tmp_path, "validate", write(tmp_path, "greet.yaml", GREET))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: workflow 'greet' (2 steps, inputs: name)"


def test_validate_lists_every_problem_with_its_step_and_exits_one(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", """
        name: Broken
        steps:
          - {id: a, task: no_such_task}
          - {id: b, task: echo, needs: [ghost], with: {value: 1}}
          - {id: c, task: echo, with: {value: "{{ steps.zzz.output }}"}}
          - {id: c, task: echo, with: {value: 2}}
    """)  # fmt: skip
    result = clarion(tmp_path, "validate", bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == "error: invalid workflow:"
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    expected = [
        ("step 'a' field 'task'", "unknown task type 'no_such_task'"),
        ("step 'b' field 'needs'", "unknown step 'ghost'"),
        ("step 'c' field 'with'", "unknown step 'zzz'"),
        ("step 'c' field 'id'", "duplicate step id 'c'"),
    ]
    for where, what in expected:
        assert any(where in p and what in p for p in problems), f"{where}: {what} not in {problems}"
    assert len(problems) == len(expected)


# -- run ----------------------------------------------------------------------------


def test_run_prints_a_line_per_step_and_exits_zero_on_success(tmp_path: Path) -> None:
    result = clarion(tmp_path, "run", write(tmp_path, "greet.yaml", GREET), "--input", "name=ada")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert re.fullmatch(r"run \w+: Greet", out[0])
    for step_id in ("hello", "shout"):
        assert any(re.search(rf"\b{step_id}\s+succeeded\s+[\d.]+ ms", line) for line in out), result.stdout
    assert re.search(r"^run \w+ succeeded in [\d.]+ s$", result.stdout, re.MULTILINE)
    assert 'outputs: {"text": "HELLO ADA"}' in result.stdout


def test_run_exits_one_when_the_workflow_fails(tmp_path: Path) -> None:
    failing = write(tmp_path, "fail.yaml", """
        name: Fails
        steps:
          - {id: ok, task: echo, with: {value: 1}}
          - {id: boom, task: shell, with: {command: "exit 3"}}
    """)  # fmt: skip
    result = clarion(tmp_path, "run", failing)
    assert result.returncode == 1
    assert re.search(r"\bboom\s+failed\s+[\d.]+ ms\s+command exited with 3", result.stdout), result.stdout
    assert re.search(r"^run \w+ failed", result.stdout, re.MULTILINE)
    assert "error: step 'boom' failed: command exited with 3" in result.stdout


def test_run_inputs_are_typed_by_their_declared_type(tmp_path: Path) -> None:
    typed = write(tmp_path, "typed.yaml", """
        name: Typed
        inputs:
          n: {type: integer}
          xs: {type: array}
          label: {type: string}
          flag: {type: boolean}
        steps:
          - {id: calc, task: echo, with: {value: "{{ inputs.n * 2 }}"}}
        outputs:
          doubled: "{{ steps.calc.output.value }}"
          count: "{{ inputs.xs | length }}"
    """)  # fmt: skip
    args = ["--input", "n=3", "--input", "xs=[a, b]", "--input", "label=007", "--input", "flag=true"]
    result = clarion(tmp_path, "run", typed, *args, "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["inputs"] == {"n": 3, "xs": ["a", "b"], "label": "007", "flag": True}
    assert run["outputs"] == {"doubled": 6, "count": 2}


def test_run_refuses_an_input_of_the_wrong_type_naming_it(tmp_path: Path) -> None:
    typed = write(tmp_path, "typed.yaml", """
        name: Typed
        inputs: {n: {type: integer}}
        steps:
          - {id: calc, task: echo, with: {value: "{{ inputs.n }}"}}
    """)  # fmt: skip
    result = clarion(tmp_path, "run", typed, "--input", "n=abc")
    assert result.returncode == 1
    assert "inputs.n" in result.stderr and "expected integer" in result.stderr


def test_run_json_prints_the_run_document(tmp_path: Path) -> None:
    result = clarion(tmp_path, "run", write(tmp_path, "greet.yaml", GREET), "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded"
    assert run["workflow_id"] == "greet"
    assert run["outputs"] == {"text": "HELLO WORLD"}
    assert [(s["key"], s["status"], s["attempt"]) for s in run["steps"]] == [
        ("hello", "succeeded", 1),
        ("shout", "succeeded", 1),
    ]
    assert run["steps"][1]["output"]["stdout"] == "HELLO WORLD\n"
    assert all(s["duration_ms"] is not None for s in run["steps"])


def test_ctrl_c_cancels_the_run_kills_its_command_and_exits_130(tmp_path: Path) -> None:
    long = write(tmp_path, "long.yaml", """
        name: Long
        steps:
          - {id: wait, task: shell, with: {command: "echo $$ > wait.pid; sleep 30"}}
    """)  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "clarion_jupyter.cli",
        "run",
        long,
        "--db",
        str(tmp_path / "x.duckdb"),
        "--workspace",
        str(tmp_path),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    pid_file = tmp_path / "wait.pid"
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "the step never started"
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err
    assert gone(int(pid_file.read_text())), "the step's command outlived the interrupted run"
    listed = clarion(tmp_path, "runs")
    assert re.search(r"cancelled\s+long$", listed.stdout, re.MULTILINE), listed.stdout


# -- runs and show ----------------------------------------------------------------------


async def test_runs_lists_runs_newest_first(tmp_path: Path) -> None:
    run_ids = await make_runs(tmp_path, 3)
    result = clarion(tmp_path, "runs")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == list(reversed(run_ids))
    assert all(re.search(r"succeeded\s+greet$", line) for line in result.stdout.splitlines())


async def test_runs_json_lists_run_documents_newest_first(tmp_path: Path) -> None:
    run_ids = await make_runs(tmp_path, 3)
    result = clarion(tmp_path, "runs", "--json", "--limit", "2")
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert [r["run_id"] for r in page["runs"]] == [run_ids[2], run_ids[1]]
    assert page["next_cursor"] == run_ids[1]
    assert {r["status"] for r in page["runs"]} == {"succeeded"}


async def test_show_json_equals_the_stored_run_document(tmp_path: Path) -> None:
    [run_id] = await make_runs(tmp_path, 1)
    result = clarion(tmp_path, "show", run_id, "--json")
    assert result.returncode == 0, result.stderr
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        stored = (await engine.get_run(run_id)).model_dump(mode="json")
    assert json.loads(result.stdout) == stored


async def test_show_prints_each_step_and_the_outcome(tmp_path: Path) -> None:
    [run_id] = await make_runs(tmp_path, 1)
    result = clarion(tmp_path, "show", run_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"run {run_id}: Greet (greet)"
    for step_id in ("hello", "shout"):
        assert re.search(rf"\b{step_id}\s+succeeded", result.stdout)
    assert f"run {run_id} succeeded" in result.stdout


def test_show_of_an_unknown_run_exits_nonzero_with_a_clear_message(tmp_path: Path) -> None:
    result = clarion(tmp_path, "show", "no-such-run")
    assert result.returncode != 0
    assert result.stderr.strip() == "error: run 'no-such-run' not found"
    assert "Traceback" not in result.stderr


# -- agents ---------------------------------------------------------------------------------


async def test_agents_import_reports_a_bad_file_and_imports_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    shutil.copytree(AGENT_FIXTURES, folder)
    result = clarion(tmp_path, "agents", "import", str(folder))
    assert result.returncode == 1, "a partial import exits non-zero"
    assert re.search(r"^error: broken\.yaml: ", result.stderr, re.MULTILINE), result.stderr
    assert "Traceback" not in result.stderr
    imported = re.findall(r'^created (\S+) "[^"]+" \((\S+)\)$', result.stdout, re.MULTILINE)
    assert ("code-reviewer", "openai/gpt-4o") in imported
    assert ("doc-writer", "openrouter/anthropic/claude-3.5-sonnet") in imported
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        stored = {agent.id for agent in await engine.agents.list()}
    assert stored == {agent_id for agent_id, _ in imported}
    assert len(stored) == 6


async def test_agents_import_of_a_clarion_db_exits_0_and_says_which_keys_to_set(tmp_path: Path) -> None:
    editor = v2_agent("basic_editor", "Basic File Editor", config_id="c")
    run = v2_run("run-1714557600123", prompt="Create hello.txt", agent=editor, summary="Created hello.txt")
    source = write_clarion_db(
        tmp_path / "clarion.db",
        agents=[editor],
        llm_configs=[{"id": "c", "name": "OpenAI", "provider": "OpenAI", "apiKey": "sk-never-shown"}],
        projects=[{"id": "p", "name": "P", "path": "/p", "lastOpenedAt": "", "activeAgentId": ""}],
        runs=[("p", run, "2024-05-01 10:00:05")],
    )
    dry = clarion(tmp_path, "agents", "import", str(source), "--dry-run")
    result = clarion(tmp_path, "agents", "import", str(source))
    again = clarion(tmp_path, "agents", "import", str(source), "--json")

    assert (dry.returncode, result.returncode, again.returncode) == (0, 0, 0)
    assert 'would be created basic_editor "Basic File Editor" (openai/gpt-4o)' in dry.stdout
    assert 'created basic_editor "Basic File Editor" (openai/gpt-4o)' in result.stdout
    assert "$OPENAI_API_KEY" in result.stdout
    assert json.loads(again.stdout)["changes"][0]["action"] == "unchanged"
    assert "sk-never-shown" not in dry.stdout + result.stdout + again.stdout + result.stderr
    listed = clarion(tmp_path, "runs")
    assert re.search(r"^[0-9a-f]{26}  2024-05-01 10:00:00  succeeded\s+clarion-v2-agent-run$", listed.stdout, re.M)
    run_id = listed.stdout.split()[0]
    shown = json.loads(clarion(tmp_path, "show", run_id, "--json").stdout)
    assert (shown["inputs"]["prompt"], shown["outputs"]["summary"]) == ("Create hello.txt", "Created hello.txt")


# -- the database file --------------------------------------------------------------------


def test_a_database_held_by_another_process_is_reported_clearly(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = clarion(tmp_path, "runs")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert "in use by another process" in result.stderr
    assert f"PID {holder.pid}" in result.stderr
    assert "Traceback" not in result.stderr


# -- examples ---------------------------------------------------------------------------------


def test_quickstart_example_runs_green(tmp_path: Path) -> None:
    result = clarion(tmp_path, "run", str(ROOT / "examples" / "quickstart.yaml"), "--input", "topic=durability")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^run \w+ succeeded", result.stdout, re.MULTILINE)
    note = tmp_path / ".clarion-quickstart" / "durability.md"
    assert note.read_text().startswith("# Notes on durability")
    assert '"heading": "# Notes on durability"' in result.stdout


# -- agent runs and approvals (embedded engine) ------------------------------------

EDIT_REPLY = {"summary": "hello", "file_changes": [{"action": "create", "path": "hello.txt", "new_content": "hi\n"}]}


async def make_editor(tmp_path: Path) -> None:
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.agents.create(
            {
                "id": "basic_editor",
                "name": "Basic editor",
                "model": "openai/gpt-4o-mini",
                "parameters": {"mock_response": json.dumps(EDIT_REPLY)},
                "output_schema": {"type": "object", "required": ["summary", "file_changes"]},
            }
        )


def started_run(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"^run (\w+): agent", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    return match.group(1)


async def test_agent_run_prints_the_reply_as_it_streams_in_before_the_step_ends(tmp_path: Path) -> None:
    reply = "Durability means a finished step is never run again."
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.agents.create(
            {"id": "writer", "name": "Writer", "model": "openai/gpt-4o-mini", "parameters": {"mock_response": reply}}
        )
    result = clarion(tmp_path, "agent", "run", "writer", "Explain durability")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.count(reply) == 1, result.stdout
    assert lines.index(reply) < next(i for i, line in enumerate(lines) if "reply" in line and "succeeded" in line)


async def test_a_structured_reply_is_summarised_not_echoed_as_json(tmp_path: Path) -> None:
    await make_editor(tmp_path)
    result = clarion(tmp_path, "agent", "run", "basic_editor", "Create hello.txt", "--apply", "never")
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout.splitlines() and "file_changes" not in result.stdout


async def test_agent_run_pauses_with_the_diff_and_approve_applies_it(tmp_path: Path) -> None:
    await make_editor(tmp_path)
    (tmp_path / "README.md").write_text("# readme\n")
    paused = clarion(tmp_path, "agent", "run", "basic_editor", "Create hello.txt saying hi", "--file", "README.md")
    assert paused.returncode == 3, "waiting for approval is not success" + paused.stderr
    run_id = started_run(paused)
    assert "step apply waits for approval" in paused.stdout
    assert "+++ b/hello.txt" in paused.stdout and "+hi" in paused.stdout
    assert f"clarion approve {run_id} apply" in paused.stdout
    assert not (tmp_path / "hello.txt").exists()
    approved = clarion(tmp_path, "approve", run_id, "apply")
    assert approved.returncode == 0, approved.stderr
    assert f"run {run_id} succeeded" in approved.stdout
    assert (tmp_path / "hello.txt").read_text() == "hi\n"


async def test_reject_discards_the_changes_and_the_run_succeeds(tmp_path: Path) -> None:
    await make_editor(tmp_path)
    run_id = started_run(clarion(tmp_path, "agent", "run", "basic_editor", "Create hello.txt"))
    rejected = clarion(tmp_path, "reject", run_id, "apply", "--comment", "not now")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert re.search(r"– apply\s+skipped\s+rejected by \S+: not now", rejected.stdout), rejected.stdout
    assert f"run {run_id} succeeded" in rejected.stdout and '"applied": false' in rejected.stdout
    assert not (tmp_path / "hello.txt").exists()
    again = clarion(tmp_path, "approve", run_id, "apply")
    assert again.returncode == 1 and "not waiting for approval" in again.stderr


def test_verbose_says_the_embedded_engine_is_used(tmp_path: Path) -> None:
    result = clarion(tmp_path, "runs", "--verbose")
    assert f"(using an embedded engine on {tmp_path / 'x.duckdb'})" in result.stderr


def test_validate_applies_the_extension_configuration(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps({"ClarionExtension": {"allow_shell": False}}))
    flow = write(tmp_path, "greet.yaml", GREET)
    result = subprocess.run(
        [sys.executable, "-m", "clarion_jupyter.cli", "validate", flow],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "JUPYTER_CONFIG_DIR": str(config)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "step 'shout' field 'task': shell steps are disabled" in result.stderr


# -- cancel, short ids, pipes ----------------------------------------------------------------


async def interrupted_run(tmp_path: Path) -> str:
    """A run that an engine stop left running (its shell step was cut off), as a crash would."""
    long = write(
        tmp_path, "long.yaml", 'name: Long\nsteps:\n  - {id: wait, task: shell, with: {command: "sleep 30"}}\n'
    )
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        run_id = await engine.submit(Path(long).read_text())
        async for event in engine.subscribe(run_id):
            if event.type == "step_started":
                break
    return run_id


async def test_cancel_stops_a_run_named_by_a_short_prefix_and_exits_zero(tmp_path: Path) -> None:
    run_id = await interrupted_run(tmp_path)
    result = clarion(tmp_path, "cancel", run_id[:-6])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run {run_id} cancelled" in result.stdout
    shown = json.loads(clarion(tmp_path, "show", run_id[:-6], "--json").stdout)
    assert (shown["run_id"], shown["status"]) == (run_id, "cancelled")


async def test_cancel_of_a_finished_run_says_so_and_exits_one(tmp_path: Path) -> None:
    [run_id] = await make_runs(tmp_path, 1)
    result = clarion(tmp_path, "cancel", run_id)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: run '{run_id}' already succeeded"


async def test_an_ambiguous_short_id_asks_for_more_of_it(tmp_path: Path) -> None:
    run_ids = await make_runs(tmp_path, 2)
    first, second = run_ids
    shared = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)]
    assert len(shared) >= 6  # run ids begin with the time
    result = clarion(tmp_path, "show", shared)
    assert result.returncode == 1
    assert f"run id '{shared}' is ambiguous" in result.stderr


async def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path: Path) -> None:
    await make_runs(tmp_path, 3)
    command = [sys.executable, "-m", "clarion_jupyter.cli", "runs", "--db", str(tmp_path / "x.duckdb")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    proc.stdout.close()  # like `clarion runs | head -0`: the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


# -- deleting runs and workflows ------------------------------------------------------------------


def test_runs_delete_without_a_terminal_asks_for_yes_and_deletes_nothing(tmp_path: Path) -> None:
    result = clarion(tmp_path, "runs", "delete", "--all")
    assert result.returncode == 2
    assert "stdin is not a terminal to confirm on, give --yes" in result.stderr


async def test_runs_delete_yes_deletes_one_run_named_by_a_prefix(tmp_path: Path) -> None:
    kept, deleted = await make_runs(tmp_path, 2)
    result = clarion(tmp_path, "runs", "delete", deleted[:-6], "--yes")
    assert (result.returncode, result.stdout) == (0, "deleted 1 run\n"), result.stderr
    assert [line.split()[0] for line in clarion(tmp_path, "runs").stdout.splitlines()] == [kept]


async def test_runs_delete_of_a_workflow_deletes_only_its_finished_runs(tmp_path: Path) -> None:
    await make_runs(tmp_path, 2)
    other = clarion(tmp_path, "run", write(tmp_path, "other.yaml", GREET.replace("id: greet", "id: other")))
    result = clarion(tmp_path, "runs", "delete", "--workflow", "greet", "--yes")
    assert other.returncode == 0 and result.stdout == "deleted 2 runs\n", result.stderr
    assert [line.split()[-1] for line in clarion(tmp_path, "runs").stdout.splitlines()] == ["other"]


def test_runs_delete_needs_exactly_one_choice_of_runs(tmp_path: Path) -> None:
    result = clarion(tmp_path, "runs", "delete", "--yes")
    assert result.returncode == 2
    assert "give a RUN_ID, or --workflow and/or --status, or --all" in result.stderr


async def test_runs_delete_of_a_run_still_running_says_to_cancel_it_first(tmp_path: Path) -> None:
    run_id = await interrupted_run(tmp_path)  # resumed, so running, when the command opens the engine
    result = clarion(tmp_path, "runs", "delete", run_id, "--yes")
    assert result.returncode == 1
    assert "cancel it first" in result.stderr


def test_workflows_delete_yes_deletes_the_saved_workflow(tmp_path: Path) -> None:
    saved = clarion(tmp_path, "run", write(tmp_path, "greet.yaml", GREET), "--save")
    result = clarion(tmp_path, "workflows", "delete", "greet", "--yes")
    again = clarion(tmp_path, "workflows", "delete", "greet", "--yes")
    assert saved.returncode == 0 and result.stdout == "deleted workflow greet\n", result.stderr
    assert again.returncode == 1 and "not found" in again.stderr


# -- v2 imports as a v2 user meets them ------------------------------------------------------------

COPY = v2_agent("agent-1759743600000", "Basic File Editor - Copy", config_id="c", parameters={"temperature": 0.2})
OPENAI_CONFIG = {"id": "c", "name": "OpenAI", "provider": "OpenAI", "apiKey": "sk-never-shown"}


def test_the_import_report_and_agents_list_show_each_name_with_its_id(tmp_path: Path) -> None:
    source = write_clarion_db(tmp_path / "clarion.db", agents=[COPY], llm_configs=[OPENAI_CONFIG])
    imported = clarion(tmp_path, "agents", "import", str(source))
    listed = clarion(tmp_path, "agents", "list")
    assert 'created agent-1759743600000 "Basic File Editor - Copy" (openai/gpt-4o)' in imported.stdout
    assert (
        'key: agent-1759743600000 "Basic File Editor - Copy" read the API key from $OPENAI_API_KEY' in imported.stdout
    )
    assert re.search(r"^agent-1759743600000\s+Basic File Editor - Copy\s+openai/gpt-4o$", listed.stdout, re.M)


def test_a_folder_with_v2_project_and_run_json_skips_them_with_a_line_each(tmp_path: Path) -> None:
    folder = tmp_path / "v2"
    folder.mkdir()
    (folder / "editor.json").write_text(json.dumps(COPY))
    (folder / "project.json").write_text(
        json.dumps({"id": "p", "name": "P", "path": "/p", "lastOpenedAt": "2024-05-01T10:00:00Z", "activeAgentId": ""})
    )
    (folder / "run.json").write_text(json.dumps(v2_run("run-1", prompt="Hi", agent=COPY)))
    result = clarion(tmp_path, "agents", "import", str(folder))
    assert result.returncode == 0, result.stderr
    assert "created agent-1759743600000" in result.stdout
    assert result.stderr.splitlines() == [
        "warning: project.json: a Clarion v2 project, not an agent: skipped (import clarion.db to bring projects' runs)",
        "warning: run.json: a Clarion v2 run, not an agent: skipped (import clarion.db to bring the run history)",
    ]


def test_importing_the_database_and_the_yaml_store_in_turn_leaves_the_agents_unchanged(tmp_path: Path) -> None:
    database = write_clarion_db(tmp_path / "clarion.db", agents=[COPY], llm_configs=[OPENAI_CONFIG])
    store = write_yaml_store(tmp_path, [COPY], [OPENAI_CONFIG])
    reports = [
        clarion(tmp_path, "agents", "import", str(source)).stdout for source in (database, store, database, store)
    ]
    assert reports[0].startswith("created agent-1759743600000")
    assert all(r.startswith('unchanged agent-1759743600000 "Basic File Editor - Copy"') for r in reports[2:]), reports


# -- imported v2 runs ---------------------------------------------------------------------------------

EDITOR_V2 = v2_agent("basic_editor", "Basic File Editor", config_id="c")
REPLY = json.dumps({"summary": "Done", "file_changes": [{"action": "create", "path": "b.txt", "new_content": "b"}]})


def imported_run(tmp_path: Path) -> str:
    """The id of a v2 run imported with its agent: "Create hello.txt", sent with ``a.txt``."""
    (tmp_path / "a.txt").write_text("a\n")
    run = v2_run("run-1714557600123", prompt="Create hello.txt", agent=EDITOR_V2, summary="Created hello.txt",
                 codebase_paths=["/home/me/project/a.txt"])  # fmt: skip
    projects = [{"id": "p", "name": "P", "path": "/home/me/project", "lastOpenedAt": "", "activeAgentId": ""}]
    source = write_clarion_db(
        tmp_path / "clarion.db", agents=[EDITOR_V2], llm_configs=[OPENAI_CONFIG], projects=projects,
        runs=[("p", run, "2024-05-01 10:00:05")],
    )  # fmt: skip
    assert clarion(tmp_path, "agents", "import", str(source)).returncode == 0
    return clarion(tmp_path, "runs").stdout.split()[0]


def test_show_of_an_imported_v2_run_prints_its_agent_and_prompt(tmp_path: Path) -> None:
    shown = clarion(tmp_path, "show", imported_run(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert (
        '  agent basic_editor "Basic File Editor"\n  files: /home/me/project/a.txt\n  prompt: Create hello.txt\n'
        in shown.stdout
    )


def test_agent_rerun_of_an_imported_v2_run_is_an_agent_run_with_its_agent_prompt_and_files(tmp_path: Path) -> None:
    run_id = imported_run(tmp_path)
    clarion(tmp_path, "agents", "set", "basic_editor", f"parameters.mock_response={REPLY}", "api_key_env=")
    result = clarion(tmp_path, "agent", "rerun", run_id[:-4], "--json")
    assert result.returncode == 3, result.stderr  # its changes wait for review, as every agent run's do
    rerun = json.loads(result.stdout)
    assert (rerun["workflow_id"], rerun["status"]) == ("agent-run", "waiting")
    assert {k: rerun["inputs"][k] for k in ("agent", "prompt", "files")} == {
        "agent": "basic_editor", "prompt": "Create hello.txt", "files": ["a.txt"]
    }  # fmt: skip


def test_agent_rerun_of_an_imported_v2_run_holds_to_the_budget_it_is_given(tmp_path: Path) -> None:
    run_id = imported_run(tmp_path)
    clarion(tmp_path, "agents", "set", "basic_editor", f"parameters.mock_response={REPLY}", "api_key_env=")
    result = clarion(tmp_path, "agent", "rerun", run_id, "--budget-tokens", "50000", "--budget-usd", "0.25", "--json")
    assert result.returncode == 3, result.stderr
    budget = json.loads(result.stdout)["budget"]
    assert (budget["tokens"], budget["usd"]) == (50_000, 0.25)


def test_agent_rerun_with_cache_answers_the_second_re_run_from_the_llm_cache(tmp_path: Path) -> None:
    run_id = imported_run(tmp_path)
    clarion(tmp_path, "agents", "set", "basic_editor", f"parameters.mock_response={REPLY}", "api_key_env=")
    reruns = [clarion(tmp_path, "agent", "rerun", run_id, "--cache", "--json") for _ in range(2)]
    assert [r.returncode for r in reruns] == [3, 3], reruns[0].stderr  # each waits for review
    cached = [next(s for s in json.loads(r.stdout)["steps"] if s["key"] == "reply")["output"]["cached"] for r in reruns]
    assert cached == [False, True]


def test_agent_run_with_cache_answers_the_same_request_from_the_llm_cache(tmp_path: Path) -> None:
    imported_run(tmp_path)
    clarion(tmp_path, "agents", "set", "basic_editor", f"parameters.mock_response={REPLY}", "api_key_env=")
    runs = [
        clarion(tmp_path, "agent", "run", "basic_editor", "Create b.txt", "--apply", "never", "--cache", "--json")
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    cached = [next(s for s in json.loads(r.stdout)["steps"] if s["key"] == "reply")["output"]["cached"] for r in runs]
    assert cached == [False, True]


async def test_agent_rerun_of_a_run_that_was_not_imported_says_so(tmp_path: Path) -> None:
    [run_id] = await make_runs(tmp_path, 1)
    result = clarion(tmp_path, "agent", "rerun", run_id)
    assert result.returncode == 1
    assert f"run '{run_id}' is not a run imported from Clarion v2 (workflow 'greet')" in result.stderr


async def test_through_a_server_a_key_is_said_to_be_missing_from_the_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the server starts without it
    source = write_clarion_db(tmp_path / "clarion.db", agents=[COPY], llm_configs=[OPENAI_CONFIG])
    with JupyterServerProcess(tmp_path / "server") as server:
        await server.wait_ready()
        command = [
            sys.executable,
            "-m",
            "clarion_jupyter.cli",
            "agents",
            "import",
            str(source),
            "--db",
            str(server.db_path),
        ]
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(server.workdir / "runtime"), "OPENAI_API_KEY": "sk-here"}
        result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    assert (
        "read the API key from $OPENAI_API_KEY (not set in the server's environment: it is set here, "
        "but the server needs it too); keys are not imported"
    ) in result.stdout


async def agent_with_context(tmp_path: Path, max_tokens: int) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "big.py").write_text("value = 'a line of code'\n" * 100)
    (tmp_path / "pkg" / "small.py").write_text("x = 1\n")
    async with Engine(tmp_path / "x.duckdb", workspace_root=tmp_path) as engine:
        await engine.agents.create(
            {"id": "reader", "name": "Reader", "model": "openai/gpt-4o-mini", "parameters": {"mock_response": "ok"},
             "context": {"include_globs": ["pkg/*.py"], "max_tokens": max_tokens}}
        )  # fmt: skip


async def test_agent_run_prints_the_files_and_tokens_it_sends_before_it_calls(tmp_path: Path) -> None:
    await agent_with_context(tmp_path, 100_000)
    result = clarion(tmp_path, "agent", "run", "reader", "Review", "--apply", "never")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r"context: 2 files, [\d,]+ tokens of 100,000 allowed; the whole prompt is", lines[0])
    assert re.match(r"  pkg/big\.py  \([\d,]+ tokens\)", lines[1]) and lines[2].startswith("  pkg/small.py")
    assert lines.index(next(line for line in lines if line.startswith("run "))) > 2


async def test_agent_run_over_the_context_cap_sends_nothing_and_exits_nonzero(tmp_path: Path) -> None:
    await agent_with_context(tmp_path, 50)
    result = clarion(tmp_path, "agent", "run", "reader", "Review")
    assert result.returncode == 2
    assert "error: nothing was sent: the codebase context is" in result.stderr and "over its cap of 50" in result.stderr
    assert "no runs" in clarion(tmp_path, "runs").stdout
