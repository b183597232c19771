"""Flows more than one test module walks through (the plain Lab, and the dark one under a base URL)."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Lab, Shots, api
from .pages import DETAIL, SIDEBAR, run_detail, select_in_file_browser, show_sidebar, wait_status

ORIGINAL = 'def greet(name):\n    print("hi " + name)\n'
CHANGED = 'def greet(name: str) -> None:\n    print(f"hello {name}")\n'
FILE_OPERATIONS = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "file_changes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["create", "modify", "delete"]},
                    "path": {"type": "string"},
                    "new_content": {"type": "string"},
                },
                "required": ["action", "path", "new_content"],
            },
        },
    },
    "required": ["summary", "file_changes"],
}


def coder_agent(agent_id: str = "coder") -> dict[str, Any]:
    """An agent whose model is litellm's mock: its reply changes ``src/app.py``."""
    reply = {
        "summary": "Typed greet and used an f-string.",
        "file_changes": [{"action": "modify", "path": "src/app.py", "new_content": CHANGED}],
    }
    return {
        "id": agent_id,
        "name": "Coder",
        "model": "openai/gpt-4o-mini",
        "system_prompt": "You improve {{ language }} code.",
        "parameters": {"mock_response": json.dumps(reply)},
        "output_schema": FILE_OPERATIONS,
        "user_variables": [{"name": "language", "description": "The code's language", "required": True}],
    }


async def run_agent_and_apply(page: Any, lab: Lab, shots: Shots) -> str:
    """Selects src/app.py in the file browser, runs the Coder agent on it from the Agents view,
    reviews the diff and applies it; returns the run id."""
    (lab.root / "src").mkdir(exist_ok=True)
    (lab.root / "src" / "app.py").write_text(ORIGINAL)
    api(lab, "POST", "agents", coder_agent())
    await select_in_file_browser(page, "src", "app.py")
    await show_sidebar(page, "Agents")
    await page.click(f"{SIDEBAR} [data-agent='coder'] button:has-text('Run agent')")
    form = f"{SIDEBAR} form[aria-label='Run Coder']"
    await page.wait_for_selector(form)
    assert await page.inner_text(f"{form} [aria-label='Files to send']") == "src/app.py\n×"
    await page.fill(f"{form} textarea", "Add type hints and use an f-string.")
    await page.fill(f"{form} input[id$='-var-language']", "Python")
    await shots(page, "agent-form")
    await page.click(f"{form} button[type=submit]")

    # Lab restores the run tabs earlier tests left open: the one reviewing is this run's.
    detail = f"{DETAIL}:has([data-approval='apply'])"
    card = f"{detail} [data-approval='apply']"
    await page.wait_for_selector(card, timeout=60_000)
    run_id = await page.get_attribute(detail, "data-run-id")
    text = await page.inner_text(card)
    assert "src/app.py" in text and "modify" in text
    assert '+    print(f"hello {name}")' in text and '-    print("hi " + name)' in text
    await shots(page, "agent-diff")
    await page.click(f"{card} button:has-text('Apply')")
    await wait_status(page, run_detail(run_id), "succeeded")
    await shots(page, "agent-applied")
    assert (lab.root / "src" / "app.py").read_text() == CHANGED
    return run_id
