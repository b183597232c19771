"""JupyterLab in headless Chromium: a notebook runs a ``%%clarion`` cell and the rendered
widget shows every step succeeded. The screenshot is saved with the test's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion_jupyter.testing.browser import chromium, lab_server, open_lab, run_all_cells, write_notebook

pytestmark = pytest.mark.timeout(240)

CELL = """%%clarion --input topic=browsers
id: browser-tour
name: Browser tour
inputs:
  topic: {type: string}
steps:
  - id: write
    task: file_write
    with: {path: "notes/{{ inputs.topic }}.md", content: "# {{ inputs.topic }}"}
  - parallel:
      - {id: read, task: file_read, with: {path: "notes/{{ inputs.topic }}.md"}}
      - {id: count, task: shell, with: {command: "wc -c < notes/{{ inputs.topic }}.md"}}
  - {id: each, task: echo, for_each: "{{ ['a', 'b', 'c'] }}", with: {value: "{{ item }}"}}
outputs:
  heading: "{{ steps.read.output.content }}"
"""


async def test_a_clarion_cell_renders_a_live_widget_that_ends_all_succeeded(tmp_path: Path) -> None:
    server = lab_server(tmp_path)
    write_notebook(server.root, "tour.ipynb", ["%load_ext clarion_jupyter", CELL])
    with server:
        await server.wait_ready()
        async with chromium() as browser:
            page = await open_lab(browser, server, "lab/tree/tour.ipynb")
            try:
                await run_all_cells(page)
                header = page.locator(".clarion-run-header[data-status='succeeded']")
                await header.wait_for(timeout=60_000)
                steps = await page.eval_on_selector_all(
                    ".clarion-step", "rows => rows.map(r => [r.dataset.key, r.dataset.status])"
                )
            finally:  # the screenshot is the test's output, also when it fails
                await page.screenshot(path=str(tmp_path / "clarion-widget.png"), full_page=True)
            runs = (await server.request("GET", "runs"))["runs"]
    assert dict(steps) == {
        "write": "succeeded", "read": "succeeded", "count": "succeeded", "each": "succeeded",
        "each[0]": "succeeded", "each[1]": "succeeded", "each[2]": "succeeded",
    }  # fmt: skip
    assert [run["workflow_id"] for run in runs] == ["browser-tour"]
    assert (tmp_path / "clarion-widget.png").stat().st_size > 10_000
