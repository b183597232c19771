"""Iterating on runs in the sidebar (issue 19): re-run from a step of the graph, re-run with
changed inputs and models from a Lab dialog, two runs selected in the Runs list compared in a
Compare tab, and the notebook's compare widget rendered in Lab. Light and dark screenshots.

What did not run again is counted: shell steps append to a log file, and the LLM step goes to
the local OpenAI-compatible server, which counts its requests and keeps the last one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.browser import DARK_THEME, chromium, open_lab, run_all_cells, write_notebook

from .conftest import api, finished_run, save, wait_for_run
from .pages import (
    DETAIL,
    SIDEBAR,
    change_theme,
    console_errors,
    context_menu,
    open_sidebar,
    run_detail,
    shot_in_dark,
    wait_status,
)

pytestmark = pytest.mark.timeout(300)

CHAIN = """\
id: chain3
name: Three steps
steps:
  - id: fetch
    task: shell
    with: {command: "echo fetched >> fetch.log; echo report"}
  - id: classify
    task: echo
    with: {value: "class of {{ steps.fetch.output.stdout | trim }}"}
  - id: notify
    task: shell
    with: {command: "echo notified >> notify.log; echo '{{ steps.classify.output.value }}'"}
"""

ESSAY = """\
id: essay
name: Essay
inputs:
  topic: {type: string}
  words: {type: array, default: [short, plain]}
steps:
  - id: outline
    task: shell
    with: {command: "echo outlined >> outline.log; echo '{{ inputs.words | join(' ') }}'"}
  - id: draft
    task: llm_call
    with: {agent: writer, prompt: "Write about {{ inputs.topic }}"}
"""

GREETING = """\
id: greeting
name: Greeting
inputs:
  name: {type: string}
steps:
  - id: prepare
    task: echo
    with: {value: {greeting: hello}}
  - id: count
    task: shell
    with: {command: "echo 3"}
  - id: greet
    task: echo
    with: {value: "{{ steps.prepare.output.value.greeting }} dear {{ inputs.name }}, welcome back"}
  - id: card
    task: echo
    with: {value: {to: "{{ inputs.name }}", size: 3}}
"""
"""Two runs with other names differ in greet (text) and card (JSON) only, after two equal steps."""


@pytest.fixture(scope="module")
def writer_model() -> Iterator[OpenAIStubServer]:
    """Answers with the model it was asked for and the prompt, and counts its requests."""

    def reply(body: dict) -> str:
        return f"{body['model']} wrote: {body['messages'][-1]['content']}"

    with OpenAIStubServer(reply=reply) as server:
        yield server


def row(run_id: str) -> str:
    return f"{SIDEBAR} .clarion-RunRow[data-run-id='{run_id}']"


def node(detail: str, step: str) -> str:
    return f"{detail} .clarion-Node[data-step='{step}']"


async def rerun_in_front(page, parent: str) -> str:
    """The run detail in front that is a re-run of ``parent``: the one just opened (Lab also
    restores the run tabs that earlier tests left open)."""
    again = page.locator(f"{DETAIL}:has([data-parent-run='{parent}'])")
    await again.wait_for(timeout=60_000)
    return await again.get_attribute("data-run-id")


async def test_re_run_from_here_reuses_the_first_steps_and_names_its_parent(lab, shots) -> None:
    save(lab, CHAIN)
    parent = finished_run(lab, "chain3")
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        await page.click(f"{SIDEBAR} .clarion-RunRow[data-run-id='{parent}']")
        detail = run_detail(parent)
        await wait_status(page, detail, "succeeded")
        # The node's context menu offers it too.
        await context_menu(page, node(detail, "notify"), "Re-run from Here")
        await page.keyboard.press("Escape")
        await page.wait_for_selector(".lm-Menu", state="detached")
        await page.click(node(detail, "notify"))
        await page.click(f"{detail} [data-step-panel='notify'] button:has-text('Re-run from here')")

        child = await rerun_in_front(page, parent)
        detail = run_detail(child)
        await wait_status(page, detail, "succeeded")
        for step in ("fetch", "classify"):
            reused = page.locator(f"{node(detail, step)}.clarion-Node-reused")
            await reused.wait_for()
            assert await reused.get_attribute("data-reused-from") == parent
            assert parent in await reused.get_attribute("title")
            assert await reused.locator(".clarion-ReusedBadge").inner_text() == "reused"
        assert await page.locator(f"{node(detail, 'notify')}.clarion-Node-reused").count() == 0
        assert await page.locator(f"{node(detail, 'notify')}").get_attribute("data-status") == "succeeded"
        lineage = page.locator(f"{detail} [data-parent-run='{parent}']")
        assert "re-run from step notify" in await lineage.inner_text()
        await shots(page, "light")
        await shot_in_dark(page, shots, "dark")

        # The parent is a link: it opens the parent's tab.
        await lineage.locator(f"[data-open-run='{parent}']").click()
        await page.wait_for_selector(f"{DETAIL}[data-run-id='{parent}']")
        assert console_errors(page) == []

    run = api(lab, "GET", f"runs/{child}")
    assert run["parent_run_id"] == parent and run["changes"] == {"from_step": "notify"}
    assert {s["key"]: (s.get("reused_from") or {}).get("run_id") for s in run["steps"]} == {
        "fetch": parent, "classify": parent, "notify": None,
    }  # fmt: skip
    assert (lab.root / "fetch.log").read_text().split() == ["fetched"], "the reused shell step ran again"
    assert (lab.root / "notify.log").read_text().split() == ["notified", "notified"]


async def test_re_run_with_a_changed_input_and_model_from_the_runs_list(lab, shots, writer_model) -> None:
    api(
        lab,
        "POST",
        "agents",
        {"id": "writer", "name": "Writer", "model": "openai/stub-a", "api_base": writer_model.url},
    )
    save(lab, ESSAY)
    parent = finished_run(lab, "essay", inputs={"topic": "cats"})
    assert writer_model.request_count == 1
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        # Right-click on the run's row: its context menu.
        await (await context_menu(page, row(parent), "Re-run with…")).click()
        dialog = page.locator(".jp-Dialog")
        await dialog.wait_for()
        topic = dialog.locator("#clarion-rerun-input-topic")
        words = dialog.locator("#clarion-rerun-input-words")
        model = dialog.locator("#clarion-rerun-model-writer")
        assert await topic.input_value() == "cats"
        assert json.loads(await words.input_value()) == ["short", "plain"]
        assert await model.input_value() == "openai/stub-a"

        accept = dialog.locator(".jp-Dialog-button:has-text('Re-run')")
        await words.fill("[short, plain")
        await dialog.locator(".clarion-FieldProblem:has-text(\"input 'words' must be an array\")").wait_for()
        assert await accept.is_disabled()
        await shots(page, "dialog-invalid")
        await words.fill("- short\n- plain")  # the same list, in block YAML: not a change
        await topic.fill("dogs")
        await model.fill("openai/stub-b")
        assert await accept.is_enabled()
        await shots(page, "dialog")
        await accept.click()

        child = await rerun_in_front(page, parent)
        detail = run_detail(child)
        await wait_status(page, detail, "succeeded", timeout=60_000)
        changes = await page.inner_text(f"{detail} [data-parent-run='{parent}']")
        assert 'input topic: "cats" → "dogs"' in changes and "agent writer: model openai/stub-b" in changes
        await page.wait_for_selector(f"{node(detail, 'outline')}.clarion-Node-reused")
        assert await page.locator(f"{node(detail, 'draft')}.clarion-Node-reused").count() == 0
        await page.click(node(detail, "draft"))
        await page.wait_for_selector(f"{detail} [data-step-panel='draft']:has-text('stub-b wrote: Write about dogs')")
        await shots(page, "rerun")

        # In the dark, from the run detail's own button: the dialog now shows this run's model.
        await change_theme(page, DARK_THEME)
        await page.click(f"{detail} button:has-text('Re-run with…')")
        await dialog.wait_for()
        assert await dialog.locator("#clarion-rerun-model-writer").input_value() == "openai/stub-b"
        await shots(page, "dialog-dark")
        await dialog.locator(".jp-Dialog-button:has-text('Cancel')").click()
        await dialog.wait_for(state="detached")
        await shots(page, "rerun-dark")
        await change_theme(page, "JupyterLab Light")
        assert console_errors(page) == []

    assert writer_model.request_count == 2
    assert writer_model.last_request["model"] == "stub-b"
    run = api(lab, "GET", f"runs/{child}")
    assert run["inputs"] == {"topic": "dogs", "words": ["short", "plain"]}
    assert run["changes"]["overrides"] == {"agents": {"writer": {"model": "openai/stub-b"}}}
    assert (lab.root / "outline.log").read_text().split() == ["outlined"], "the reused shell step ran again"
    assert api(lab, "GET", "agents/writer")["model"] == "openai/stub-a", "the saved agent changed"


async def test_two_runs_selected_in_the_runs_list_compare_with_the_differing_step_first(lab, shots) -> None:
    save(lab, GREETING)
    ada = finished_run(lab, "greeting", inputs={"name": "Ada"})
    grace = finished_run(lab, "greeting", inputs={"name": "Grace"})
    async with chromium() as browser:
        page = await open_sidebar(browser, lab)
        compare = page.locator(f"{SIDEBAR} .clarion-CompareButton")
        # The mouse: a click selects (and opens) one run, Ctrl-click adds another.
        await page.click(row(grace))
        await page.click(row(ada), modifiers=["Control"])
        await page.wait_for_selector(f"{row(ada)}[aria-selected='true']")
        assert await page.get_attribute(row(grace), "aria-selected") == "true"
        assert await page.inner_text(f"{SIDEBAR} .clarion-SelectionCount") == "2 selected"
        assert await compare.is_enabled()
        # The keyboard: Escape clears; Space selects the focused run, Shift+Down extends to the next.
        await page.focus(row(grace))
        await page.keyboard.press("Escape")
        await page.wait_for_selector(f"{row(ada)}[aria-selected='false']")
        assert await compare.is_disabled()
        await page.keyboard.press("Space")
        await page.keyboard.press("Shift+ArrowDown")
        await page.wait_for_selector(f"{row(ada)}[aria-selected='true']")
        assert await page.get_attribute(row(grace), "aria-selected") == "true"
        assert await page.locator(f"{SIDEBAR} .clarion-RunRow.clarion-mod-selected").count() == 2
        await shots(page, "selected")
        await compare.click()

        view = page.locator(f".clarion-Compare[data-runs='{ada},{grace}']")
        await view.wait_for()
        differing = view.locator(".clarion-CompareSteps[aria-label='Steps that differ'] tr[data-step-key]")
        assert await differing.evaluate_all("rows => rows.map(r => r.dataset.stepKey)") == ["greet", "card"]
        greet = differing.first
        assert await greet.locator(".clarion-DiffersBadge").inner_text() == "differs"
        assert await greet.locator("del").all_inner_texts() == ["Ada,"]
        assert await greet.locator("ins").all_inner_texts() == ["Grace,"]
        card = differing.nth(1).locator(".clarion-JsonDiff li")  # {value: {to, size}}: only `to` changed
        assert await card.evaluate_all("items => items.map(i => i.querySelector('code').textContent)") == ["value.to"]
        assert await card.locator("del").all_inner_texts() == ["Ada"]
        assert await card.locator("ins").all_inner_texts() == ["Grace"]
        equal = view.locator("details.clarion-EqualSteps")
        assert await equal.locator("summary").inner_text() == "2 equal steps"
        assert not await equal.evaluate("d => d.open")
        assert not await equal.locator("tr[data-step-key='prepare']").is_visible()
        assert "base" in await view.locator(f".clarion-CompareRuns th[data-run-id='{ada}']").inner_text()
        await shots(page, "light")
        await shot_in_dark(page, shots, "dark")
        await equal.locator("summary").click()
        await equal.locator("tr[data-step-key='prepare']").wait_for()
        await shots(page, "equal-open")
        assert console_errors(page) == []

        # Lab restores the Compare tab on reload, as it does the run tabs.
        again = await open_lab(browser, lab)
        await again.wait_for_selector(f".clarion-Compare[data-runs='{ada},{grace}']", timeout=60_000)
        await again.click(".lm-MenuBar-itemLabel:text-is('File')")
        await again.click(".lm-Menu-itemLabel:text-is('Close All Tabs')")
        await again.wait_for_selector(".clarion-Compare", state="detached")


NOTEBOOK_WORKFLOW = """\
id: nb-greeting
name: Notebook greeting
inputs:
  name: {type: string}
steps:
  - id: prepare
    task: echo
    with: {value: hello}
  - id: greet
    task: echo
    with: {value: "{{ steps.prepare.output.value }} dear {{ inputs.name }}, welcome back"}
"""


async def test_the_notebook_compare_widget_shows_a_word_diff_in_lab(lab, shots) -> None:
    cells = [
        "%load_ext clarion_jupyter",
        f"%%clarion --input name=Ada --name run_a\n{NOTEBOOK_WORKFLOW}",
        f"%%clarion --input name=Grace --name run_b\n{NOTEBOOK_WORKFLOW}",
        "run_a.compare(run_b)",
    ]
    write_notebook(lab.root, "compare.ipynb", cells)
    async with chromium() as browser:
        page = await open_lab(browser, lab, "lab/tree/compare.ipynb")
        await run_all_cells(page)
        table = page.locator(".jp-OutputArea table.clarion-compare")
        await table.wait_for(timeout=120_000)
        greet = table.locator("tr.clarion-differs")
        assert (await greet.locator("th").first.inner_text()).split() == ["greet", "differs"]
        assert await greet.locator("del").all_inner_texts() == ["Ada,"]
        assert await greet.locator("ins").all_inner_texts() == ["Grace,"]
        assert await table.locator("tr:not(.clarion-differs) th:text-is('prepare')").count() == 1
        await table.scroll_into_view_if_needed()
        await shots(page, "light")
        await change_theme(page, DARK_THEME)
        await table.scroll_into_view_if_needed()
        await shots(page, "dark")
        await change_theme(page, "JupyterLab Light")
        assert console_errors(page) == []
    runs = api(lab, "GET", "runs?workflow_id=nb-greeting")["runs"]
    assert sorted(r["inputs"]["name"] for r in runs) == ["Ada", "Grace"]
    for run in runs:
        wait_for_run(lab, run["run_id"], {"succeeded"})
