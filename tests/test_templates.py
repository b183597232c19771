"""Templates in step configs: sandboxed Jinja2 with strict undefined, native values for a
single expression, text otherwise, compiled once per source text."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest

from clarion_jupyter.core.sandbox import DEFAULT_BUDGET
from clarion_jupyter.workflow.templates import (
    TemplateError,
    _compile_string,
    compile_value,
    has_template,
    truthy,
)

CTX: dict[str, Any] = {
    "inputs": {"files": ["a.txt", "b.txt"], "n": 3, "report": "bug.md"},
    "steps": {"read": {"output": {"content": "hello", "json": '{"k": [1, 2]}'}, "status": "succeeded"}},
    "run": {"id": "r1", "started_at": "2026-01-01T00:00:00Z"},
}


def render(value: Any, ctx: dict[str, Any] | None = None) -> Any:
    return compile_value(value).render(CTX if ctx is None else ctx)


# --------------------------------------------------------------------------- values


def test_a_single_expression_yields_a_native_list() -> None:
    assert render("{{ inputs.files }}") == ["a.txt", "b.txt"]


def test_a_single_expression_yields_native_numbers_dicts_and_booleans() -> None:
    assert render("{{ inputs.n + 1 }}") == 4
    assert render("  {{ steps.read.output }}  ") == {"content": "hello", "json": '{"k": [1, 2]}'}
    assert render("{{ inputs.n > 2 }}") is True
    assert render("{{ none }}") is None


def test_anything_else_renders_to_text() -> None:
    assert render("files: {{ inputs.files | join(',') }}") == "files: a.txt,b.txt"
    assert render("{{ inputs.n }}{{ inputs.n }}") == "33"
    assert render("{% for f in inputs.files %}[{{ f }}]{% endfor %}") == "[a.txt][b.txt]"


def test_text_without_template_markers_is_a_constant() -> None:
    compiled = compile_value("plain {text}")
    assert compiled.constant
    assert compiled.render({}) == "plain {text}"
    assert not has_template("plain {text}") and has_template("{{ x }}") and has_template("{% if x %}{% endif %}")


def test_a_typo_raises_template_error_instead_of_rendering_empty() -> None:
    with pytest.raises(TemplateError, match="reprot"):
        render("{{ inputs.reprot }}")
    with pytest.raises(TemplateError, match="reprot"):
        render("report: {{ inputs.reprot }}")


def test_an_undefined_top_level_name_raises_template_error() -> None:
    with pytest.raises(TemplateError):
        render("{{ item }}")


def test_errors_inside_template_code_become_template_errors() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ 1 / 0 }}")


def test_a_syntax_error_raises_template_error_at_compile_time() -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        compile_value("{{ 1 + }}")
    with pytest.raises(TemplateError, match="syntax error"):
        compile_value("a {% if %} b")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs.__class__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "x {{ ().__class__.__bases__[0] }}",
    ],
)
def test_the_sandbox_blocks_access_to_python_internals(source: str) -> None:
    with pytest.raises(TemplateError, match=r"(?i)unsafe|security"):
        render(source)


def test_fromjson_parses_json_text() -> None:
    assert render("{{ steps.read.output.json | fromjson }}") == {"k": [1, 2]}
    assert render("{{ (steps.read.output.json | fromjson).k[1] }}") == 2


def test_fromjson_of_invalid_json_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        render("{{ steps.read.output.content | fromjson }}")


# --------------------------------------------------------------------------- truthy


@pytest.mark.parametrize("value", ["false", "False", " FALSE ", "0", "", "no", "none", "null", "off", 0, None, [], {}])
def test_falsy_rendered_text_and_empty_values_are_false(value: Any) -> None:
    assert truthy(value) is False


@pytest.mark.parametrize("value", ["true", "yes", "1", "bug", " x ", 1, [0], {"a": 1}, True])
def test_other_values_are_true(value: Any) -> None:
    assert truthy(value) is True


# --------------------------------------------------------------------------- compilation


def test_the_compile_cache_returns_the_same_renderer_for_the_same_text() -> None:
    text = "{{ inputs.n * 7 }}"
    assert _compile_string(text) is _compile_string(text)
    assert compile_value(text).render is compile_value(text).render


def test_nested_dicts_and_lists_compile_with_constants_untouched() -> None:
    constant_part = {"b": "c", "n": 1, "flag": True, "none": None}
    value = {"a": [1, "{{ inputs.files }}", constant_part], "k": "const", "t": "n={{ inputs.n }}"}
    compiled = compile_value(value)
    assert not compiled.constant
    out = compiled.render(CTX)
    assert out == {"a": [1, ["a.txt", "b.txt"], constant_part], "k": "const", "t": "n=3"}
    assert out["a"][2] is constant_part  # constant sub-values are handed back as they are


def test_a_nested_value_without_templates_is_one_constant() -> None:
    value = {"a": [1, "z", {"b": None}], "c": 2.5}
    compiled = compile_value(value)
    assert compiled.constant
    assert compiled.render({}) is value
    assert compiled.refs.names == frozenset()


def test_references_name_the_inputs_and_steps_read() -> None:
    refs = compile_value({"x": "{{ inputs.report }}", "y": ["{{ steps.read.output.content }} {{ inputs['n'] }}"]}).refs
    assert refs.names == {"inputs", "steps"}
    assert refs.inputs == {"report", "n"}
    assert refs.steps == {"read"} and refs.outputs == {"read"}
    assert refs.status_only == frozenset()


def test_steps_read_only_through_status_are_status_only() -> None:
    refs = compile_value("{{ steps.a.status == 'failed' or steps['b'].output.ok }}").refs
    assert refs.steps == {"a", "b"}
    assert refs.status_only == {"a"}
    assert refs.outputs == {"b"}


def test_status_only_is_lost_when_another_field_reads_the_output() -> None:
    refs = compile_value({"if": "{{ steps.a.status }}", "v": "{{ steps.a.output }}"}).refs
    assert refs.status_only == frozenset()
    assert refs.outputs == {"a"}


def test_item_and_loop_variables_are_referenced_names() -> None:
    assert compile_value("{{ item.path }}").refs.names == {"item"}
    # names bound inside the template are not context names
    assert compile_value("{% for f in inputs.files %}{{ f }}{% endfor %}").refs.names == {"inputs"}


def test_status_read_by_subscript_counts_as_a_status_read() -> None:
    refs = compile_value("{{ steps['a']['status'] }} {{ steps.b['status'] }} {{ steps.c.status }}").refs
    assert refs.status_only == {"a", "b", "c"}
    assert refs.outputs == frozenset()


def test_an_expression_followed_by_a_newline_renders_as_text_keeping_the_newline() -> None:
    assert compile_value("{{ name }}\n").render({"name": "a.txt"}) == "a.txt\n"
    assert compile_value(" {{ items }} ").render({"items": [1, 2]}) == [1, 2]


class Collector:
    """Stands in for the collector kicking in mid-template: full collections on attribute
    access, repeated until they have taken three times the budget (one alone may be quicker)."""

    @property
    def pause(self) -> str:
        started = time.perf_counter()
        while time.perf_counter() - started < 3 * DEFAULT_BUDGET.time_s:
            gc.collect()
        return "done"


def test_a_garbage_collection_inside_a_template_does_not_count_against_its_budget() -> None:
    live = [[] for _ in range(300_000)]  # a heap big enough that the time goes to collecting
    for item in live:
        item.append(item)
    template = "{% for i in range(3) %}{{ c.pause if loop.first else i }}{% endfor %}"  # ticks after the pause
    assert render(template, {"c": Collector()}) == "done12"
    del live
