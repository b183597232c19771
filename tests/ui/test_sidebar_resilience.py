"""What the sidebar does when things go wrong or grow: a server restart, a server without the
Clarion extension, and a long run history."""

from __future__ import annotations

import time

from clarion_jupyter.testing.browser import chromium, lab_server, open_lab

from .conftest import Lab, api, start_lab, wait_for_run, wait_until_up
from .pages import SIDEBAR, SIDEBAR_TAB, console_errors, open_sidebar, wait_status
from .test_sidebar import LONG
from .test_sidebar_hub import HELLO

ECHO = {"id": "echo", "name": "Echo", "steps": [{"id": "say", "task": "echo", "with": {"value": "hi"}}]}


async def test_after_a_server_restart_the_sidebar_reconnects_and_catches_up(tmp_path, shots) -> None:
    lab = start_lab(tmp_path)
    try:
        api(lab, "POST", "workflows", LONG)
        run_id = api(lab, "POST", "workflows/long/run", {})["run_id"]
        async with chromium() as browser:
            page = await open_sidebar(browser, lab)
            row = f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"
            await wait_status(page, row, "running")

            lab.server.stop()
            await page.wait_for_selector(f"{SIDEBAR} .clarion-Connection-reconnecting")
            await shots(page, "reconnecting")
            lab.server.start()
            wait_until_up(lab)
            api(lab, "POST", f"runs/{run_id}/cancel")  # the resumed run ends while the page is away
            await page.wait_for_selector(f"{SIDEBAR} .clarion-Connection-open", timeout=30_000)
            await wait_status(page, row, "cancelled")
            fresh = api(lab, "POST", "workflows/long/run", {})["run_id"]
            await wait_status(page, f"{SIDEBAR} .clarion-RunRow[data-run-id='{fresh}']", "running")
            await shots(page, "caught-up")
            api(lab, "POST", f"runs/{fresh}/cancel")
            # The browser logs the refused reconnection attempts while the server was down.
            assert [e for e in console_errors(page) if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e] == []
    finally:
        lab.server.stop()


async def test_without_the_server_extension_the_sidebar_says_so(tmp_path, shots) -> None:
    server = lab_server(tmp_path, server={"jpserver_extensions": {"clarion_jupyter": False}}).start()
    lab = Lab(server)
    try:
        wait_until_up(lab, "api/status")
        async with chromium() as browser:
            page = await open_lab(browser, lab)
            await page.wait_for_selector(SIDEBAR_TAB)
            if "lm-mod-current" not in (await page.get_attribute(SIDEBAR_TAB, "class") or ""):
                await page.click(SIDEBAR_TAB)
            message = await page.wait_for_selector(f"{SIDEBAR} .clarion-Error", timeout=60_000)
            assert "server extension is not enabled" in await message.inner_text()
            await shots(page, "missing-extension")
    finally:
        server.stop()


async def test_a_long_history_is_paged_into_a_virtualised_list(tmp_path, shots) -> None:
    lab = start_lab(tmp_path)
    try:
        api(lab, "POST", "workflows", ECHO)
        api(lab, "POST", "workflows", HELLO)
        runs = [api(lab, "POST", "workflows/echo/run", {})["run_id"] for _ in range(260)]
        wait_for_run(lab, runs[-1], {"succeeded"})
        hello = api(lab, "POST", "workflows/hello/run", {})["run_id"]
        wait_for_run(lab, hello, {"succeeded"})
        async with chromium() as browser:
            page = await open_sidebar(browser, lab)
            started = time.monotonic()
            await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow[data-run-id='{hello}']")
            assert time.monotonic() - started < 5
            rendered = await page.locator(f"{SIDEBAR} .clarion-RunRow").count()
            assert rendered < 60  # only what is in sight, not 261 rows
            await shots(page, "first-page")

            for _ in range(20):
                await page.eval_on_selector(f"{SIDEBAR} .clarion-RunList", "el => el.scrollTop = el.scrollHeight")
                if await page.locator(f"{SIDEBAR} .clarion-RunRow[data-run-id='{runs[0]}']").count():
                    break
                await page.wait_for_timeout(200)
            await page.wait_for_selector(f"{SIDEBAR} .clarion-RunRow[data-run-id='{runs[0]}']")
            assert await page.locator(f"{SIDEBAR} .clarion-RunRow").count() < 60
            await shots(page, "scrolled-to-the-oldest")

            await page.select_option(f"{SIDEBAR} select[aria-label='Filter by workflow']", "hello")
            await page.wait_for_function(
                "() => { const rows = [...document.querySelectorAll('#clarion-sidebar .clarion-RunRow')];"
                f" return rows.length === 1 && rows[0].dataset.runId === '{hello}'; }}"
            )
            await shots(page, "filtered-by-workflow")
            assert console_errors(page) == []
    finally:
        lab.server.stop()
