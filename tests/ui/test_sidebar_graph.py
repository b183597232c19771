"""The run detail's step graph: its dependency edges, as the engine orders the steps, in the
light and the dark theme."""

from __future__ import annotations

from clarion_jupyter.testing.browser import DARK_THEME, chromium

from .conftest import api, wait_for_run
from .pages import SIDEBAR, change_theme, console_errors, open_sidebar, run_detail, wait_status

FANOUT = """\
id: fanout
name: Fan out and in
inputs:
  words: {type: array, default: [a, b, c]}
steps:
  - id: fetch
    task: echo
    with: {value: report}
  - parallel:
      - id: lint
        task: echo
        with: {value: "lint {{ steps.fetch.output.value }}"}
      - id: test
        task: shell
        with: {command: "echo ok"}
  - id: deploy
    task: echo
    if: "{{ steps.test.output.exit_code != 0 }}"
    with: {value: deploy}
  - id: notify
    task: echo
    needs: [fetch]
    for_each: "{{ inputs.words }}"
    with: {value: "{{ item }}"}
  - id: summary
    task: echo
    with: {value: "{{ steps.lint.output.value }}"}
"""
EDGES = {
    ("fetch", "lint", "order"),
    ("fetch", "test", "order"),
    ("lint", "deploy", "order"),
    ("test", "deploy", "order"),
    ("fetch", "notify", "needs"),
    ("notify", "summary", "order"),
    ("lint", "summary", "reads"),
}
"""What the compiler makes the steps wait for: list order into and out of the group, notify's
``needs`` instead of list order, and summary's template read of lint."""


async def test_the_step_graph_draws_the_dependency_edges_coloured_by_step_in_light_and_dark(lab, shots) -> None:
    api(lab, "POST", "workflows", yaml=FANOUT)
    run_id = api(lab, "POST", "workflows/fanout/run", {})["run_id"]
    run = wait_for_run(lab, run_id, {"succeeded"})
    assert {s["key"]: s["status"] for s in run["steps"]}["deploy"] == "skipped"
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']")
        detail = run_detail(run_id)
        await wait_status(page, detail, "succeeded")
        edges = page.locator(f"{detail} svg.clarion-Edges .clarion-Edge")
        await wait_count(page, f"{detail} svg.clarion-Edges .clarion-Edge", len(EDGES))
        found = await edges.evaluate_all("es => es.map(e => [e.dataset.from, e.dataset.to, e.dataset.kind])")
        assert {tuple(e) for e in found} == EDGES

        into_skipped = page.locator(f"{detail} .clarion-Edge[data-to='deploy']")
        assert await into_skipped.evaluate_all("es => es.map(e => getComputedStyle(e).opacity)") == ["0.5", "0.5"]
        colours = await edges.evaluate_all(
            "es => es.map(e => [e.dataset.to, getComputedStyle(e.querySelector('path')).stroke])"
        )
        succeeded = {c for to, c in colours if to != "deploy"}
        assert len(succeeded) == 1  # every other step succeeded: one colour, the theme's success
        dashes = "p => getComputedStyle(p).strokeDasharray"
        assert await into_skipped.locator("path").first.evaluate(dashes) == "none"
        assert await page.locator(f"{detail} .clarion-Edge-reads path").first.evaluate(dashes) != "none"
        await assert_no_edge_crosses_a_node(page, detail)
        await page.locator(f"{detail} .clarion-Graph").scroll_into_view_if_needed()
        await shots(page, "light")

        await change_theme(page, DARK_THEME)
        await page.locator(f"{detail} .clarion-Graph").scroll_into_view_if_needed()
        await shots(page, "dark")
        assert await edges.count() == len(EDGES)
        await change_theme(page, "JupyterLab Light")
        assert console_errors(page) == []


async def wait_count(page, selector: str, count: int) -> None:
    await page.wait_for_function("([s, n]) => document.querySelectorAll(s).length === n", arg=[selector, count])


async def assert_no_edge_crosses_a_node(page, detail: str) -> None:
    """Samples every edge's path and checks that no point falls inside a node it does not join."""
    crossings = await page.evaluate(
        """detail => {
          const root = document.querySelector(detail + ' .clarion-Graph');
          const origin = root.getBoundingClientRect();
          const lanes = [...root.querySelectorAll('[data-lane]')].map(l => {
            const r = l.getBoundingClientRect();
            return {id: l.dataset.lane, left: r.left - origin.left, right: r.right - origin.left,
                    top: r.top - origin.top, bottom: r.bottom - origin.top};
          });
          const out = [];
          for (const edge of root.querySelectorAll('.clarion-Edge')) {
            const path = edge.querySelector('.clarion-EdgeLine');
            const length = path.getTotalLength();
            for (let d = 0; d <= length; d += 2) {
              const p = path.getPointAtLength(d);
              for (const l of lanes) {
                if (l.id !== edge.dataset.from && l.id !== edge.dataset.to
                    && p.x > l.left && p.x < l.right && p.y > l.top && p.y < l.bottom) {
                  out.push(`${edge.dataset.from}>${edge.dataset.to} crosses ${l.id}`);
                }
              }
            }
          }
          return [...new Set(out)];
        }""",
        detail,
    )
    assert crossings == []


async def test_the_graph_of_a_run_is_the_workflow_as_it_ran_even_after_it_was_changed(lab, shots) -> None:
    doc = FANOUT.replace("id: fanout", "id: fanout-changed")
    api(lab, "POST", "workflows", yaml=doc)
    run_id = api(lab, "POST", "workflows/fanout-changed/run", {})["run_id"]
    wait_for_run(lab, run_id, {"succeeded"})
    api(lab, "PUT", "workflows/fanout-changed", yaml=doc.split("  - id: summary")[0])
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']")
        detail = run_detail(run_id)
        await wait_status(page, detail, "succeeded")
        # summary is no longer saved, but the run ran it: it keeps its place and its edges.
        await page.wait_for_selector(f"{detail} .clarion-Node[data-step='summary'][data-status='succeeded']")
        await wait_count(page, f"{detail} .clarion-Edge", len(EDGES))
        assert await page.locator(f"{detail} .clarion-Edge[data-to='summary']").count() > 0
        assert await page.locator(f"{detail} .clarion-Notice").count() == 0
        await shots(page, "changed-since")
        assert console_errors(page) == []
