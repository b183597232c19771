"""The sidebar as a JupyterHub user gets it: under a base URL of /user/test/ and in the dark theme."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clarion_jupyter.testing.browser import DARK_THEME, chromium

from .conftest import Lab, api, start_lab
from .flows import run_agent_and_apply
from .pages import DETAIL, SIDEBAR, console_errors, open_sidebar, wait_status

HELLO = {
    "id": "hello",
    "name": "Hello",
    "inputs": {"who": {"type": "string", "default": "world"}, "loud": {"type": "boolean", "default": False}},
    "steps": [
        {"id": "pause", "task": "shell", "with": {"command": "sleep 0.5"}},
        {"id": "greet", "task": "echo", "with": {"value": "hello {{ inputs.who }}"}},
    ],
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("hub"), base_url="/user/test/", theme=DARK_THEME)
    try:
        yield lab
    finally:
        lab.server.stop()


async def test_under_a_base_url_in_the_dark_theme_a_workflow_runs_live(lab, shots) -> None:
    api(lab, "POST", "workflows", HELLO)
    async with chromium() as browser:
        page = await open_sidebar(browser, lab, "Workflows")
        assert await page.evaluate("document.body.dataset.jpThemeLight") == "false"
        item = f"{SIDEBAR} [data-workflow='hello']"
        await page.click(f"{item} button:has-text('Run')")
        await page.fill(f"{item} input[type=text]", "hub")
        await shots(page, "run-form")
        await page.click(f"{item} button:has-text('Start run')")
        detail = DETAIL
        await page.wait_for_selector(f"{detail} .clarion-Node[data-step='pause'][data-status='running']")
        await shots(page, "running")
        await wait_status(page, detail, "succeeded")
        await page.click(f"{detail} .clarion-Node[data-step='greet']")
        assert "hello hub" in await page.inner_text(f"{detail} [data-step-panel='greet']")
        await shots(page, "succeeded")
        assert console_errors(page) == []


async def test_under_a_base_url_in_the_dark_theme_an_agent_run_is_reviewed_and_applied(lab, shots) -> None:
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await run_agent_and_apply(page, lab, shots)
        assert console_errors(page) == []
