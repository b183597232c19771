"""The sidebar as a JupyterLab citizen: tracked run tabs restored on reload, a cancelled run
that shows no step still running, deletions confirmed with Lab's dialog, notifications for
the runs started here, command palette entries, file-browser context-menu items, settings
in Lab's settings editor, and the small things (live durations, agent names, YAML inputs,
icons that render, times that do not wrap)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from clarion_jupyter.testing.browser import DARK_THEME, chromium

from .conftest import api, finished_run, save, wait_for_run, wait_until_the_workspace_forgets
from .flows import coder_agent
from .pages import (
    DETAIL,
    SIDEBAR,
    change_theme,
    confirm_dialog,
    console_errors,
    open_palette,
    open_run_form,
    open_sidebar,
    run_command,
    run_detail,
    select_in_file_browser,
    shot_in_dark,
    show_tab,
    wait_for_toast,
    wait_status,
)

NAP = {
    "id": "nap",
    "name": "Nap",
    "steps": [
        {"id": "first", "task": "echo", "with": {"value": 1}},
        {"id": "sleep", "task": "shell", "with": {"command": "sleep 60"}},
    ],
}
QUICK = {
    "id": "quick",
    "name": "Quick",
    "inputs": {"words": {"type": "array", "default": ["a"]}},
    "steps": [{"id": "say", "task": "echo", "with": {"value": "{{ inputs.words | join(',') }}"}}],
}
OTHER = {**QUICK, "id": "other", "name": "Other"}
NIGHTLY_YAML = """\
id: nightly
name: Nightly from a file
inputs:
  who: {type: string, default: files}
steps:
  - id: hello
    task: echo
    with: {value: "hello {{ inputs.who }}"}
"""
PLUGIN_SETTINGS = "lab/api/settings/@clarion/sidebar:plugin"


def set_lab_settings(lab, values: dict) -> None:
    """The user's settings for the plugin, as Lab's settings editor writes them."""
    body = json.dumps({"raw": json.dumps(values)}).encode()
    headers = {**lab.headers, "Content-Type": "application/json"}
    request = urllib.request.Request(f"{lab.url}{PLUGIN_SETTINGS}", data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=30):
        pass


async def test_a_cancelled_runs_stopped_step_shows_cancelled_and_its_tab_is_restored_so_on_reload(lab, shots) -> None:
    save(lab, NAP)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Workflows")
        item = await open_run_form(page, "nap")
        await page.click(f"{item} button:has-text('Start run')")
        await page.wait_for_selector(f"{DETAIL} .clarion-Node[data-step='sleep'][data-status='running']")
        run_id = await page.get_attribute(DETAIL, "data-run-id")
        duration = page.locator(f"{run_detail(run_id)} [data-duration]")
        before = await duration.inner_text()
        await page.wait_for_function(
            "([sel, before]) => document.querySelector(sel).textContent !== before",
            arg=[f"{run_detail(run_id)} [data-duration]", before],
            timeout=5_000,
        )
        await shots(page, "running")
        await page.click(f"{run_detail(run_id)} button:has-text('Cancel')")
        await wait_status(page, run_detail(run_id), "cancelled")
        node = f"{run_detail(run_id)} .clarion-Node[data-step='sleep']"
        assert await page.get_attribute(node, "data-status") == "cancelled"
        await page.click(node)
        assert "cancelled" in await page.inner_text(f"{run_detail(run_id)} [data-step-panel='sleep'] h3")
        await shots(page, "cancelled")

        await page.reload()
        await page.wait_for_selector(f"{DETAIL}[data-run-id='{run_id}'][data-status='cancelled']", timeout=60_000)
        assert await page.get_attribute(node, "data-status") == "cancelled"
        assert await page.locator(f"{run_detail(run_id)} [data-status='running']").count() == 0
        await shots(page, "cancelled-after-reload")
        await shot_in_dark(page, shots, "cancelled-after-reload-dark")
        assert console_errors(page) == []


async def test_a_finished_run_is_deleted_from_its_detail_after_lab_asks_to_confirm(lab, shots) -> None:
    save(lab, QUICK)
    run_id = finished_run(lab, "quick")
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
        await page.click(row)
        await wait_status(page, run_detail(run_id), "succeeded")
        await page.click(f"{run_detail(run_id)} button:has-text('Delete')")
        await page.locator(".jp-Dialog").wait_for()
        await shots(page, "confirm")
        assert run_id in await confirm_dialog(page)
        await page.wait_for_selector(run_detail(run_id), state="detached")
        await page.wait_for_selector(row, state="detached")
        await shots(page, "deleted")
        wait_until_the_workspace_forgets(lab, run_id)
        with pytest.raises(urllib.error.HTTPError) as gone:
            api(lab, "GET", f"runs/{run_id}")
        assert gone.value.code == 404
        assert console_errors(page) == []


async def test_the_finished_runs_the_filter_selects_are_deleted_and_the_others_stay(lab, shots) -> None:
    save(lab, QUICK)
    save(lab, OTHER)
    mine = [finished_run(lab, "quick") for _ in range(2)]
    other = finished_run(lab, "other")
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.select_option(f"{SIDEBAR} select[aria-label='Filter by workflow']", "quick")
        await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow[data-run-id='{mine[0]}']")
        await shots(page, "filtered")
        await page.click(f"{SIDEBAR} button[aria-label^='Delete the finished runs']")
        await page.locator(".jp-Dialog").wait_for()
        await shots(page, "confirm")
        assert "Quick" in await confirm_dialog(page)
        await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow", state="detached")
        assert "Deleted" in await page.inner_text(".jp-Notification-Toast-success")
        await shots(page, "deleted")
        await page.select_option(f"{SIDEBAR} select[aria-label='Filter by workflow']", "")
        await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow[data-run-id='{other}']")
        assert api(lab, "GET", "runs?workflow_id=quick")["runs"] == []
        assert console_errors(page) == []


async def test_a_workflow_is_deleted_from_the_workflows_list_after_confirming(lab, shots) -> None:
    save(lab, OTHER)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Workflows")
        item = f"{SIDEBAR} [data-workflow='other']"
        await page.click(f"{item} button:has-text('Delete')")
        assert "Other" in await confirm_dialog(page, "Cancel")
        assert await page.is_visible(item)
        await page.click(f"{item} button:has-text('Delete')")
        await confirm_dialog(page)
        await page.wait_for_selector(item, state="detached")
        await shots(page, "deleted")
        await shot_in_dark(page, shots, "deleted-dark")
        assert "other" not in [w["id"] for w in api(lab, "GET", "workflows")["workflows"]]
        assert console_errors(page) == []


async def test_a_run_started_here_is_notified_when_it_ends_and_the_notification_opens_it(lab, shots) -> None:
    save(lab, QUICK)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Workflows")
        item = await open_run_form(page, "quick")
        await page.fill(f"{item} textarea", "- x\n- y\n")
        await page.click(f"{item} button:has-text('Start run')")
        # The success toast closes itself after a few seconds: keep the pointer on it from the
        # moment it shows (Lab pauses a toast under the pointer) until Open is clicked.
        toast = await wait_for_toast(page, "success", "Quick succeeded")
        await toast.hover()
        await page.wait_for_selector(f"{DETAIL}[data-status='succeeded']")
        run_id = await page.get_attribute(DETAIL, "data-run-id")
        assert api(lab, "GET", f"runs/{run_id}")["inputs"]["words"] == ["x", "y"]
        await shots(page, "notified")
        await page.click(f"li.lm-TabBar-tab[data-id='clarion-run-{run_id}'] .lm-TabBar-tabCloseIcon")
        await page.wait_for_selector(run_detail(run_id), state="detached")
        await toast.locator("button:has-text('Open')").click()
        await page.wait_for_selector(f"{DETAIL}[data-run-id='{run_id}']")
        await shot_in_dark(page, shots, "opened-dark")
        assert console_errors(page) == []


async def test_lab_settings_turn_notifications_off_and_choose_what_the_agent_form_proposes(lab, shots) -> None:
    save(lab, QUICK)
    api(lab, "POST", "agents", {**coder_agent("quiet"), "name": "Quiet"})
    set_lab_settings(lab, {"notifications": False, "defaultApplyMode": "never"})
    try:
        async with chromium() as browser:
            page = await open_sidebar(browser, lab, "Workflows")
            item = await open_run_form(page, "quick")
            await page.click(f"{item} button:has-text('Start run')")
            await page.wait_for_selector(f"{DETAIL}[data-status='succeeded']")
            await page.wait_for_timeout(1000)
            assert await page.locator(".jp-Notification-Toast-success:has-text('Quick')").count() == 0
            await show_tab(page, "Agents")
            await page.click(f"{SIDEBAR} [data-agent='quiet'] button:has-text('Run agent')")
            assert await page.input_value(f"{SIDEBAR} form[aria-label='Run Quiet'] select") == "never"

            await page.click(".lm-MenuBar-itemLabel:text-is('Settings')")
            await page.click(".lm-Menu-itemLabel:text-is('Settings Editor')")
            await page.click(".jp-PluginList-entry:has-text('Clarion')")
            form = page.locator(".jp-SettingsForm:has-text('Apply an agent')")
            await form.wait_for()
            assert "Notifications" in await form.inner_text()
            await shots(page, "settings-editor")
    finally:
        set_lab_settings(lab, {})


async def test_the_command_palette_has_every_sidebar_action_and_runs_a_chosen_workflow(lab, shots) -> None:
    save(lab, QUICK)
    save(lab, OTHER)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await open_palette(page, "Clarion:")
        labels = await page.locator(".lm-CommandPalette-itemLabel").all_inner_texts()
        for wanted in (
            "Clarion: Run Workflow…",
            "Clarion: Edit Workflow as YAML…",
            "Clarion: Delete Workflow…",
            "Clarion: Open Run…",
            "Clarion: Cancel Run",
            "Clarion: Re-run with the Same Inputs",
            "Clarion: Delete Run…",
            "Clarion: Delete the Finished Runs the Runs List Shows…",
            "Clarion: Import v2 Agents…",
            "Clarion: Run Agent…",
            "Clarion: Save Workflow",
        ):
            assert wanted in labels
        await shots(page, "palette")
        await page.keyboard.press("Escape")
        await page.wait_for_selector(".lm-CommandPalette-input", state="hidden")

        await run_command(page, "Clarion: Run Workflow…")
        dialog = page.locator(".jp-Dialog")
        await dialog.wait_for()
        await dialog.locator("select").select_option(label="Other (other)")
        await dialog.locator(".jp-Dialog-button:has-text('OK')").click()
        form = f"{SIDEBAR} [data-workflow='other'] form"
        await page.wait_for_selector(form)
        await shots(page, "workflow-form-from-palette")
        assert console_errors(page) == []


async def test_the_file_browser_runs_a_workflow_file_and_an_agent_on_the_selection(lab, shots) -> None:
    (lab.root / "nightly.yaml").write_text(NIGHTLY_YAML)
    api(lab, "POST", "agents", {**coder_agent("scribe"), "name": "Scribe"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await select_in_file_browser(page, "nightly.yaml")
        await page.click(".jp-DirListing-item.jp-mod-selected", button="right")
        await shots(page, "context-menu")
        await page.click(".lm-Menu-itemLabel:text-is('Run with Clarion')")
        form = f"{SIDEBAR} [data-workflow='nightly'] form"
        await page.wait_for_selector(form)
        await page.click(f"{form} button:has-text('Start run')")
        await page.wait_for_selector(f"{DETAIL}[data-status='succeeded']")
        assert api(lab, "GET", "workflows/nightly")["name"] == "Nightly from a file"

        (lab.root / "notes.py").write_text("print('hi')\n")
        await select_in_file_browser(page, "notes.py")
        await page.click(".jp-DirListing-item.jp-mod-selected", button="right")
        await page.click(".lm-Menu-itemLabel:text-is('Run agent on these files')")
        agent_form = f"{SIDEBAR} form[aria-label='Run Scribe']"
        # With other tests' agents on this server, Lab asks which one: ours.
        await page.wait_for_selector(f".jp-Dialog, {agent_form}")
        dialog = page.locator(".jp-Dialog")
        if await dialog.count():
            await dialog.locator("select").select_option(label="Scribe (scribe)")
            await dialog.locator(".jp-Dialog-button:has-text('OK')").click()
        await page.wait_for_selector(agent_form)
        assert await page.inner_text(f"{agent_form} [aria-label='Files to send']") == "notes.py\n×"
        await shots(page, "agent-form-from-context-menu")
        assert console_errors(page) == []


async def test_runs_rows_name_the_agent_keep_their_times_on_one_line_and_draw_the_waiting_icon(lab, shots) -> None:
    api(lab, "POST", "agents", {**coder_agent("namer"), "name": "Namer"})
    (lab.root / "src").mkdir(exist_ok=True)
    (lab.root / "src" / "app.py").write_text("x = 1\n")
    run_id = api(
        lab, "POST", "agents/namer/run", {"prompt": "p", "files": ["src/app.py"], "variables": {"language": "Python"}}
    )["run_id"]
    wait_for_run(lab, run_id, {"waiting"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
        await page.wait_for_selector(row)
        assert "Namer (agent)" in await page.inner_text(f"{row} .clarion-RunName")
        meta = page.locator(f"{row} .clarion-RunRowMeta")
        line = await meta.evaluate("m => parseFloat(getComputedStyle(m).lineHeight) || 16")
        assert (await meta.bounding_box())["height"] < 1.5 * line
        icon = page.locator(f"{row} .clarion-Status-waiting svg")
        box = await icon.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        await shots(page, "agent-row")
        await page.click(row)
        await page.wait_for_selector(f"li.lm-TabBar-tab[data-id='clarion-run-{run_id}']:has-text('Namer (agent)')")
        await change_theme(page, DARK_THEME)
        await show_tab(page, "Runs")
        await shots(page, "agent-row-dark")
        await change_theme(page, "JupyterLab Light")
        api(lab, "POST", f"runs/{run_id}/cancel")
        assert console_errors(page) == []


async def test_run_with_clarion_on_a_yaml_file_that_is_no_workflow_says_what_is_wrong(lab, shots) -> None:
    (lab.root / "settings.yaml").write_text("colour: blue\n")
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await select_in_file_browser(page, "settings.yaml")
        await page.click(".jp-DirListing-item.jp-mod-selected", button="right")
        await page.click(".lm-Menu-itemLabel:text-is('Run with Clarion')")
        text = await (await wait_for_toast(page, "error")).inner_text()
        assert "settings.yaml is not a workflow Clarion can run" in text and "colour" in text
        await shots(page, "refused")
        assert "settings" not in [w["id"] for w in api(lab, "GET", "workflows")["workflows"]]
