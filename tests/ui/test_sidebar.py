"""The sidebar in a real JupyterLab: its views, live runs, run detail, editing, keyboard use."""

from __future__ import annotations

import contextlib

from playwright.async_api import TimeoutError as PlaywrightTimeout

from clarion_jupyter.testing.browser import DARK_THEME, chromium

from .conftest import api, save, wait_for_run, wait_until_the_workspace_forgets
from .flows import run_agent_and_apply
from .pages import (
    DETAIL,
    SIDEBAR,
    SIDEBAR_TAB,
    change_theme,
    console_errors,
    open_sidebar,
    run_detail,
    show_tab,
    wait_status,
)

TOUR = """\
id: tour
name: Tour
inputs:
  words: {type: array, default: [a, b, c]}
  pause: {type: number, default: 0.8}
steps:
  - id: start
    task: shell
    with: {command: "sleep {{ inputs.pause }}"}
  - parallel:
      - id: left
        task: shell
        with: {command: "sleep {{ inputs.pause }}; echo left"}
      - id: right
        task: echo
        with: {value: right}
  - id: each
    task: echo
    for_each: "{{ inputs.words }}"
    with: {value: "{{ item }}"}
"""
LONG = {"id": "long", "name": "Long nap", "steps": [{"id": "nap", "task": "shell", "with": {"command": "sleep 60"}}]}
BROKEN = {
    "id": "broken",
    "name": "Broken build",
    "steps": [
        {"id": "compile", "task": "shell", "with": {"command": "echo 'error: missing semicolon' >&2; exit 3"}},
        {"id": "after", "task": "echo", "with": {"value": "never"}},
    ],
}


async def test_sidebar_opens_on_its_three_views(lab, shots) -> None:
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.wait_for_selector(f"{SIDEBAR} .clarion-RunsView")
        await shots(page, "runs")
        await show_tab(page, "Workflows")
        await page.wait_for_selector(f"{SIDEBAR} .clarion-List, {SIDEBAR} .clarion-Empty")
        await shots(page, "workflows")
        await show_tab(page, "Agents")
        await page.wait_for_selector(f"{SIDEBAR} .clarion-Import")
        await shots(page, "agents")
        assert console_errors(page) == []


async def test_a_workflow_started_from_the_sidebar_turns_green_step_by_step(lab, shots) -> None:
    save(lab, TOUR)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Workflows")
        item = f"{SIDEBAR} [data-workflow='tour']"
        await page.click(f"{item} button:has-text('Run')")
        await page.fill(f"{item} input[type=number]", "1")
        await shots(page, "run-form")
        await page.click(f"{item} button:has-text('Start run')")

        detail = DETAIL
        await page.wait_for_selector(f"{detail} .clarion-Node[data-step='start'][data-status='running']")
        await shots(page, "first-step-running")
        await page.wait_for_selector(f"{detail} .clarion-Node[data-step='left'][data-status='running']")
        await page.wait_for_selector(f"{detail} .clarion-Node[data-step='start'][data-status='succeeded']")
        await shots(page, "parallel-group-running")
        await wait_status(page, detail, "succeeded")
        await page.click(f"{detail} .clarion-Node[data-step='each[1]']")
        await shots(page, "succeeded")

        parallel = page.locator(f"{detail} .clarion-Stage-parallel .clarion-Node")
        assert sorted(await parallel.evaluate_all("ns => ns.map(n => n.dataset.step)")) == ["left", "right"]
        items = page.locator(f"{detail} [data-map='each'] .clarion-Node-item")
        assert await items.evaluate_all("ns => ns.map(n => n.dataset.status)") == ["succeeded"] * 3
        assert "b" in await page.inner_text(f"{detail} [data-step-panel='each[1]']")

        run_id = await page.get_attribute(detail, "data-run-id")
        assert api(lab, "GET", f"runs/{run_id}")["inputs"]["pause"] == 1
        await show_tab(page, "Runs")
        await wait_status(page, f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']", "succeeded")
        await shots(page, "runs-list")
        assert console_errors(page) == []


async def test_a_running_run_is_cancelled_from_its_detail(lab, shots) -> None:
    save(lab, LONG)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        run_id = api(lab, "POST", "workflows/long/run", {})["run_id"]
        row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
        await wait_status(page, row, "running")
        await page.click(row)
        await page.wait_for_selector(f"{run_detail(run_id)} .clarion-Node[data-step='nap'][data-status='running']")
        await shots(page, "running")
        await page.click(f"{run_detail(run_id)} button:has-text('Cancel')")
        await wait_status(page, run_detail(run_id), "cancelled")
        await wait_status(page, row, "cancelled")
        await shots(page, "cancelled")
        assert wait_for_run(lab, run_id, {"cancelled"}, timeout=5)["status"] == "cancelled"
        assert console_errors(page) == []


async def test_a_failed_run_shows_which_step_failed_and_why(lab, shots) -> None:
    save(lab, BROKEN)
    run_id = api(lab, "POST", "workflows/broken/run", {})["run_id"]
    wait_for_run(lab, run_id, {"failed"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.select_option(f"{SIDEBAR} select[aria-label='Filter by status']", "failed")
        row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#clarion-sidebar .clarion-RunRow')].every(r => r.dataset.status === 'failed')"
        )
        await page.wait_for_selector(row)
        await shots(page, "filtered-failed")
        await page.click(row)
        detail = run_detail(run_id)
        await wait_status(page, detail, "failed")
        await page.click(f"{detail} .clarion-Node[data-step='compile']")
        error = await page.inner_text(f"{detail} [data-step-panel='compile'] .clarion-RunError")
        assert "3" in error
        assert "compile" in await page.inner_text(f"{detail} > .clarion-RunError")
        await shots(page, "failed-detail")
        assert console_errors(page) == []


async def test_edit_as_yaml_marks_the_servers_validation_errors_in_the_text_and_lists_them_then_saves(
    lab, shots
) -> None:
    save(lab, TOUR)
    invalid = TOUR.replace("task: echo\n    for_each", "task: teleport\n    for_each")
    line = invalid.splitlines().index("    task: teleport") + 1
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Workflows")
        await page.click(f"{SIDEBAR} [data-workflow='tour'] button:has-text('Edit as YAML')")
        editor = ".clarion-WorkflowEditor"
        await page.wait_for_selector(f"{editor} .cm-content")
        assert "for_each" in await page.inner_text(f"{editor} .cm-content")
        await shots(page, "opened")

        await page.click(f"{editor} .cm-content")
        await page.keyboard.press("Control+a")
        await page.keyboard.insert_text(invalid)
        await page.click(f"{editor} .jp-Toolbar-item:has-text('Save')")
        problems = await page.wait_for_selector(f"{editor} .clarion-Problems")
        text = await problems.inner_text()
        assert "each" in text and "teleport" in text and f"(line {line})" in text
        assert api(lab, "GET", "workflows/tour")["steps"][2]["task"] == "echo"

        marker = page.locator(f"{editor} .cm-lint-marker-error")
        await marker.wait_for()
        assert await marker.count() == 1
        assert await page.inner_text(f"{editor} .cm-lintRange-error") == "task: teleport"
        assert await marked_line(page, editor) == line
        await shots(page, "invalid")
        await marker.hover()
        tooltip = await page.wait_for_selector(".cm-tooltip-lint")
        assert "unknown task type 'teleport'" in await tooltip.inner_text()
        await shots(page, "invalid-tooltip")
        await change_theme(page, DARK_THEME)
        await marker.hover()
        await page.wait_for_selector(".cm-tooltip-lint")
        await shots(page, "invalid-tooltip-dark")
        await change_theme(page, "JupyterLab Light")
        await page.click(f"{editor} .clarion-Problems button:has-text('line {line}')")
        assert await page.evaluate(CURSOR_LINE) == "    task: teleport"

        await page.click(f"{editor} .cm-content")
        await page.keyboard.press("Control+a")
        await page.keyboard.insert_text(TOUR.replace("default: [a, b, c]", "default: [a, b]"))
        await page.keyboard.press("Control+s")
        await page.wait_for_selector(f"{editor} .clarion-Saved")
        assert await page.locator(f"{editor} .cm-lint-marker-error, {editor} .cm-lintRange-error").count() == 0
        await shots(page, "saved")
        assert api(lab, "GET", "workflows/tour")["inputs"]["words"]["default"] == ["a", "b"]
        # The browser logs the refused PUT itself; nothing else may fail.
        assert [e for e in console_errors(page) if "status of 422" not in e] == []


CURSOR_LINE = """() => {
  const node = document.getSelection().anchorNode;
  return (node.nodeType === Node.TEXT_NODE ? node.parentElement : node).closest('.cm-line').textContent;
}"""
"""The text of the editor line the cursor is on."""


async def marked_line(page, editor: str) -> int:
    """The 1-based number of the text line level with the lint gutter's marker."""
    return await page.evaluate(
        """editor => {
          const marker = document.querySelector(editor + ' .cm-lint-marker-error').getBoundingClientRect();
          const lines = [...document.querySelectorAll(editor + ' .cm-content .cm-line')];
          const middle = marker.top + marker.height / 2;
          return lines.findIndex(l => {
            const r = l.getBoundingClientRect();
            return r.top <= middle && middle < r.bottom;
          }) + 1;
        }""",
        editor,
    )


async def test_the_runs_list_is_used_with_the_keyboard(lab, shots) -> None:
    save(lab, BROKEN)
    first = api(lab, "POST", "workflows/broken/run", {})["run_id"]
    second = api(lab, "POST", "workflows/broken/run", {})["run_id"]
    wait_for_run(lab, first, {"failed"})
    wait_for_run(lab, second, {"failed"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow[data-run-id='{first}']")
        await page.focus(f"{SIDEBAR} .clarion-RunRow[tabindex='0']")
        assert await page.evaluate("document.activeElement.dataset.runId") == second  # newest first
        await page.keyboard.press("ArrowDown")
        await page.wait_for_function(f"document.activeElement.dataset.runId === '{first}'", timeout=5_000)
        await shots(page, "focused")
        await page.keyboard.press("Enter")
        await page.wait_for_selector(run_detail(first))
        await page.keyboard.press("Tab")
        await shots(page, "opened")
        assert console_errors(page) == []


REVIEWED = {
    "id": "reviewed",
    "name": "Reviewed notes",
    "steps": [
        {
            "id": "write",
            "task": "file_write",
            "approval": {"message": "Write the release notes?"},
            "with": {"path": "notes/release.md", "content": "# Release\n\n- reviewed by a person\n"},
        }
    ],
}


async def test_a_waiting_run_is_counted_on_the_icon_reviewed_as_a_diff_and_approved(lab, shots) -> None:
    save(lab, REVIEWED)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        run_id = api(lab, "POST", "workflows/reviewed/run", {})["run_id"]
        await page.wait_for_selector(f"{SIDEBAR_TAB}[data-waiting]")
        assert int(await page.get_attribute(SIDEBAR_TAB, "data-waiting")) >= 1
        await page.select_option(f"{SIDEBAR} select[aria-label='Filter by status']", "waiting")
        row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
        await wait_status(page, row, "waiting")
        await shots(page, "badge-and-waiting-filter")

        await page.click(row)
        card = f"{run_detail(run_id)} [data-approval='write']"
        await page.wait_for_selector(card)
        text = await page.inner_text(card)
        assert "Write the release notes?" in text
        assert "notes/release.md" in text and "create" in text
        assert "+- reviewed by a person" in text
        await shots(page, "diff-to-review")

        await page.click(f"{card} button:has-text('Approve')")
        await wait_status(page, run_detail(run_id), "succeeded")
        await shots(page, "approved")
        assert (lab.root / "notes" / "release.md").read_text() == "# Release\n\n- reviewed by a person\n"
        assert console_errors(page) == []


async def test_a_rejected_step_keeps_the_reviewers_comment_and_writes_nothing(lab, shots) -> None:
    doc = {
        **REVIEWED,
        "id": "reviewed-reject",
        "steps": [{**REVIEWED["steps"][0], "with": {"path": "rejected.md", "content": "no"}}],
    }
    save(lab, doc)
    run_id = api(lab, "POST", "workflows/reviewed-reject/run", {})["run_id"]
    wait_for_run(lab, run_id, {"waiting"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']")
        card = f"{run_detail(run_id)} [data-approval='write']"
        await page.fill(f"{card} input[aria-label='Comment']", "not in this release")
        await page.click(f"{card} button:has-text('Reject')")
        await page.wait_for_selector(f"{run_detail(run_id)}:not([data-status='waiting'])")
        await page.click(f"{run_detail(run_id)} .clarion-Node[data-step='write']")
        assert "not in this release" in await page.inner_text(f"{run_detail(run_id)} [data-step-panel='write']")
        await shots(page, "rejected")
        assert not (lab.root / "rejected.md").exists()
        assert console_errors(page) == []


async def test_an_agent_runs_on_the_file_selected_in_the_file_browser_and_its_diff_is_applied(lab, shots) -> None:
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await run_agent_and_apply(page, lab, shots)
        assert console_errors(page) == []


V2_AGENT = """\
type: Agent
metadata:
    id: ""
    name: Release Writer
    description: Writes release notes.
properties:
    llm_config:
        provider: Anthropic
        model: claude-3-5-sonnet-latest
        parameters:
            temperature: 0.3
    system_prompt: You write release notes for {{ product }}.
children:
    -   type: UserVariableDef
        metadata:
            name: product
        properties:
            required: true
"""


async def test_v2_agent_files_are_imported_from_the_agents_view(lab, shots, tmp_path) -> None:
    upload = tmp_path / "release_writer.yml"
    upload.write_text(V2_AGENT)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Agents")
        await page.set_input_files(f"{SIDEBAR} input[type=file]", str(upload))
        report = await page.wait_for_selector(f"{SIDEBAR} .clarion-ImportReport")
        assert "1 imported (Release Writer)" in await report.inner_text()
        agent = page.locator(f"{SIDEBAR} .clarion-Item:has-text('Release Writer')")
        await agent.wait_for()
        assert "anthropic/claude-3-5-sonnet-latest · anthropic" in await agent.inner_text()
        await shots(page, "imported")
        assert console_errors(page) == []


async def test_a_run_is_rerun_with_its_inputs_and_opened_in_a_notebook(lab, shots) -> None:
    save(lab, TOUR)
    first = api(lab, "POST", "workflows/tour/run", {"inputs": {"pause": 0.1, "words": ["x"]}})["run_id"]
    wait_for_run(lab, first, {"succeeded"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{first}']")
        await wait_status(page, run_detail(first), "succeeded")
        await page.click(f"{run_detail(first)} button:has-text('Re-run')")
        again = page.locator(f"{DETAIL}:not([data-run-id='{first}'])")
        await again.wait_for()
        second = await again.get_attribute("data-run-id")
        assert api(lab, "GET", f"runs/{second}")["inputs"] == api(lab, "GET", f"runs/{first}")["inputs"]
        await wait_status(page, run_detail(second), "succeeded")
        await shots(page, "rerun")

        await page.click(f"{run_detail(second)} button:has-text('Open in a notebook')")
        cell = page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first
        await cell.wait_for()
        await page.wait_for_function(
            f"() => [...document.querySelectorAll('.jp-NotebookPanel .jp-Cell .cm-content')]"
            f".some(c => c.textContent.includes('%clarion show {second}'))"
        )
        await shots(page, "notebook")
        assert console_errors(page) == []
        # Closed unsaved, so that the next test's page does not restore it and ask for its kernel.
        # Lab may ask for the new notebook's kernel, a moment after the notebook shows: wait for it.
        asked = page.locator(".jp-Dialog:has-text('Select Kernel')")
        with contextlib.suppress(PlaywrightTimeout):
            await asked.wait_for(timeout=5_000)
            await page.click(".jp-Dialog .jp-Dialog-button:has-text('Select')")
            await page.wait_for_selector(".jp-Dialog", state="detached")
        await page.click(".lm-MenuBar-itemLabel:text-is('File')")
        await page.click(".lm-Menu-itemLabel:text-is('Close Tab')")
        await page.wait_for_function(
            "() => document.querySelector('.jp-Dialog') || !document.querySelector('.jp-NotebookPanel')"
        )
        if await page.locator(".jp-Dialog").count():  # Lab asks, the cell being unsaved
            await page.click(".jp-Dialog .jp-Dialog-button:has-text('Discard')")
        wait_until_the_workspace_forgets(lab, "notebook:Untitled")


async def test_a_v2_clarion_db_upload_imports_its_agents_and_run_history(lab, shots, tmp_path) -> None:
    from test_v2_import import clarion_db  # the v2 database as v2 wrote it (tests/test_v2_import.py)

    database = clarion_db(tmp_path)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Agents")
        await page.set_input_files(f"{SIDEBAR} input[type=file]", str(database))
        report = await page.wait_for_selector(f"{SIDEBAR} .clarion-ImportReport")
        text = await report.inner_text()
        assert "clarion.db" in text and "2 imported" in text
        assert "2 of 2 v2 runs imported" in text
        assert "$OPENAI_API_KEY" in text
        await page.wait_for_selector(f"{SIDEBAR} [data-agent='basic_editor']")
        await shots(page, "imported")
        assert console_errors(page) == []
