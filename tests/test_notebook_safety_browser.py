"""JupyterLab in headless Chromium, with what models, steps and documents produce rendered in
the notebook: script-bearing payloads in an agent's Markdown reply, in JSON reply values, in
file-change paths and contents (the diff), in step outputs, error messages and a workflow's
name run no JavaScript (a dialog listener would see an ``alert``), live in the widgets and in
the notebook saved and opened again. And the widget's buttons act while their cell blocks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout

from clarion_jupyter.testing.browser import chromium, lab_server, open_lab, run_all_cells, write_notebook

pytestmark = pytest.mark.timeout(420)

ALERT = "alert(document.domain)"
PAYLOADS = [
    f"<script>{ALERT}</script>",
    f"<img src=x onerror={ALERT}>",
    f"<details open ontoggle={ALERT}>",
    f'<iframe src="javascript:{ALERT}"></iframe>',
    f"<svg onload={ALERT}>",
]
PAYLOAD = " ".join(PAYLOADS)
MARKDOWN_REPLY = f'# Reply\n\n{PAYLOAD}\n\n[click me](javascript:{ALERT})\n\n<a href="javascript:{ALERT}">raw link</a>'
JSON_REPLY = {
    "summary": PAYLOAD,
    "file_changes": [{"action": "create", "path": "x<img src=x onerror=alert(1)>.py", "new_content": PAYLOAD}],
}
DANGEROUS = ", ".join(
    f".jp-OutputArea {selector}"
    for selector in ("script", "iframe", "img[src='x']", "[onerror]", "[ontoggle]", "[onload]", "a[href^='javascript']")
)
"""What a payload would have become, had it been rendered as HTML."""


def agent_cell(agent_id: str, reply: Any, schema: bool) -> str:
    fields = {"id": agent_id, "name": agent_id, "model": "openai/gpt-4o-mini",
              "parameters": {"mock_response": reply if isinstance(reply, str) else json.dumps(reply)}}  # fmt: skip
    if schema:
        fields["output_schema"] = {"type": "object", "properties": {"summary": {"type": "string"},
                                                                    "file_changes": {"type": "array"}}}  # fmt: skip
    return "%%clarion save-agent\n" + json.dumps(fields)


HOSTILE_WORKFLOW = f"""%%clarion
id: hostile
name: {json.dumps("Hostile <img src=x onerror=alert(1)> <script>alert(2)</script>")}
steps:
  - id: shout
    task: shell
    with: {{command: {json.dumps(f"printf '%s' {json.dumps(PAYLOAD)}")}}}
  - id: fail
    task: shell
    continue_on_error: true
    with: {{command: {json.dumps(f"printf '%s' {json.dumps(PAYLOAD)} >&2; exit 3")}}}
  - id: echo
    task: echo
    with: {{value: {json.dumps(PAYLOAD)}}}
outputs:
  said: "{{{{ steps.echo.output.value }}}}"
"""


async def record_and_dismiss(dialog: Any, dialogs: list[str]) -> None:
    """An ``alert`` a payload ran: noted, and closed so the page goes on."""
    dialogs.append(dialog.message)
    await dialog.dismiss()


async def rendered_safely(page: Any) -> dict[str, Any]:
    """What the outputs hold: elements a payload could have made, and the payload as text."""
    return await page.evaluate(
        """([dangerous, probe]) => ({
            dangerous: [...document.querySelectorAll(dangerous)].map(e => e.outerHTML.slice(0, 200)),
            text: [...document.querySelectorAll('.jp-OutputArea')].map(e => e.innerText).join('\\n').includes(probe),
        })""",
        [DANGEROUS, "<img src=x onerror="],
    )


async def test_payloads_from_models_steps_and_documents_render_as_text_live_and_reopened(tmp_path: Path) -> None:
    server = lab_server(tmp_path)
    write_notebook(server.root, "hostile.ipynb", [
        "%load_ext clarion_jupyter",
        agent_cell("writer", MARKDOWN_REPLY, schema=False),
        "%%clarion agent writer --apply never\nWrite something",
        agent_cell("coder", JSON_REPLY, schema=True),
        "%%clarion agent coder --no-wait\nChange something",
        HOSTILE_WORKFLOW,
        "_",
    ])  # fmt: skip
    dialogs: list[str] = []
    with server:
        await server.wait_ready()
        async with chromium() as browser:
            page = await open_lab(browser, server, "lab/tree/hostile.ipynb")
            page.on("dialog", lambda dialog: record_and_dismiss(dialog, dialogs))
            try:
                await run_all_cells(page)
                await page.locator(".clarion-run-header[data-status='succeeded']").nth(1).wait_for(timeout=90_000)
                await page.locator(".clarion-run-header[data-status='waiting']").first.wait_for(timeout=60_000)
                await page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
                await page.locator(".clarion-step[data-key='shout'] summary").first.click()
                await page.locator(".clarion-step[data-key='fail'] summary").first.click()
                await page.locator(".clarion-markdown a:text-is('click me')").first.click()
                live = await rendered_safely(page)
                headings = await page.locator(".clarion-markdown h1:text-is('Reply')").count()
                await page.keyboard.press("Control+s")
                await page.wait_for_timeout(1500)
                await page.reload()
                await page.locator(".clarion-run-header").first.wait_for(timeout=60_000)
                await page.wait_for_timeout(3000)
                reopened = await rendered_safely(page)
            finally:
                await page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)
    assert dialogs == []
    assert live == {"dangerous": [], "text": True}
    assert headings >= 1, "the Markdown reply is rendered as Markdown, not as its source"
    assert reopened["dangerous"] == []


CHANGE = {
    "summary": "adds a file",
    "file_changes": [{"action": "create", "path": "applied.txt", "new_content": "hello\n"}],
}
BUTTON_CELLS = [
    "%load_ext clarion_jupyter",
    agent_cell("coder", CHANGE, schema=True),
    "%%clarion\nname: Cancel me\nsteps:\n  - {id: nap, task: shell, with: {command: 'sleep 20'}}",
    "%%clarion\nname: Approve me\nsteps:\n  - {id: gate, task: echo, approval: true, with: {value: 1}}",
    "%%clarion\nname: Reject me\nsteps:\n  - {id: gate, task: echo, approval: true, with: {value: 1}}",
    "%%clarion agent coder\nDiscard this",
    "%%clarion agent coder\nApply this",
    "print('all cells ran')",
]


async def click_in_cell(server: Any, page: Any, index: int, ready: str, button: str, done: str) -> float:
    """Waits for ``ready`` in cell ``index``, clicks ``button`` there; seconds until ``done`` shows.
    A wait that times out says what the cell, the server's runs and its log showed."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    try:
        await cell.locator(ready).first.wait_for(timeout=90_000)
        started = time.monotonic()
        await cell.locator(button).first.click()
        await cell.locator(done).first.wait_for(timeout=30_000)
    except PlaywrightTimeout as exc:
        runs = [(r["workflow_name"], r["status"]) for r in (await server.request("GET", "runs?limit=50"))["runs"]]
        raise AssertionError(
            f"cell {index}: {exc}\ncell text: {await cell.inner_text()}\nruns: {runs}\nlog:\n{server.log_tail()}"
        ) from None
    return time.monotonic() - started


async def test_the_widget_buttons_act_while_their_cell_blocks_and_the_cell_goes_on(tmp_path: Path) -> None:
    server = lab_server(tmp_path)
    write_notebook(server.root, "buttons.ipynb", BUTTON_CELLS)
    header = ".clarion-run-header[data-status='{}']"
    with server:
        await server.wait_ready()
        async with chromium() as browser:
            page = await open_lab(browser, server, "lab/tree/buttons.ipynb")
            try:
                await run_all_cells(page)
                took = {
                    "cancel": await click_in_cell(server, page, 2, ".clarion-step[data-key='nap'][data-status='running']",
                                                          "button:has-text('Cancel')", header.format("cancelled")),
                    "approve": await click_in_cell(server, page, 3, "button:has-text('Approve gate')",
                                                           "button:has-text('Approve gate')", header.format("succeeded")),
                    "reject": await click_in_cell(server, page, 4, "button:has-text('Reject')",
                                                          "button:has-text('Reject')", header.format("failed")),
                    "discard": await click_in_cell(server, page, 5, "button:has-text('Discard'):visible",
                                                           "button:has-text('Discard'):visible", ".clarion-discarded"),
                    "apply": await click_in_cell(server, page, 6, "button:has-text('Apply'):visible",
                                                         "button:has-text('Apply'):visible", header.format("succeeded")),
                }  # fmt: skip
                await page.get_by_text("all cells ran", exact=True).wait_for(timeout=30_000)
            finally:
                await page.screenshot(path=str(tmp_path / "buttons.png"), full_page=True)
            runs = {run["workflow_name"]: run for run in (await server.request("GET", "runs?limit=50"))["runs"]}
    print("seconds from click to the widget showing the outcome:", took)
    assert all(seconds < 1.0 for seconds in took.values()), took
    assert runs["Cancel me"]["status"] == "cancelled"
    assert (server.root / "applied.txt").read_text() == "hello\n"
