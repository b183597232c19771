"""The compiled-plan cache: each distinct document is compiled once, whatever form it comes in,
and what may change between two runs of it (a secret set since) is still judged at each."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from clarion_jupyter import Engine
from clarion_jupyter.core.errors import ValidationFailed
from clarion_jupyter.task.registry import TaskRegistry
from clarion_jupyter.testing.workloads import chain
from clarion_jupyter.workflow.plans import PlanCache
from clarion_jupyter.workflow.validation import WorkflowValidator

SECRET = "sk-clarion-plan-0123456789abcdef"


@pytest.fixture
def cache() -> PlanCache:
    return PlanCache(WorkflowValidator(TaskRegistry.from_entry_points()), maxsize=2)


def test_the_same_document_sent_again_reuses_its_plan(cache: PlanCache) -> None:
    first = cache.plan(chain(3))
    assert cache.plan(copy.deepcopy(chain(3))) is first
    assert cache.compiled == 1


def test_yaml_text_of_one_document_is_compiled_once(cache: PlanCache) -> None:
    text = yaml.safe_dump(chain(3))
    assert cache.plan(text) is cache.plan(text.encode())
    assert cache.compiled == 1


def test_text_holding_a_lone_surrogate_is_compiled_once_with_the_replacement_character(cache: PlanCache) -> None:
    """A cell's text built in Python can hold one (no file or socket can): it is a key like any
    other text, and the plan's document holds what the store would keep."""
    text = yaml.safe_dump({**chain(1), "name": "cut \ud800 here"}, allow_unicode=True)
    plan = cache.plan(text)
    assert cache.plan(text) is plan and cache.compiled == 1
    assert plan.document["name"] == "cut \ufffd here"


def test_text_holding_a_raw_lone_surrogate_is_refused_as_invalid_yaml(cache: PlanCache) -> None:
    text = yaml.safe_dump(chain(1)) + f"name: cut {chr(0xD800)} here\n"
    with pytest.raises(ValidationFailed, match="not valid YAML"):
        cache.plan(text)


def test_a_changed_document_gets_a_plan_of_its_own(cache: PlanCache) -> None:
    assert cache.plan(chain(3)) is not cache.plan(chain(4))
    assert cache.compiled == 2


def test_the_least_recently_used_plan_leaves_a_full_cache(cache: PlanCache) -> None:
    two, three = cache.plan(chain(2)), cache.plan(chain(3))
    cache.plan(chain(2))
    cache.plan(chain(4))
    assert len(cache) == 2
    assert cache.plan(chain(2)) is two
    assert cache.plan(chain(3)) is not three


def test_a_rejected_document_is_not_cached(cache: PlanCache) -> None:
    bad = {"name": "bad", "steps": [{"id": "a", "task": "no_such_task"}]}
    for _ in range(2):
        with pytest.raises(ValidationFailed):
            cache.plan(bad)
    assert len(cache) == 0


def test_a_secret_set_after_the_first_compile_refuses_the_document(
    cache: PlanCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {"name": "leaky", "steps": [{"id": "a", "task": "echo", "with": {"value": SECRET}}]}
    cache.plan(document)
    monkeypatch.setenv("CLARION_PLAN_API_KEY", SECRET)
    with pytest.raises(ValidationFailed, match="step 'a'"):
        cache.plan(document)


async def test_a_replaced_saved_workflow_runs_its_new_version(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.duckdb", workspace_root=tmp_path) as engine:
        saved = await engine.create_workflow({**chain(1), "id": "wf"})
        first = await engine.wait(await engine.submit_saved(saved.id))
        await engine.replace_workflow(saved.id, {**chain(2), "id": "wf"})
        second = await engine.wait(await engine.submit_saved(saved.id))
    assert [s.key for s in first.steps] == ["s0"]
    assert [s.key for s in second.steps] == ["s0", "s1"]
