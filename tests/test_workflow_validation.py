"""The workflow document, its compilation into a plan, and run inputs: what is accepted, what
is refused, and how each refusal names the step and field it concerns."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import yaml

from clarion_jupyter.core.errors import Problem, ValidationFailed
from clarion_jupyter.task.registry import TaskRegistry
from clarion_jupyter.workflow.compiler import Plan, compile_workflow, resolve_inputs
from clarion_jupyter.workflow.models import (
    ParallelGroup,
    Step,
    Workflow,
    load_document,
    parse_workflow,
)

REGISTRY = TaskRegistry.from_entry_points()

TRIAGE_YAML = """\
name: Triage a bug report
description: optional text
inputs:
  report: {type: string}
  files: {type: array, default: []}
steps:
  - id: read
    task: file_read
    with: {path: "{{ inputs.report }}"}
  - parallel:
      - id: classify
        task: echo
        with: {value: "Classify: {{ steps.read.output.content }}"}
      - id: size
        task: shell
        with: {command: "wc -c {{ inputs.report }}"}
  - id: fix
    task: shell
    if: "{{ steps.classify.output.value == 'bug' }}"
    with: {command: "make test"}
    retry: {max_attempts: 3, backoff_s: 1.0}
    timeout_s: 600
    continue_on_error: true
  - id: per_file
    task: file_read
    needs: [read]
    for_each: "{{ inputs.files }}"
    with: {path: "{{ item }}"}
outputs:
  label: "{{ steps.classify.output.value }}"
"""


def _problems(source: Any) -> list[Problem]:
    with pytest.raises(ValidationFailed) as info:
        parse_workflow(source)
    return info.value.problems


def _wf(*steps: Any, inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None) -> Workflow:
    doc: dict[str, Any] = {"name": "test", "steps": list(steps)}
    if inputs is not None:
        doc["inputs"] = inputs
    if outputs is not None:
        doc["outputs"] = outputs
    return parse_workflow(doc)


def _wf_named(name: str) -> Workflow:
    return parse_workflow({"name": name, "steps": [echo("a")]})


def _compile(*steps: Any, **kw: Any) -> Plan:
    max_steps = kw.pop("max_steps", None)
    return compile_workflow(_wf(*steps, **kw), REGISTRY, max_steps=max_steps)


def _compile_problems(*steps: Any, **kw: Any) -> list[Problem]:
    with pytest.raises(ValidationFailed) as info:
        _compile(*steps, **kw)
    return info.value.problems


def echo(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "task": "echo", **extra}


def _where(problems: list[Problem]) -> list[tuple[str | None, str | None]]:
    return [(p.step, p.field) for p in problems]


# =========================================================================== document


def test_yaml_and_the_same_document_as_json_give_equal_workflows() -> None:
    as_json = json.dumps(yaml.safe_load(TRIAGE_YAML))
    assert parse_workflow(TRIAGE_YAML) == parse_workflow(as_json)
    assert parse_workflow(TRIAGE_YAML.encode()) == parse_workflow(as_json.encode())


def test_id_is_derived_from_the_name_as_a_slug() -> None:
    assert parse_workflow(TRIAGE_YAML).id == "triage-a-bug-report"
    assert _wf(echo("a")).id == "test"


def test_an_explicit_id_is_kept() -> None:
    assert parse_workflow({"id": "triage", "name": "Triage a bug report", "steps": [echo("a")]}).id == "triage"


def test_a_derived_id_is_lowercase_ascii_and_at_most_64_characters() -> None:
    assert _wf_named("  Été 2026 — Plan: B/C  ").id == "ete-2026-plan-b-c"
    assert _wf_named("!!!").id == "workflow"
    long = _wf_named("x" * 100).id
    assert long == "x" * 64


def test_an_invalid_workflow_id_is_refused() -> None:
    problems = _problems({"id": "Not A Slug", "name": "x", "steps": [echo("a")]})
    assert [p.field for p in problems] == ["id"]


def test_every_step_feature_parses() -> None:
    wf = parse_workflow(TRIAGE_YAML)
    read, group, fix, per_file = wf.steps
    assert isinstance(read, Step) and read.with_ == {"path": "{{ inputs.report }}"}
    assert isinstance(group, ParallelGroup) and [s.id for s in group.parallel] == ["classify", "size"]
    assert fix.if_ == "{{ steps.classify.output.value == 'bug' }}"
    assert fix.retry.max_attempts == 3 and fix.retry.backoff_s == 1.0
    assert fix.timeout_s == 600
    assert fix.continue_on_error is True
    assert per_file.needs == ["read"]
    assert per_file.for_each == "{{ inputs.files }}"
    assert wf.inputs["report"].required and not wf.inputs["files"].required
    assert wf.inputs["files"].default == []
    assert [s.id for s in wf.iter_steps()] == ["read", "classify", "size", "fix", "per_file"]


def test_step_defaults_when_fields_are_omitted() -> None:
    (step,) = _wf(echo("a")).steps
    assert step.needs is None and step.if_ is None and step.for_each is None
    assert step.retry.max_attempts == 1 and step.timeout_s is None and step.continue_on_error is False


def test_a_yaml_syntax_error_reports_line_and_column() -> None:
    text = "name: x\nsteps:\n  - id: a\n    task: echo\n   bad: [\n"
    (problem,) = _problems(text)
    assert problem.loc.startswith("line 5, column ")
    assert "not valid YAML/JSON" in problem.message


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    for source in ("- a\n- b\n", "just text", "42"):
        (problem,) = _problems(source)
        assert problem.loc == "document"
        assert "mapping" in problem.message
    with pytest.raises(ValidationFailed):
        load_document("[1, 2]")


def test_an_unknown_field_in_a_step_is_named_with_the_step_id() -> None:
    (problem,) = _problems({"name": "x", "steps": [echo("a"), echo("b", wiht={"value": 1})]})
    assert (problem.step, problem.field) == ("b", "wiht")
    assert problem.message == "unknown field"
    assert "step 'b'" in str(problem)


def test_an_unknown_field_in_a_parallel_member_is_named_with_the_member_id() -> None:
    (problem,) = _problems({"name": "x", "steps": [{"parallel": [echo("a"), echo("b", nedds=["a"])]}]})
    assert (problem.step, problem.field) == ("b", "nedds")


def test_an_invalid_step_id_is_refused() -> None:
    for bad in ("1abc", "has-dash", "has space", ""):
        (problem,) = _problems({"name": "x", "steps": [echo(bad)]})
        assert problem.field == "id", bad
        assert "pattern" in problem.message


def test_a_step_without_a_task_is_refused() -> None:
    (problem,) = _problems({"name": "x", "steps": [{"id": "a"}]})
    assert (problem.step, problem.field) == ("a", "task")


def test_a_workflow_without_steps_is_refused() -> None:
    (problem,) = _problems({"name": "x", "steps": []})
    assert problem.field == "steps"


def test_every_document_problem_is_listed_at_once() -> None:
    doc = {
        "name": "x",
        "steps": [
            echo("a", wat=1),
            echo("1b"),
            {"parallel": [echo("c", retry={"max_attempts": 0})]},
            echo("d", timeout_s=-1),
        ],
    }
    with pytest.raises(ValidationFailed) as info:
        parse_workflow(doc)
    assert _where(info.value.problems) == [
        ("a", "wat"),
        ("1b", "id"),
        ("c", "retry.max_attempts"),
        ("d", "timeout_s"),
    ]
    assert "4 problems" in info.value.message
    assert len(info.value.details) == 4


def test_validation_failed_is_an_http_422_with_details() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_workflow({"name": "x", "steps": [echo("a", wat=1)]})
    body = info.value.as_dict()["error"]
    assert info.value.status == 422
    assert body["code"] == "invalid"
    assert body["details"] == [{"loc": "step 'a' field 'wat'", "message": "unknown field", "step": "a", "field": "wat"}]


def test_to_document_round_trips() -> None:
    wf = parse_workflow(TRIAGE_YAML)
    assert parse_workflow(wf.to_document()) == wf


# =========================================================================== compiler: refusals


def test_the_triage_example_compiles() -> None:
    plan = compile_workflow(parse_workflow(TRIAGE_YAML), REGISTRY)
    assert list(plan.nodes) == ["read", "classify", "size", "fix", "per_file"]


def test_duplicate_step_ids_are_refused() -> None:
    problems = _compile_problems(echo("a"), {"parallel": [echo("b"), echo("a")]})
    assert _where(problems) == [("a", "id")]
    assert "duplicate step id 'a'" in problems[0].message


def test_an_unknown_need_is_refused() -> None:
    (problem,) = _compile_problems(echo("a"), echo("b", needs=["a", "nope"]))
    assert (problem.step, problem.field) == ("b", "needs")
    assert "unknown step 'nope'" in problem.message


def test_a_step_cannot_need_itself() -> None:
    (problem,) = _compile_problems(echo("a", needs=["a"]))
    assert (problem.step, problem.field) == ("a", "needs")
    assert "cannot need itself" in problem.message


def test_cycle_via_needs_is_reported_with_the_steps_on_it() -> None:
    (problem,) = _compile_problems(echo("a", needs=["b"]), echo("b", needs=["c"]), echo("c", needs=["a"]))
    assert problem.field == "needs"
    assert "dependency cycle" in problem.message
    path = problem.message.split("dependency cycle: ")[1].split(" -> ")
    assert path[0] == path[-1]
    assert sorted(path[:-1]) == ["a", "b", "c"]
    # consecutive names follow the needs edges (x -> y: y needs x, or x needs y, consistently)
    edges = {("b", "a"), ("c", "b"), ("a", "c")}  # (needer, needed)
    pairs = list(itertools.pairwise(path))
    assert set(pairs) == edges or {(b, a) for a, b in pairs} == edges


def test_cycle_via_template_references_is_reported() -> None:
    # a reads b's output, but list order makes b wait for a
    (problem,) = _compile_problems(echo("a", **{"with": {"value": "{{ steps.b.output }}"}}), echo("b"))
    assert "dependency cycle" in problem.message
    assert sorted(set(problem.message.split(": ")[-1].split(" -> "))) == ["a", "b"]


def test_an_unknown_task_type_lists_the_known_types() -> None:
    (problem,) = _compile_problems({"id": "a", "task": "nope"})
    assert (problem.step, problem.field) == ("a", "task")
    assert "unknown task type 'nope'" in problem.message
    for known in ("echo", "file_read", "file_write", "shell"):
        assert known in problem.message


def test_an_unknown_template_variable_is_refused() -> None:
    (problem,) = _compile_problems(echo("a", **{"with": {"value": "{{ inptus.x }}"}}))
    assert (problem.step, problem.field) == ("a", "with")
    assert "unknown variable 'inptus'" in problem.message


def test_item_outside_for_each_is_refused() -> None:
    (problem,) = _compile_problems(echo("a", **{"with": {"value": "{{ item }}"}}))
    assert (problem.step, problem.field) == ("a", "with")
    assert "'item'" in problem.message and "for_each" in problem.message


def test_item_inside_for_each_is_accepted_in_with_and_if() -> None:
    plan = _compile(echo("a", for_each="{{ [1, 2] }}", **{"with": {"value": "{{ item }}"}, "if": "{{ item > 1 }}"}))
    assert plan.nodes["a"].for_each is not None


def test_item_is_not_defined_in_the_for_each_expression_itself() -> None:
    (problem,) = _compile_problems(echo("a", for_each="{{ item }}"))
    assert (problem.step, problem.field) == ("a", "for_each")


def test_an_unknown_input_in_a_template_is_refused() -> None:
    (problem,) = _compile_problems(
        echo("a", **{"with": {"value": "{{ inputs.nope }}"}}), inputs={"x": {"type": "string"}}
    )
    assert (problem.step, problem.field) == ("a", "with")
    assert "unknown input 'nope'" in problem.message


def test_an_unknown_step_in_a_template_is_refused() -> None:
    (problem,) = _compile_problems(echo("a", **{"if": "{{ steps.ghost.output.ok }}"}))
    assert (problem.step, problem.field) == ("a", "if")
    assert "unknown step 'ghost'" in problem.message


def test_a_dynamic_step_reference_is_refused() -> None:
    # `steps[<expression>]` hides which step is read: no dependency could be derived, so the
    # step could start before the step it reads has finished
    (problem,) = _compile_problems(
        echo("a"),
        echo("b", needs=[], **{"with": {"value": "{{ steps[inputs.which].output }}"}}),
        inputs={"which": {"type": "string", "default": "a"}},
    )
    assert (problem.step, problem.field) == ("b", "with")


def test_a_step_cannot_read_its_own_output() -> None:
    (problem,) = _compile_problems(echo("a", **{"with": {"value": "{{ steps.a.output }}"}}))
    assert (problem.step, problem.field) == ("a", "with")


def test_unknown_names_in_workflow_outputs_are_refused() -> None:
    (problem,) = _compile_problems(echo("a"), outputs={"x": "{{ steps.b.output }}"})
    assert problem.field == "outputs" and problem.step is None
    assert "unknown step 'b'" in problem.message


def test_a_jinja_syntax_error_names_the_step_and_field() -> None:
    for field in ("if", "for_each"):
        (problem,) = _compile_problems(echo("a", **{field: "{{ 1 + }}"}))
        assert (problem.step, problem.field) == ("a", field)
        assert "syntax error" in problem.message


def test_a_jinja_syntax_error_in_with_names_the_step_and_field() -> None:
    (problem,) = _compile_problems(echo("a", **{"with": {"value": "{% if %}"}}))
    assert (problem.step, problem.field) == ("a", "with")
    assert "syntax error" in problem.message


def test_a_broken_template_in_with_does_not_hide_the_other_config_problems() -> None:
    problems = _compile_problems({"id": "r", "task": "file_read", "with": {"encoding": "{{ 1 + }}", "bogus": 1}})
    assert sorted(_where(problems)) == [("r", "with"), ("r", "with.bogus"), ("r", "with.path")]


def test_static_config_is_checked_against_the_task_config() -> None:
    _compile(echo("a", **{"with": {"value": {"any": ["json", 1]}}}))
    (problem,) = _compile_problems({"id": "r", "task": "file_read", "with": {}})
    assert (problem.step, problem.field) == ("r", "with.path")
    assert "required" in problem.message.lower()


def test_an_unknown_key_in_with_is_refused_and_lists_the_fields() -> None:
    (problem,) = _compile_problems({"id": "r", "task": "file_read", "with": {"path": "x", "bogus": 1}})
    assert (problem.step, problem.field) == ("r", "with.bogus")
    assert "unknown field" in problem.message
    assert "path" in problem.message and "encoding" in problem.message


def test_a_static_value_of_the_wrong_type_is_refused() -> None:
    (problem,) = _compile_problems({"id": "r", "task": "file_read", "with": {"path": "x", "max_bytes": "lots"}})
    assert (problem.step, problem.field) == ("r", "with.max_bytes")


def test_a_templated_config_is_only_checked_for_unknown_and_missing_keys() -> None:
    # a template could render to any type, so max_bytes is not type-checked here
    _compile({"id": "r", "task": "file_read", "with": {"path": "{{ 'x' }}", "max_bytes": "{{ 'lots' }}"}})
    problems = _compile_problems(
        {"id": "r", "task": "file_read", "with": {"encoding": "{{ 'utf-8' }}"}},
        {"id": "s", "task": "file_read", "with": {"path": "{{ 'x' }}", "bogus": 1}},
    )
    assert _where(problems) == [("r", "with.path"), ("s", "with.bogus")]


def test_every_compile_problem_is_listed_at_once() -> None:
    problems = _compile_problems(
        {"id": "a", "task": "nope"},
        echo("b", needs=["ghost"]),
        echo("c", **{"with": {"value": "{{ wat }}"}}),
        {"id": "d", "task": "file_read", "with": {}},
    )
    assert _where(problems) == [("a", "task"), ("b", "needs"), ("c", "with"), ("d", "with.path")]


def test_max_steps_limits_the_number_of_steps() -> None:
    steps = [echo(f"s{i}") for i in range(3)]
    _compile(*steps, max_steps=3)
    (problem,) = _compile_problems(*steps, max_steps=2)
    assert problem.field == "steps"
    assert "3 steps" in problem.message and "2" in problem.message


# =========================================================================== compiler: dependencies


def _deps(plan: Plan) -> dict[str, tuple[set[str], set[str]]]:
    return {k: (set(n.waits_for), set(n.data_deps)) for k, n in plan.nodes.items()}


def test_list_order_makes_sequential_dependencies() -> None:
    plan = _compile(echo("a"), echo("b"), echo("c"))
    assert {k: w for k, (w, _) in _deps(plan).items()} == {"a": set(), "b": {"a"}, "c": {"b"}}
    # list order alone is ordering, not a data dependency (a skip does not propagate)
    assert all(not n.data_deps for n in plan.nodes.values())


def test_parallel_members_depend_on_the_previous_item_and_the_next_item_waits_for_all() -> None:
    plan = _compile(echo("a"), {"parallel": [echo("b"), echo("c")]}, echo("d"))
    waits = {k: w for k, (w, _) in _deps(plan).items()}
    assert waits == {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}}


def test_dependants_are_the_reverse_of_waits_for() -> None:
    plan = _compile(echo("a"), {"parallel": [echo("b"), echo("c")]}, echo("d"))
    assert sorted(plan.nodes["a"].dependants) == ["b", "c"]
    assert plan.nodes["b"].dependants == ["d"] and plan.nodes["d"].dependants == []


def test_explicit_needs_override_list_order() -> None:
    plan = _compile(echo("a"), echo("b"), echo("c", needs=["a"]), echo("d", needs=[]))
    deps = _deps(plan)
    assert deps["c"] == ({"a"}, {"a"})  # needs are ordering and data dependencies
    assert deps["d"] == (set(), set())  # needs: [] means "start at once"


def test_template_references_add_data_dependencies() -> None:
    plan = _compile(echo("a"), echo("b"), echo("c", **{"with": {"value": "{{ steps.a.output.value }}"}}))
    assert _deps(plan)["c"] == ({"a", "b"}, {"a"})


def test_template_references_add_to_explicit_needs() -> None:
    plan = _compile(echo("a"), echo("b"), echo("c", needs=["b"], **{"if": "{{ steps.a.output.value }}"}))
    assert _deps(plan)["c"] == ({"a", "b"}, {"a", "b"})


def test_status_only_reads_are_ordering_but_not_data_dependencies() -> None:
    plan = _compile(echo("a"), echo("b"), echo("c", needs=[], **{"if": "{{ steps.a.status == 'skipped' }}"}))
    assert _deps(plan)["c"] == ({"a"}, set())


def test_status_read_by_subscript_is_also_status_only() -> None:
    for expr in ("{{ steps.a['status'] == 'skipped' }}", "{{ steps['a']['status'] == 'skipped' }}"):
        plan = _compile(echo("a"), echo("b", needs=[], **{"if": expr}))
        assert _deps(plan)["b"] == ({"a"}, set()), expr


def test_reading_status_and_output_of_the_same_step_is_a_data_dependency() -> None:
    plan = _compile(
        echo("a"), echo("b", needs=[], **{"if": "{{ steps.a.status == 'succeeded' and steps.a.output.value }}"})
    )
    assert _deps(plan)["b"] == ({"a"}, {"a"})


# =========================================================================== inputs


INPUTS = {
    "report": {"type": "string"},
    "count": {"type": "integer", "default": 3},
    "verbose": {"type": "boolean", "default": False},
    "files": {"type": "array", "default": []},
}


def _inputs_problems(given: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ValidationFailed) as info:
        resolve_inputs(_wf(echo("a"), inputs=INPUTS), given)
    return info.value.problems


def test_input_defaults_are_applied() -> None:
    assert resolve_inputs(_wf(echo("a"), inputs=INPUTS), {"report": "bug.md"}) == {
        "report": "bug.md",
        "count": 3,
        "verbose": False,
        "files": [],
    }


def test_given_inputs_override_defaults() -> None:
    resolved = resolve_inputs(_wf(echo("a"), inputs=INPUTS), {"report": "r", "count": 5, "files": ["x"]})
    assert resolved["count"] == 5 and resolved["files"] == ["x"]


def test_a_missing_required_input_is_named() -> None:
    (problem,) = _inputs_problems({})
    assert problem.field == "inputs.report"
    assert "missing required input" in problem.message


def test_an_input_declared_with_default_null_is_optional() -> None:
    wf = _wf(echo("a"), inputs={"x": {"type": "string", "default": None}})
    assert resolve_inputs(wf, None) == {"x": None}


def test_a_default_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_workflow({"name": "x", "inputs": {"n": {"type": "integer", "default": "many"}}, "steps": [echo("a")]})
    (problem,) = info.value.problems
    assert problem.field is not None and problem.field.startswith("inputs.n")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("count", "3", "integer"), ("verbose", 1, "boolean"), ("files", "a.txt", "array")],
)
def test_an_input_of_the_wrong_type_is_named(name: str, value: Any, expected: str) -> None:
    (problem,) = _inputs_problems({"report": "r", name: value})
    assert problem.field == f"inputs.{name}"
    assert f"expected {expected}" in problem.message


def test_an_unknown_input_is_refused() -> None:
    (problem,) = _inputs_problems({"report": "r", "extra": 1})
    assert problem.field == "inputs.extra"
    assert "unknown input" in problem.message


def test_every_input_problem_is_listed_at_once() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_inputs(_wf(echo("a"), inputs=INPUTS), {"count": "3", "extra": 1})
    assert sorted(p.field for p in info.value.problems) == ["inputs.count", "inputs.extra", "inputs.report"]
    assert info.value.message.startswith("invalid inputs")


def test_plan_resolve_inputs_uses_the_workflow() -> None:
    plan = _compile(echo("a"), inputs={"n": {"type": "number", "default": 1.5}})
    assert plan.resolve_inputs({}) == {"n": 1.5}
    assert plan.resolve_inputs({"n": 2}) == {"n": 2}


def test_a_cycle_is_listed_beside_every_other_problem_of_the_document() -> None:
    problems = _compile_problems(
        echo("a", needs=["c"]),
        echo("b", needs=["a", "ghost"]),
        echo("c", needs=["b"], **{"with": {"value": "{{ inputs.nope }}"}}),
        echo("a"),
    )
    messages = " | ".join(p.message for p in problems)
    assert "duplicate step id 'a'" in messages
    assert "unknown step 'ghost'" in messages
    assert "unknown input 'nope'" in messages
    (cycle,) = [p for p in problems if "dependency cycle" in p.message]
    assert sorted(set(cycle.message.split(": ")[-1].split(" -> "))) == ["a", "b", "c"]


def test_two_separate_cycles_are_both_listed() -> None:
    problems = _compile_problems(
        echo("a", needs=["b"]), echo("b", needs=["a"]), echo("c", needs=["d"]), echo("d", needs=["c"])
    )
    cycles = sorted(sorted(set(p.message.split(": ")[-1].split(" -> "))) for p in problems)
    assert cycles == [["a", "b"], ["c", "d"]]
