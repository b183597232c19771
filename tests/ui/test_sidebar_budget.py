"""A run's budget in the sidebar's run detail (spent against the limit, live as the run's LLM
calls settle, and the call the budget refused) and in a notebook cell's widget, in the light
and the dark theme."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from clarion_jupyter.testing.browser import DARK_THEME, chromium, open_lab

from .conftest import api, wait_for_run
from .pages import SIDEBAR, change_theme, console_errors, open_sidebar, run_detail, wait_status

AGENT = {
    "id": "budgeted",
    "name": "Budgeted",
    "model": "gpt-4o-mini",
    "system_prompt": "Be brief.",
    "parameters": {"mock_response": "ok", "max_tokens": 100},
}
"""litellm answers offline (``mock_response``: 10 prompt and 20 reply tokens, priced as
gpt-4o-mini); ``max_tokens`` bounds each call's worst case."""


def with_agent(lab) -> None:
    """The agent, created by whichever of the module's tests runs first."""
    with contextlib.suppress(urllib.error.HTTPError):  # 409: it exists
        api(lab, "POST", "agents", AGENT)


CALL = "    task: llm_call\n    with: {agent: budgeted, prompt: Say ok}\n"


def budgeted(limit: int) -> str:
    return (
        f"id: budgeted\nname: Budgeted\nbudget: {{tokens: {limit}, usd: 0.01}}\nsteps:\n"
        f"  - id: first\n{CALL}"
        "  - id: hold\n    task: shell\n    with: {command: 'while [ -f hold.flag ]; do sleep 0.05; done'}\n"
        f"  - id: second\n{CALL}  - id: third\n{CALL}"
    )


async def test_the_run_detail_shows_spent_against_the_budget_live_and_the_refused_call(lab, shots) -> None:
    with_agent(lab)
    flag = lab.root / "hold.flag"
    flag.touch()
    # Each call spends 30 tokens and reserves its prompt (0 < p < 30 tokens) + 100 first: the
    # second one's worst case fits after 30 spent (30 + 130 <= 160), the third's not after 60.
    api(lab, "POST", "workflows", yaml=budgeted(160))
    run_id = api(lab, "POST", "workflows/budgeted/run", {})["run_id"]
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']")
        detail = run_detail(run_id)
        budget = f"{detail} .clarion-Budget .clarion-BudgetText"
        await page.wait_for_selector(f"{budget}:has-text('30 of 160 tokens spent')", timeout=30_000)
        assert "of $0.01" in await page.text_content(budget)
        meter = f"{detail} .clarion-BudgetBar"
        assert await page.get_attribute(meter, "aria-valuenow") == "19"  # 30 of 160
        await shots(page, "light-while-it-runs")

        await asyncio.to_thread(flag.unlink)
        await wait_status(page, detail, "failed")
        await page.wait_for_selector(f"{budget}:has-text('60 of 160 tokens spent')")
        assert await page.get_attribute(meter, "aria-valuenow") == "38"
        run = wait_for_run(lab, run_id, {"failed"})
        third = next(s for s in run["steps"] if s["key"] == "third")
        assert third["error"]["code"] == "budget_exceeded"
        assert run["budget"]["spent_tokens"] == 60 and run["budget"]["reserved_tokens"] == 0
        await page.click(f"{detail} .clarion-Node[data-step='third']")
        panel = f"{detail} [data-step-panel='third'] .clarion-RunError"
        await page.wait_for_selector(f"{panel}:has-text('budget_exceeded')")
        assert "the call was not made" in await page.text_content(panel)
        await page.locator(f"{detail} .clarion-Facts").first.scroll_into_view_if_needed()
        await shots(page, "light")

        await change_theme(page, DARK_THEME)
        await shots(page, "dark")
        await change_theme(page, "JupyterLab Light")
        assert console_errors(page) == []


async def test_a_notebook_cell_with_a_budget_shows_spent_against_it_in_its_widget(lab, shots) -> None:
    with_agent(lab)
    cell = "%%clarion --budget 0.01 --budget-tokens 160\nname: Widget budget\nsteps:\n" + "".join(
        f"  - id: {name}\n{CALL}" for name in ("first", "second", "third")
    )
    notebook = new_notebook(cells=[new_code_cell("%load_ext clarion_jupyter"), new_code_cell(cell)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, lab.root / "budget.ipynb")
    async with chromium() as browser:
        page = await open_lab(browser, lab, "lab/tree/budget.ipynb")
        await page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        await page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        await page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        await page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        await page.wait_for_selector(".clarion-run-header[data-status='failed']", timeout=60_000)
        budget = page.locator(".clarion-budget[data-role='budget']")
        await page.wait_for_selector(".clarion-budget:has-text('60 of 160 tokens spent')")
        assert "of $0.01" in await budget.inner_text()
        await page.wait_for_selector(".clarion-step[data-key='third'][data-status='failed']")
        await budget.scroll_into_view_if_needed()
        await shots(page, "light")
        await change_theme(page, DARK_THEME)
        await shots(page, "dark")
        await change_theme(page, "JupyterLab Light")
        assert console_errors(page) == []
