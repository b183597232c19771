"""Jinja2 templates in step configs, compiled once and evaluated per step.

Templates run in the sandbox of :mod:`..core.sandbox` (immutable, strict undefined, with an
evaluation budget), so a typo is an error rather than an empty string and no template can
change what it reads or hold the event loop. A string that is exactly one expression
(``"{{ inputs.files }}"``) yields the expression's value as plain data (a fresh copy, lazy
results as lists, never an undefined value hidden inside), so lists stay lists; anything else
renders to text. An evaluation error names the field it happened in. Compilation is cached by source text, and
:func:`compile_value` returns a constant for values with no template in them, so the hot path
of a step with a static config does no template work at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from ..core.sandbox import budget, environment

CONTEXT_NAMES = frozenset({"inputs", "steps", "item", "run"})
_SINGLE_EXPRESSION = re.compile(r"^[ \t]*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}[ \t]*\Z", re.DOTALL)
"""A whole value that is one expression (spaces around it allowed, not line breaks: text such
as ``"{{ x }}\\n"`` or a YAML block scalar keeps its newline and renders as text)."""

Renderer = Callable[[dict[str, Any]], Any]


_env = environment


class TemplateError(Exception):
    """A template failed to compile or to evaluate; the message is meant for users.

    ``field`` is the dotted path, inside the compiled value, of the template that failed.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"field '{field}': {message}" if field else message)
        self.message = message
        self.field = field

    def within(self, key: str | int) -> TemplateError:
        """The same error, one level further out: ``key`` is prefixed to the field path."""
        step = f"[{key}]" if isinstance(key, int) else str(key)
        inner = self.field or ""
        return TemplateError(
            self.message, step + ("" if not inner else inner if inner.startswith("[") else "." + inner)
        )


@dataclass(frozen=True, slots=True)
class References:
    """What a template reads: used to validate names and to derive data dependencies."""

    names: frozenset[str] = frozenset()
    steps: frozenset[str] = frozenset()
    inputs: frozenset[str] = frozenset()
    status_only: frozenset[str] = frozenset()
    """Steps read only through ``steps.<id>.status``: ordering, but no data dependency."""
    dynamic_steps: bool = False
    """``steps`` used other than with a literal id (``steps[x]``, ``steps | list``)."""

    @property
    def outputs(self) -> frozenset[str]:
        return self.steps - self.status_only


@dataclass(slots=True)
class CompiledValue:
    """A config value with its templates compiled once, and the references they read, which the compiler turns into dependencies."""

    render: Renderer
    refs: References = field(default_factory=References)
    constant: bool = True


def has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@lru_cache(maxsize=8192)
def _compile_string(text: str) -> tuple[Renderer, References]:
    match = _SINGLE_EXPRESSION.match(text)
    try:
        if match:
            expr = match.group("expr")
            source = "{{" + expr + "}}"
            render = _env.compile_expression(expr, undefined_to_none=False)
        else:
            source = text
            template = _env.from_string(text)
            render = template.render
        refs = _references(_env.parse(source))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise TemplateError(f"template too complex to compile: {type(exc).__name__}") from None
    except Exception as exc:  # e.g. ValueError for an integer literal of 5,000 digits
        raise TemplateError(f"template cannot be compiled: {type(exc).__name__}: {exc}") from None
    return _guarded(render), refs


def _guarded(render: Callable[[dict[str, Any]], Any]) -> Renderer:
    """``render`` (the sandbox's expression or template) meters itself within the budget."""

    def run(ctx: dict[str, Any]) -> Any:
        try:
            return render(ctx)
        except TemplateError:
            raise
        except Exception as exc:  # any failure inside user template code is the user's error
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None

    return run


def _references(ast: nodes.Template) -> References:
    from jinja2 import meta

    names = frozenset(meta.find_undeclared_variables(ast))
    steps: dict[str, int] = {}
    status_reads: dict[str, int] = {}
    inputs = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        inner = _name_key(node)
        if inner is not None:
            name, key = inner
            if name == "steps":
                steps[key] = steps.get(key, 0) + 1
            elif name == "inputs":
                inputs.add(key)
        elif (node.attr if isinstance(node, nodes.Getattr) else _const(node.arg)) == "status":
            outer = _name_key(node.node)
            if outer is not None and outer[0] == "steps":
                status_reads[outer[1]] = status_reads.get(outer[1], 0) + 1
    status_only = frozenset(k for k, n in status_reads.items() if steps.get(k) == n)
    uses = sum(1 for node in ast.find_all(nodes.Name) if node.name == "steps")
    return References(
        names=names,
        steps=frozenset(steps),
        inputs=frozenset(inputs),
        status_only=status_only,
        dynamic_steps=uses > sum(steps.values()),
    )


def _name_key(node: nodes.Node) -> tuple[str, str] | None:
    """``(name, key)`` for ``name.key`` or ``name["key"]``, else None."""
    if not isinstance(node, (nodes.Getattr, nodes.Getitem)) or not isinstance(node.node, nodes.Name):
        return None
    key = node.attr if isinstance(node, nodes.Getattr) else _const(node.arg)
    return None if key is None else (node.node.name, key)


def _const(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def compile_value(value: Any) -> CompiledValue:
    """Compile every template inside a JSON-like value (strings, lists, dicts, nested)."""
    if isinstance(value, str):
        if not has_template(value):
            return CompiledValue(render=lambda ctx, v=value: v)
        render, refs = _compile_string(value)
        return CompiledValue(render=render, refs=refs, constant=False)
    if isinstance(value, dict):
        parts = {k: compile_value(v) for k, v in value.items()}
        if all(p.constant for p in parts.values()):
            return CompiledValue(render=lambda ctx, v=value: v)
        pairs = [(k, p.render) for k, p in parts.items()]

        def render_dict(ctx: dict[str, Any]) -> dict[Any, Any]:
            with budget():
                return {k: _within(k, r, ctx) for k, r in pairs}

        return CompiledValue(
            render=render_dict,
            refs=_merge(p.refs for p in parts.values()),
            constant=False,
        )
    if isinstance(value, list):
        items = [compile_value(v) for v in value]
        if all(p.constant for p in items):
            return CompiledValue(render=lambda ctx, v=value: v)
        renders = list(enumerate(p.render for p in items))

        def render_list(ctx: dict[str, Any]) -> list[Any]:
            with budget():
                return [_within(i, r, ctx) for i, r in renders]

        return CompiledValue(
            render=render_list,
            refs=_merge(p.refs for p in items),
            constant=False,
        )
    return CompiledValue(render=lambda ctx, v=value: v)


def _within(key: str | int, render: Renderer, ctx: dict[str, Any]) -> Any:
    try:
        return render(ctx)
    except TemplateError as exc:
        raise exc.within(key) from None


def _merge(refs: Iterator[References]) -> References:
    refs = list(refs)
    steps = frozenset().union(*(r.steps for r in refs))
    outputs = frozenset().union(*(r.outputs for r in refs))
    return References(
        names=frozenset().union(*(r.names for r in refs)),
        steps=steps,
        inputs=frozenset().union(*(r.inputs for r in refs)),
        status_only=steps - outputs,
        dynamic_steps=any(r.dynamic_steps for r in refs),
    )


_FALSY_TEXT = frozenset({"", "false", "0", "no", "none", "null", "off"})


def truthy(value: Any) -> bool:
    """Truth of an ``if:`` result; rendered text such as ``"False"`` counts as false."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSY_TEXT
    return bool(value)
