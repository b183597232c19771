"""What the UI tests do in the page, named as a user would say it."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from playwright.async_api import TimeoutError as PlaywrightTimeout

from clarion_jupyter.testing.browser import DARK_THEME, open_lab

SIDEBAR_TAB = "li.lm-TabBar-tab[data-id='clarion-sidebar']"
SIDEBAR = "#clarion-sidebar"
DETAIL = ".jp-MainAreaWidget:not(.lm-mod-hidden) .clarion-RunDetail"
"""The run detail in front (Lab restores the run tabs a page had open: the others are hidden)."""


async def open_sidebar(browser: Any, server: Any, tab: str = "Runs") -> Any:
    """JupyterLab with the Clarion sidebar open on ``tab``, its live socket connected."""
    page = await open_lab(browser, server)
    await page.wait_for_selector(SIDEBAR_TAB)
    # Lab restores the last layout, so the panel may be open already: a click would close it.
    # The splash screen stays until that layout is restored (a click before may be undone).
    await page.wait_for_selector("#jupyterlab-splash", state="detached")
    # Under load Lab may still be settling its layout and undo a click: look, and click again.
    for _ in range(3):
        if await page.is_visible(SIDEBAR):
            break
        await page.click(SIDEBAR_TAB)
        with suppress(PlaywrightTimeout):
            await page.wait_for_selector(SIDEBAR, state="visible", timeout=5_000)
    await page.wait_for_selector(f"{SIDEBAR} .clarion-Connection-open", timeout=30_000)
    await show_tab(page, tab)
    return page


async def show_tab(page: Any, tab: str) -> None:
    await page.click(f"{SIDEBAR} [role=tab]:has-text('{tab}')")


def run_detail(run_id: str) -> str:
    return f".clarion-RunDetail[data-run-id='{run_id}']"


async def wait_status(page: Any, selector: str, status: str, timeout: float = 30_000) -> None:
    await page.wait_for_selector(f"{selector}[data-status='{status}']", timeout=timeout)


def console_errors(page: Any) -> list[str]:
    return list(page.console_errors)


async def select_in_file_browser(page: Any, *path: str) -> None:
    """Opens the file browser and selects ``path`` (folders are entered by double-click)."""
    tab = "li.lm-TabBar-tab[data-id='filebrowser']"
    if "lm-mod-current" not in (await page.get_attribute(tab, "class") or ""):
        await page.click(tab)
    await page.click(".jp-BreadCrumbs-home")
    await page.click("#filebrowser [data-jp-item-name='refresh']")  # files made on disk just now
    for folder in path[:-1]:
        await page.dblclick(f".jp-DirListing-item .jp-DirListing-itemText span:text-is('{folder}')")
    item = f".jp-DirListing-item .jp-DirListing-itemText span:text-is('{path[-1]}')"
    await page.wait_for_selector(item)
    await page.click(item)
    await page.wait_for_selector(
        f".jp-DirListing-item.jp-mod-selected .jp-DirListing-itemText span:text-is('{path[-1]}')"
    )


async def show_sidebar(page: Any, tab: str) -> None:
    if "lm-mod-current" not in (await page.get_attribute(SIDEBAR_TAB, "class") or ""):
        await page.click(SIDEBAR_TAB)
    await show_tab(page, tab)


async def change_theme(page: Any, theme: str) -> None:
    """Settings > Theme > ``theme``, as a user switches it (Lab restyles without a reload)."""
    await page.click(".lm-MenuBar-itemLabel:text-is('Settings')")
    await page.hover(".lm-Menu-itemLabel:text-is('Theme')")
    await page.click(f".lm-Menu-itemLabel:text-is('{theme}')")
    light = "true" if "Light" in theme else "false"
    await page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'")
    await page.wait_for_selector("#jupyterlab-splash", state="detached")


async def confirm_dialog(page: Any, button: str = "Delete") -> str:
    """Lab's confirmation dialog: its text, once ``button`` was pressed."""
    dialog = page.locator(".jp-Dialog")
    await dialog.wait_for()
    text = await dialog.inner_text()
    await dialog.locator(f".jp-Dialog-button:has-text('{button}')").click()
    await dialog.wait_for(state="detached")
    return text


async def open_palette(page: Any, query: str) -> None:
    """View > Activate Command Palette, then ``query`` typed into it. The command toggles the
    palette, one closed just now may still count as open, and under load a focus the menu
    restores late can close one that just opened: ask only while it is hidden, and go on only
    once it holds the query and is still open."""
    palette = page.locator(".lm-CommandPalette-input")
    for _ in range(5):
        if not await palette.is_visible():
            await page.click(".lm-MenuBar-itemLabel:text-is('View')")
            await page.click(".lm-Menu-itemLabel:text-is('Activate Command Palette')")
        with suppress(PlaywrightTimeout):
            await palette.wait_for(state="visible", timeout=3_000)
            await palette.fill(query, timeout=3_000)
            if await palette.is_visible() and await palette.input_value() == query:
                return
    raise AssertionError(f"the command palette did not stay open to take {query!r}")


async def context_menu(page: Any, selector: str, label: str) -> Any:
    """Right-clicks ``selector`` and returns its context menu's enabled item ``label``. Under
    load Lab may close a menu that opened as it settles its layout: look, and open it again."""
    item = page.locator(f".lm-Menu-item:not(.lm-mod-disabled):has(.lm-Menu-itemLabel:text-is('{label}'))")
    for _ in range(2):
        await page.click(selector, button="right")
        with suppress(PlaywrightTimeout):
            await item.wait_for(timeout=5_000)
            return item
        await page.keyboard.press("Escape")
    await page.click(selector, button="right")
    await item.wait_for()
    return item


async def run_command(page: Any, label: str) -> None:
    """Runs a command from Lab's command palette, by its label, as a user would."""
    await open_palette(page, label)
    first = page.locator(".lm-CommandPalette-item.lm-mod-active .lm-CommandPalette-itemLabel")
    assert await first.inner_text() == label
    await page.keyboard.press("Enter")


async def shot_in_dark(page: Any, shots: Any, state: str) -> None:
    """``shots(page, state)`` in the dark theme, then back to the light one."""
    await change_theme(page, DARK_THEME)
    await shots(page, state)
    await change_theme(page, "JupyterLab Light")


async def open_run_form(page: Any, workflow_id: str) -> str:
    """Opens the Run form of a workflow in the Workflows view; the form's item selector."""
    item = f"{SIDEBAR} [data-workflow='{workflow_id}']"
    await page.click(f"{item} button:has-text('Run')")
    await page.wait_for_selector(f"{item} form")
    return item


async def wait_for_toast(page: Any, kind: str, text: str = "") -> Any:
    """Lab's notification toast of ``kind`` (success, error, warning, info) holding ``text``,
    once it has slid fully into the window (so a screenshot shows it whole)."""
    toast = page.locator(f".jp-Notification-Toast-{kind}:has-text('{text}')")
    await toast.wait_for()
    await page.wait_for_function(
        "el => el.getBoundingClientRect().right <= window.innerWidth", arg=await toast.element_handle()
    )
    return toast
