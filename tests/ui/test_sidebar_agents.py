"""Agents edited as YAML from the Agents view, like workflows (issue 18, point 11), and the runs
of a Clarion v2 database imported while the sidebar is open (point 9): they appear live, their
workflow joins the Runs filter, and each opens with its agent and prompt."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from clarion_jupyter import Engine
from clarion_jupyter.testing.browser import DARK_THEME, chromium, lab_server
from clarion_jupyter.testing.clarion_v2 import v2_agent, v2_run, write_clarion_db

from .conftest import Lab, api, wait_until_up
from .flows import coder_agent
from .pages import (
    DETAIL,
    SIDEBAR,
    change_theme,
    console_errors,
    open_palette,
    open_sidebar,
    shot_in_dark,
    show_tab,
)

AGENT_EDITOR = ".jp-MainAreaWidget.clarion-AgentEditor:not(.lm-mod-hidden)"
"""The agent editor in front."""
PROMPT = "You improve {{ language }} code."
V2_WORKFLOW_NAME = "Clarion v2 agent run (imported)"


async def editor_text(page, editor: str) -> str:
    """The editor's text, line by line as CodeMirror shows it (the documents here fit on screen)."""
    lines = await page.locator(f"{editor} .cm-content .cm-line").all_inner_texts()
    return "\n".join(lines).rstrip("\n") + "\n"


async def replace_text(page, editor: str, text: str) -> None:
    """Selects all of the editor's text and types ``text`` in its place."""
    await page.click(f"{editor} .cm-content")
    await page.keyboard.press("Control+a")
    await page.keyboard.insert_text(text)


def editor_tab(label: str) -> str:
    return f"li.lm-TabBar-tab:has(.lm-TabBar-tabLabel:text-is('{label}'))"


async def test_an_agents_model_and_prompt_are_edited_as_yaml_an_invalid_edit_is_marked_and_nothing_is_lost(
    lab, shots
) -> None:
    api(lab, "POST", "agents", coder_agent())
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Agents")
        await page.click(f"{SIDEBAR} [data-agent='coder'] button:has-text('Edit as YAML')")
        await page.wait_for_selector(f"{AGENT_EDITOR} .cm-content")
        text = await editor_text(page, AGENT_EDITOR)
        assert "model: openai/gpt-4o-mini" in text and f"system_prompt: {PROMPT}" in text
        assert "api_key_env: null" in text and "api_base: null" in text  # every field, to fill in
        tab = editor_tab("coder.agent.yaml")
        assert "jp-mod-dirty" not in (await page.get_attribute(tab, "class") or "")
        await shots(page, "opened")

        invalid = text.replace("api_key_env: null", "api_key_env: HOME")
        await replace_text(page, AGENT_EDITOR, invalid)
        await page.wait_for_selector(f"{tab}.jp-mod-dirty")  # Lab's unsaved-changes dot
        await page.keyboard.press("Control+s")
        problems = await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Problems")
        line = invalid.splitlines().index("api_key_env: HOME") + 1
        listed = await problems.inner_text()
        assert f"api_key_env (line {line})" in listed and "may not be used as an API key" in listed
        assert await page.inner_text(f"{AGENT_EDITOR} .cm-lintRange-error") == "api_key_env: HOME"
        assert api(lab, "GET", "agents/coder")["api_key_env"] is None
        await page.wait_for_selector(f"{tab}.jp-mod-dirty")  # still unsaved
        await shots(page, "invalid")
        await shot_in_dark(page, shots, "invalid-dark")

        broken = text.replace("model: openai/gpt-4o-mini", "model: [openai/gpt-4.1")
        await replace_text(page, AGENT_EDITOR, broken)
        await page.click(f"{AGENT_EDITOR} .jp-Toolbar-item:has-text('Save')")
        await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Problems:has-text('not valid YAML')")
        assert await page.locator(f"{AGENT_EDITOR} .cm-lint-marker-error").count() == 1
        await shots(page, "not-yaml")

        edited = text.replace("model: openai/gpt-4o-mini", "model: openai/gpt-4.1").replace(
            f"system_prompt: {PROMPT}", "system_prompt: |-\n  You review {{ language }} code.\n  Be brief."
        )
        await replace_text(page, AGENT_EDITOR, edited)
        await page.keyboard.press("Control+s")
        await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Saved")
        await page.wait_for_selector(f"{tab}:not(.jp-mod-dirty)")
        assert await page.locator(f"{AGENT_EDITOR} .cm-lint-marker-error").count() == 0
        stored = api(lab, "GET", "agents/coder")
        assert stored["model"] == "openai/gpt-4.1"
        assert stored["system_prompt"] == "You review {{ language }} code.\nBe brief."
        original = coder_agent()
        assert stored["output_schema"] == original["output_schema"]
        assert stored["parameters"] == original["parameters"]
        assert [v["name"] for v in stored["user_variables"]] == ["language"]
        item = f"{SIDEBAR} [data-agent='coder']"
        await page.wait_for_selector(f"{item}:has-text('openai/gpt-4.1')")  # the list read it again
        await shots(page, "saved")
        await shot_in_dark(page, shots, "saved-dark")
        # The browser logs the refused saves itself; nothing else may fail.
        assert [e for e in console_errors(page) if "status of 4" not in e] == []


async def test_a_new_agent_is_written_in_the_editor_and_saved_then_edited_in_place(lab, shots) -> None:
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Agents")
        await page.click(f"{SIDEBAR} button:has-text('New agent')")
        await page.wait_for_selector(f"{AGENT_EDITOR} .cm-content")
        text = await editor_text(page, AGENT_EDITOR)
        assert "name: New agent" in text and "api_key_env: OPENAI_API_KEY" in text
        await shots(page, "new")

        await replace_text(page, AGENT_EDITOR, text.replace("name: New agent", "name: Release Scribe"))
        await page.keyboard.press("Control+s")
        await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Saved")
        tab = editor_tab("release-scribe.agent.yaml")
        await page.wait_for_selector(tab)
        created = api(lab, "GET", "agents/release-scribe")
        assert (created["name"], created["api_key_env"]) == ("Release Scribe", "OPENAI_API_KEY")
        await page.wait_for_selector(f"{SIDEBAR} [data-agent='release-scribe']")

        # The next save replaces that agent, not a second new one.
        await replace_text(
            page,
            AGENT_EDITOR,
            text.replace("name: New agent", "name: Release Scribe").replace("description: null", "description: Notes"),
        )
        # The edit takes the first save's "Saved." away; only then is one seen the second save's.
        await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Saved", state="detached")
        await page.keyboard.press("Control+s")
        await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Saved")
        assert api(lab, "GET", "agents/release-scribe")["description"] == "Notes"
        assert [a["id"] for a in api(lab, "GET", "agents")["agents"]].count("release-scribe") == 1
        await shots(page, "created")

        # Unsaved changes are not closed away without a word.
        await replace_text(page, AGENT_EDITOR, text.replace("name: New agent", "name: Changed my mind"))
        await page.click(f"{tab} .lm-TabBar-tabCloseIcon")
        dialog = page.locator(".jp-Dialog")
        await dialog.wait_for()
        assert "unsaved changes" in await dialog.inner_text()
        await shots(page, "close-unsaved")
        await dialog.locator(".jp-Dialog-button:has-text('Discard')").click()
        await page.wait_for_selector(tab, state="detached")
        assert api(lab, "GET", "agents/release-scribe")["name"] == "Release Scribe"

        await open_palette(page, "Clarion: ")  # both actions are commands, as every sidebar action
        labels = await page.locator(".lm-CommandPalette-itemLabel").all_inner_texts()
        assert {"Clarion: New Agent", "Clarion: Edit Agent as YAML…"} <= set(labels)
        assert console_errors(page) == []


def v2_database(path: Path) -> Path:
    """A ``clarion.db`` as v2 wrote it: one agent and two of its runs, one a success with its
    summary and file changes, one an error."""
    editor = v2_agent("basic_editor", "Basic File Editor", system_prompt="You edit files.")
    success = v2_run(
        "run-1714557600123",
        prompt="Fix the greeting typo in hello.py",
        agent=editor,
        summary="Fixed **helo** to hello.",
        file_changes=[{"action": "modify", "path": "hello.py", "new_content": "print('hello')\n"}],
        codebase_paths=["hello.py"],
    )
    failed = v2_run("run-1714557700456", prompt="Rename the module", agent=editor, status="error", error="rate limited")
    project = {"id": "p", "name": "Greeter", "path": "/home/me/greeter", "lastOpenedAt": "", "activeAgentId": ""}
    runs = [("p", success, "2024-05-01 10:00:05"), ("p", failed, "2024-05-01 10:01:42")]
    return write_clarion_db(path, agents=[editor], projects=[project], runs=runs)


def upload_database(lab: Lab, database: Path) -> dict:
    """``POST /api/v3/agents/import`` of a ``clarion.db``, as ``clarion agents import`` sends it."""
    headers = {**lab.headers, "Content-Type": "application/octet-stream"}
    request = urllib.request.Request(
        f"{lab.url}api/v3/agents/import", data=database.read_bytes(), method="POST", headers=headers
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


async def test_runs_of_a_v2_database_imported_meanwhile_appear_live_filter_and_open_with_their_prompt(
    lab, shots, tmp_path
) -> None:
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Runs")
        workflows = f"{SIDEBAR} select[aria-label='Filter by workflow']"
        assert V2_WORKFLOW_NAME not in await page.inner_text(workflows)
        report = upload_database(lab, v2_database(tmp_path / "clarion.db"))
        assert report["runs"]["imported"] == 2

        rows = page.locator(f"{SIDEBAR} .clarion-RunRow:has-text('Basic File Editor (v2 agent run)')")
        await page.wait_for_function("n => document.querySelectorAll(n).length === 2", arg=f"{SIDEBAR} .clarion-RunRow")
        assert await rows.count() == 2
        await page.wait_for_selector(f"{workflows} option:text-is('{V2_WORKFLOW_NAME}')", state="attached")
        await shots(page, "live")
        await page.select_option(workflows, label=V2_WORKFLOW_NAME)
        await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow[data-status='failed']")
        assert await rows.count() == 2

        await page.click(f"{SIDEBAR} .clarion-RunRow[data-status='succeeded']")
        detail = f"{DETAIL}[data-status='succeeded']"
        task = page.locator(f"{detail} .clarion-AgentTask")
        await task.wait_for()
        told = await task.inner_text()
        assert "Basic File Editor" in told and "basic_editor" in told and "run in Clarion v2" in told
        assert "Fix the greeting typo in hello.py" in told and "hello.py" in told
        await page.wait_for_selector(f"{detail} .clarion-Reply:has-text('Fixed helo to hello.')")  # v2's summary
        assert await page.inner_text(f"{detail} .clarion-RunTitle") == "Basic File Editor (v2 agent run)"
        await page.wait_for_selector(f"{detail} .clarion-Node[data-step='reply'][data-status='succeeded']")
        await shots(page, "imported-run")
        await shot_in_dark(page, shots, "imported-run-dark")

        # Its agent says where it came from; the runs' workflow opens read-only.
        await show_tab(page, "Agents")
        await page.wait_for_selector(f"{SIDEBAR} [data-agent='basic_editor']:has-text('from v2')")
        await page.click(f"{SIDEBAR} [data-agent='basic_editor'] button:has-text('Edit as YAML')")
        notice = page.locator(f"{AGENT_EDITOR} .clarion-Notice")
        await notice.wait_for()
        assert "Imported from Clarion v2" in await notice.inner_text()
        assert "extra:" in await editor_text(page, AGENT_EDITOR)
        await shots(page, "imported-agent")
        await show_tab(page, "Workflows")
        await page.click(f"{SIDEBAR} [data-workflow='clarion-v2-agent-run'] button:has-text('Edit as YAML')")
        built_in = ".jp-MainAreaWidget.clarion-WorkflowEditor:not(.lm-mod-hidden)"
        await page.wait_for_selector(f"{built_in} .clarion-Notice:has-text('Read-only')")
        assert await page.is_disabled(f"{built_in} .jp-Toolbar-item:has-text('Save') button")
        await page.wait_for_selector(f"{built_in} .cm-editor.jp-mod-readOnly")
        await shots(page, "built-in-workflow")
        assert console_errors(page) == []


async def test_a_user_who_may_not_change_agents_gets_a_read_only_editor_and_disabled_buttons_that_say_why(
    tmp_path, shots
) -> None:
    workdir = tmp_path / "reader"
    workdir.mkdir()
    async with Engine(workdir / "clarion.duckdb", workspace_root=tmp_path, run_workers=False) as engine:
        await engine.create_agent(coder_agent())
    reader = "clarion_jupyter.testing.authorizers.ClarionReader"
    lab = Lab(lab_server(workdir, server={"authorizer_class": reader}).start())
    try:
        wait_until_up(lab)
        async with chromium() as browser:
            page = await open_sidebar(browser, lab, "Agents")
            for label in ("New agent", "Import v2 agents…"):
                button = page.locator(f"{SIDEBAR} .clarion-Import button:has-text('{label}')")
                await page.wait_for_function("el => el.disabled", arg=await button.element_handle())
                assert "not change them" in await button.get_attribute("title")
            await page.click(f"{SIDEBAR} [data-agent='coder'] button:has-text('Edit as YAML')")
            await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Notice:has-text('Read-only')")
            assert "not change them" in await page.inner_text(f"{AGENT_EDITOR} .clarion-Notice")
            assert await page.is_disabled(f"{AGENT_EDITOR} .jp-Toolbar-item:has-text('Save') button")
            before = await editor_text(page, AGENT_EDITOR)
            await page.click(f"{AGENT_EDITOR} .cm-content")
            await page.keyboard.type("model: mine\n")
            assert await editor_text(page, AGENT_EDITOR) == before
            await page.keyboard.press("Control+s")  # says why, rather than nothing
            await page.wait_for_selector(f"{AGENT_EDITOR} .clarion-Problems:has-text('Read-only')")
            await shots(page, "read-only")
            await change_theme(page, DARK_THEME)
            await shots(page, "read-only-dark")
            assert console_errors(page) == []
    finally:
        lab.server.stop()
