"""Comparing runs side by side (ARCHITECTURE.md, "Iterating on runs"): the engine, the REST
route, the CLI and the notebook's view, on real runs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from conftest_server import Api, create_workflow, start_run, wait_run
from notebook_support import ECHO3, Shell

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import ValidationFailed
from clarion_jupyter.notebook.comparison import Comparison, structural_diff, word_diff

pytestmark = pytest.mark.timeout(60)

DOC = {
    "name": "pair",
    "inputs": {"who": {"default": "world"}},
    "steps": [
        {"id": "fixed", "task": "echo", "with": {"value": "same"}},
        {"id": "greet", "task": "echo", "with": {"value": "hello {{ inputs.who }}"}},
    ],
}


async def two_runs(engine: Engine) -> tuple[str, str]:
    first = await engine.submit(DOC)
    second = await engine.submit(DOC, {"who": "there"})
    for run_id in (first, second):
        await asyncio.wait_for(engine.wait(run_id), 20)
    return first, second


async def test_compare_marks_the_differing_step_and_not_the_equal_ones(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        first, second = await two_runs(engine)
        comparison = await engine.compare_runs([first, second])
    assert {s.key: s.differs for s in comparison.steps} == {"fixed": False, "greet": True}
    greet = next(s for s in comparison.steps if s.key == "greet")
    assert [cell.output for cell in greet.per_run] == [{"value": "hello world"}, {"value": "hello there"}]
    assert [r.inputs for r in comparison.runs] == [{"who": "world"}, {"who": "there"}]
    assert all(r.totals["steps"] == 2 for r in comparison.runs)


async def test_a_shell_step_that_printed_the_same_is_equal_though_it_took_another_time(tmp_path: Path) -> None:
    doc = {
        "name": "timed",
        "inputs": {"n": {"type": "integer", "default": 1}},
        "steps": [
            {"id": "slow", "task": "shell", "with": {"command": "sleep 0.0{{ inputs.n }}; echo same"}},
            {"id": "say", "task": "shell", "with": {"command": "echo {{ inputs.n }}"}},
        ],
    }
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        runs = [await engine.submit(doc, {"n": n}) for n in (1, 5)]
        for run_id in runs:
            await asyncio.wait_for(engine.wait(run_id), 20)
        comparison = await engine.compare_runs(runs)
    slow = next(s for s in comparison.steps if s.key == "slow")
    assert slow.per_run[0].output["duration_ms"] != slow.per_run[1].output["duration_ms"]
    assert {s.key: s.differs for s in comparison.steps} == {"slow": False, "say": True}


async def test_compare_of_a_rerun_shows_its_changes_and_reused_steps(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        first = await engine.submit(DOC)
        await asyncio.wait_for(engine.wait(first), 20)
        rerun = await engine.rerun(first, inputs={"who": "you"})
        await asyncio.wait_for(engine.wait(rerun.run_id), 20)
        comparison = await engine.compare_runs([first, rerun.run_id])
    assert comparison.runs[1].parent_run_id == first
    assert comparison.runs[1].changes == {"inputs": {"who": {"from": "world", "to": "you"}}}
    fixed = next(s for s in comparison.steps if s.key == "fixed")
    assert fixed.per_run[1].reused_from == {"run_id": first, "attempt": 1}


async def test_compare_needs_two_runs(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        with pytest.raises(ValidationFailed) as raised:
            await engine.compare_runs(["only"])
    assert [p.field for p in raised.value.problems] == ["ids"]


async def test_compare_over_rest(api: Api) -> None:
    workflow_id = await create_workflow(api, {"id": "pair", **DOC})
    first = await wait_run(api, await start_run(api, workflow_id))
    second = await wait_run(api, await start_run(api, workflow_id, inputs={"who": "there"}))
    reply = await api("GET", "runs", "compare", params={"ids": f"{first['run_id']},{second['run_id']}"})
    assert reply.status == 200, reply.body
    assert [s["key"] for s in reply.body["steps"] if s["differs"]] == ["greet"]
    missing = await api("GET", "runs", "compare", params={"ids": f"{first['run_id']},01NOSUCHRUN0000000000000000"})
    assert missing.status == 404


async def test_the_notebook_view_diffs_words_and_has_one_row_per_step_and_run(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        comparison = Comparison(await engine.compare_runs(list(await two_runs(engine))))
    frame = comparison.to_dataframe()
    assert len(frame) == 4
    assert list(frame[frame.differs].key.unique()) == ["greet"]
    assert comparison.differing == ["greet"]
    html = comparison.to_html()
    assert "<del>world</del>" in html and "<ins>there</ins>" in html


async def test_the_notebook_view_shows_the_differing_steps_first_in_the_themes_colours(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        html = Comparison(await engine.compare_runs(list(await two_runs(engine)))).to_html()
    rows = re.findall(r"<tr( class=\"clarion-differs\")?><th>(\w+)", html.split("<tbody>")[1])
    assert rows == [(' class="clarion-differs"', "greet"), ("", "fixed")]  # fixed came first in the workflow
    assert "var(--jp-warn-color1" in html and "#fff6e0" not in html  # a light-only tint is unreadable on dark


def test_word_diff_marks_only_the_changed_words() -> None:
    assert word_diff("the quick fox", "the slow fox") == "the <del>quick</del> <ins>slow</ins> fox"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]}, [("changed", ("b", 1), 3)]),
        ({"a": 1}, {"b": 2}, [("removed", ("a",), 1), ("added", ("b",), 2)]),
        ({"a": {"x": 1}}, {"a": {"x": 1}}, []),
    ],
)
def test_structural_diff_lists_the_paths_that_differ(before: Any, after: Any, expected: list[Any]) -> None:
    assert structural_diff(before, after) == expected


def test_the_compare_magic_and_run_compare_show_the_differing_steps(shell: Shell) -> None:
    shell.cell("", ECHO3)
    first = shell.last
    shell.cell("--input word=yo", ECHO3)
    second = shell.last
    shown = shell.line(f"compare {first.run_id} {second.run_id}").result
    assert isinstance(shown, Comparison) and shown.differing == ["one", "two", "three"]
    assert first.compare(first).differing == []
