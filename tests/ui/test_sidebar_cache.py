"""The run detail marks a step the LLM cache answered with a small "cached" badge, in the
light and the dark theme; the call that filled the cache has none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.browser import DARK_THEME, chromium

from .conftest import api, wait_for_run
from .pages import SIDEBAR, change_theme, console_errors, open_sidebar, run_detail, wait_status

ASK = {
    "id": "cached-ask",
    "name": "Ask twice",
    "steps": [{"id": "ask", "task": "llm_call", "with": {"agent": "cache-asker", "prompt": "What is the answer?"}}],
}


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(reply="The answer is 42.") as server:
        yield server


async def open_step(page, run_id: str) -> str:
    """The run's detail, with its ``ask`` step chosen; the step panel's selector."""
    await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']")
    detail = run_detail(run_id)
    await wait_status(page, detail, "succeeded")
    await page.click(f"{detail} .clarion-Node[data-step='ask']")
    panel = f"{detail} [data-step-panel='ask']"
    await page.wait_for_selector(panel)
    return panel


async def test_a_step_the_cache_answered_has_a_cached_badge_in_light_and_dark(lab, shots, stub) -> None:
    agent = {"id": "cache-asker", "name": "Cache asker", "model": "openai/fake", "api_base": stub.url}
    api(lab, "POST", "agents", agent)
    first, second = (
        wait_for_run(lab, api(lab, "POST", "runs", {"workflow": ASK, "cache": True})["run_id"], {"succeeded"})
        for _ in range(2)
    )
    assert stub.request_count == 1
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        paid = await open_step(page, first["run_id"])
        assert await page.locator(f"{paid} .clarion-Cached").count() == 0
        free = await open_step(page, second["run_id"])
        badge = page.locator(f"{free} h3 .clarion-Cached")
        await badge.wait_for()
        assert await badge.inner_text() == "cached"
        assert "no model call" in (await badge.get_attribute("title") or "")
        await shots(page, "light")
        await change_theme(page, DARK_THEME)
        await badge.wait_for()
        await shots(page, "dark")
        await change_theme(page, "JupyterLab Light")
        assert console_errors(page) == []
