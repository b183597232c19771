"""The Run agent form shows what would be sent (files, tokens, the cap) before anything is sent,
and a context over its cap sends nothing and starts no run."""

from __future__ import annotations

import json

from clarion_jupyter.testing.browser import chromium

from .conftest import api
from .pages import SIDEBAR, open_sidebar, shot_in_dark, show_sidebar

REPLY = json.dumps({"summary": "Nothing to change.", "file_changes": []})


def reader(agent_id: str, max_tokens: int) -> dict:
    return {
        "id": agent_id,
        "name": f"Reader {agent_id}",
        "model": "openai/gpt-4o-mini",
        "parameters": {"mock_response": REPLY},
        "context": {"include_globs": ["pkg/*.py"], "max_tokens": max_tokens},
    }


async def fill_form(page, agent_id: str) -> str:
    await show_sidebar(page, "Agents")
    await page.click(f"{SIDEBAR} [data-agent='{agent_id}'] button:has-text('Run agent')")
    form = f"{SIDEBAR} form[aria-label='Run Reader {agent_id}']"
    await page.wait_for_selector(form)
    await page.fill(f"{form} textarea", "Review the package.")
    return form


async def test_the_form_lists_the_files_and_tokens_before_the_run(lab, shots) -> None:
    (lab.root / "pkg").mkdir(exist_ok=True)
    (lab.root / "pkg" / "small.py").write_text("x = 1\n")
    (lab.root / "pkg" / "large.py").write_text("value = 'a fairly long line of code'\n" * 40)
    api(lab, "POST", "agents", reader("within", 100_000))
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        form = await fill_form(page, "within")
        await page.click(f"{form} button:has-text('Show what is sent')")
        preview = f"{form} [aria-label='What is sent']"
        await page.wait_for_selector(preview)
        text = await page.inner_text(preview)
        assert "2 files" in text and "of 100,000 allowed" in text and "gpt-4o-mini" in text
        listed = await page.inner_text(f"{preview} [aria-label='Context files']")
        assert listed.index("pkg/large.py") < listed.index("pkg/small.py")  # largest first
        await shots(page, "preview")
        await shot_in_dark(page, shots, "preview-dark")


async def test_a_context_over_its_cap_sends_nothing(lab, shots) -> None:
    (lab.root / "pkg").mkdir(exist_ok=True)
    (lab.root / "pkg" / "large.py").write_text("value = 'a fairly long line of code'\n" * 200)
    api(lab, "POST", "agents", reader("capped", 50))
    before = len(api(lab, "GET", "runs?workflow_id=agent-run")["runs"])
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        form = await fill_form(page, "capped")
        await page.click(f"{form} button[type=submit]")
        error = f"{form} .clarion-Error"
        await page.wait_for_selector(error)
        message = await page.inner_text(error)
        assert message.startswith("nothing was sent: the codebase context is") and "over its cap of 50" in message
        await shots(page, "over-cap")
    assert len(api(lab, "GET", "runs?workflow_id=agent-run")["runs"]) == before
