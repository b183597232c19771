"""A real headless Chromium on a real JupyterLab, for the sidebar's and the widget's UI tests.

The machines have Debian's Chromium at ``/usr/bin/chromium`` and no browser downloads, so
Playwright is pointed at that binary. :func:`open_lab` opens JupyterLab with the server's
token, waits for the shell, and keeps the news toast out of screenshots.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .server import JupyterServerProcess

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = os.environ.get("CLARION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
QUIET_NOTIFICATIONS = {"fetchNews": "false", "checkForUpdates": False}
"""No news toast and no update check: both reach outside and cover screenshots."""
DARK_THEME = "JupyterLab Dark"


def lab_server(workdir: Path, *, theme: str | None = None, **kwargs: Any) -> JupyterServerProcess:
    """A ``jupyter lab`` process with the extension, quiet as a test needs it, with its own user
    settings (``theme``, e.g. :data:`DARK_THEME`, is set there as a user's choice would be)."""
    settings = Path(workdir) / "lab-settings"
    apputils = settings / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True, exist_ok=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps(QUIET_NOTIFICATIONS))
    if theme is not None:
        (apputils / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    env = {"JUPYTERLAB_SETTINGS_DIR": str(settings), **kwargs.pop("env", {})}
    return JupyterServerProcess(workdir, app="jupyterlab", env=env, **kwargs)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


async def open_lab(
    browser: Browser,
    server: JupyterServerProcess,
    path: str = "lab",
    *,
    viewport: tuple[int, int] = (1400, 900),
) -> Page:
    """A page showing JupyterLab (``path`` below the server's base URL), its shell ready.
    Console errors are collected on ``page.console_errors`` for tests to check."""
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.console_errors = errors  # type: ignore[attr-defined]
    await page.goto(f"{server.url}{path}?token={server.token}")
    await page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    return page


def write_notebook(root: Path, name: str, cells: list[str]) -> Path:
    """A notebook of code ``cells`` for the ipykernel Python 3 kernel, saved as ``root/name``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    root.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, root / name)
    return root / name


async def run_all_cells(page: Page) -> None:
    """Run > Run All Cells in the notebook a page shows, once its kernel is idle."""
    await page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    await page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
    await page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    await page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
