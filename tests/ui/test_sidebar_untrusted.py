"""Everything the server sends is untrusted in the sidebar: script payloads in every field a
model, a step or a person wrote show as text, and nothing of them runs.

A dialog listener records any ``alert`` a payload would open; the page is also searched for
what a payload would leave behind if it were parsed as HTML (event-handler attributes,
frames, ``javascript:`` links, scripts in Clarion's views).
"""

from __future__ import annotations

import json
from typing import Any

from clarion_jupyter.testing.browser import chromium

from .conftest import api, wait_for_run
from .flows import FILE_OPERATIONS
from .pages import (
    DETAIL,
    SIDEBAR,
    open_run_form,
    open_sidebar,
    run_detail,
    shot_in_dark,
    show_tab,
    wait_for_toast,
    wait_status,
)

PAYLOADS = (
    "<script>alert(1)</script>",
    "<details open ontoggle=alert(1)>",
    '<iframe src="javascript:alert(1)">',
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
)
HOSTILE = " ".join(PAYLOADS)
HOSTILE_FILE = "<img src=x onerror=alert(1)>.md"
"""A file name an agent proposes (a valid name on Linux), shown in the diff view."""

WORKFLOW = {
    "id": "hostile",
    "name": f"Notes {HOSTILE}",
    "description": f"Described as {HOSTILE}",
    "inputs": {"topic": {"type": "string", "default": "x", "description": f"Topic {HOSTILE}"}},
    "steps": [
        {"id": "shout", "task": "echo", "with": {"value": HOSTILE}},
        {
            "id": "write",
            "task": "file_write",
            "approval": {"message": f"Approve {HOSTILE}"},
            "with": {"path": "hostile/notes.md", "content": f"{HOSTILE}\n"},
        },
        {"id": "complain", "task": "shell", "with": {"command": "cat hostile.txt >&2; exit 4"}},
    ],
}
REPLY = {
    "summary": f"**Done.** {HOSTILE}",
    "file_changes": [{"action": "create", "path": HOSTILE_FILE, "new_content": f"{HOSTILE}\n"}],
}
AGENT = {
    "id": "hostile-agent",
    "name": f"Agent {PAYLOADS[3]}",
    "description": f"Agent described as {HOSTILE}",
    "model": "openai/gpt-4o-mini",
    "system_prompt": "You write notes.",
    "parameters": {"mock_response": json.dumps(REPLY)},
    "output_schema": FILE_OPERATIONS,
}

LEFTOVERS = """() => ({
  handlers: document.querySelectorAll('[onerror], [ontoggle], [onload], [onclick]').length,
  frames: document.querySelectorAll('iframe').length,
  links: document.querySelectorAll('a[href^="javascript"]').length,
  scripts: document.querySelectorAll(
    '#clarion-sidebar script, .clarion-RunDetail script, .jp-Notification-Toast script, .jp-Dialog script'
  ).length
})"""
"""What a payload parsed as HTML would have left in the page."""
NOTHING_LEFT = {"handlers": 0, "frames": 0, "links": 0, "scripts": 0}


async def open_watched(browser: Any, lab: Any, tab: str) -> tuple[Any, list[str]]:
    """The sidebar, with every dialog a payload would open recorded (and dismissed)."""
    page = await open_sidebar(browser, lab, tab)
    dialogs: list[str] = []

    async def record(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record)
    return page, dialogs


async def test_payloads_in_workflows_steps_approvals_and_errors_show_as_text_and_run_nothing(lab, shots) -> None:
    (lab.root / "hostile.txt").write_text(HOSTILE)
    api(lab, "POST", "workflows", WORKFLOW)
    async with chromium() as browser:
        page, dialogs = await open_watched(browser, lab, "Workflows")
        item = await open_run_form(page, "hostile")
        text = await page.inner_text(item)
        assert f"Notes {HOSTILE}" in text and f"Described as {HOSTILE}" in text and f"Topic {HOSTILE}" in text
        await shots(page, "workflow-form")
        await page.click(f"{item} button:has-text('Start run')")

        card = f"{DETAIL} [data-approval='write']"
        await page.wait_for_selector(card, timeout=60_000)
        run_id = await page.get_attribute(DETAIL, "data-run-id")
        assert f"Approve {HOSTILE}" in await page.inner_text(card)
        assert HOSTILE[:60] in await (await wait_for_toast(page, "warning")).inner_text()
        await page.click(f"{DETAIL} .clarion-Node[data-step='shout']")
        assert json.dumps(HOSTILE) in await page.inner_text(
            f"{DETAIL} [data-step-panel='shout']"
        )  # the output, as JSON
        assert f"Notes {HOSTILE}" in await page.inner_text(f"li.lm-TabBar-tab[data-id='clarion-run-{run_id}']")
        await shots(page, "approval-and-output")
        assert await page.evaluate(LEFTOVERS) == NOTHING_LEFT

        await page.click(f"{card} button:has-text('Approve')")
        await wait_status(page, run_detail(run_id), "failed")
        await page.click(f"{run_detail(run_id)} .clarion-Node[data-step='complain']")
        assert json.dumps(HOSTILE) in await page.inner_text(
            f"{run_detail(run_id)} [data-step-panel='complain'] .clarion-RunError"
        )
        await shots(page, "step-error")
        await show_tab(page, "Runs")
        assert f"Notes {HOSTILE}" in await page.inner_text(f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']")
        await shot_in_dark(page, shots, "step-error-dark")
        assert await page.evaluate(LEFTOVERS) == NOTHING_LEFT
        assert dialogs == []


async def test_an_agents_markdown_reply_is_sanitised_and_its_names_and_diff_are_text(lab, shots) -> None:
    api(lab, "POST", "agents", AGENT)
    run_id = api(lab, "POST", "agents/hostile-agent/run", {"prompt": "Write notes", "apply": "review"})["run_id"]
    wait_for_run(lab, run_id, {"waiting"})
    async with chromium() as browser:
        page, dialogs = await open_watched(browser, lab, "Agents")
        agent = f"{SIDEBAR} [data-agent='hostile-agent']"
        await page.wait_for_selector(agent)
        assert f"Agent described as {HOSTILE}" in await page.inner_text(agent)
        await shots(page, "agents")

        await show_tab(page, "Runs")
        row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
        await page.click(row)
        assert f"Agent {PAYLOADS[3]} (agent)" in await page.inner_text(row)
        detail = run_detail(run_id)
        reply = page.locator(f"{detail} .clarion-Reply .clarion-Markdown")
        await reply.wait_for()
        # Rendered as Markdown by Lab (bold is bold) with the HTML sanitised away.
        assert await reply.locator("strong").inner_text() == "Done."
        assert await reply.locator("script, iframe, [onerror], [ontoggle], a[href^='javascript']").count() == 0
        card = f"{detail} [data-approval='apply']"
        diff = await page.inner_text(card)
        assert HOSTILE_FILE in diff and f"+{HOSTILE}" in diff
        await shots(page, "reply-and-diff")
        await shot_in_dark(page, shots, "reply-and-diff-dark")
        assert await page.evaluate(LEFTOVERS) == NOTHING_LEFT
        assert dialogs == []
