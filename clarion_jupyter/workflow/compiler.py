"""Compile a validated document into a :class:`Plan`: a DAG of nodes with compiled templates.

Compilation is also validation: it collects every problem (duplicate ids, unknown ``needs``,
cycles, unknown task types, bad or mistyped templates, invalid static config) and raises
them together, each naming its step and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..core.errors import Problem, ValidationFailed
from ..storage.records import digest
from ..task.base import Task
from ..task.registry import TaskRegistry
from .models import ParallelGroup, Step, Workflow, matches_type
from .templates import CONTEXT_NAMES, CompiledValue, TemplateError, compile_value


@dataclass(slots=True)
class Node:
    """One step compiled: its task class, its templates parsed once, and what it waits for, so executing it needs no parsing."""

    step: Step
    task: type[Task]
    config: CompiledValue
    condition: CompiledValue | None
    for_each: CompiledValue | None
    approval_if: CompiledValue | None
    """When the step has ``approval:``: whether to ask (a condition evaluated like ``if``)."""
    waits_for: frozenset[str]
    """Steps that must be finished (any status) before this one starts."""
    data_deps: frozenset[str]
    """Steps whose skip or failure skips this one (explicit ``needs`` and outputs read)."""
    dependants: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.step.id


@dataclass(slots=True)
class Plan:
    """A workflow compiled and validated once: the DAG the executor walks, reused by every run of the same document."""

    workflow: Workflow
    nodes: dict[str, Node]
    outputs: CompiledValue
    agent_ids: frozenset[str]
    document: dict[str, Any] = field(default_factory=dict)
    """The normalised document, stored once per distinct ``digest`` as each run's snapshot."""
    digest: str = ""

    def resolve_inputs(self, given: dict[str, Any] | None) -> dict[str, Any]:
        return resolve_inputs(self.workflow, given)


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, step: str | None, field_name: str, message: str) -> None:
        loc = f"step '{step}' field '{field_name}'" if step else field_name
        self.items.append(Problem(loc=loc, message=message, step=step, field=field_name))


def compile_workflow(workflow: Workflow, registry: TaskRegistry, max_steps: int | None = None) -> Plan:
    problems = _Problems()
    steps = workflow.iter_steps()
    if max_steps is not None and len(steps) > max_steps:
        problems.add(None, "steps", f"{len(steps)} steps is more than the limit of {max_steps}")
        raise ValidationFailed(problems.items)
    ids = _check_ids(steps, problems)
    previous = _list_order(workflow)
    nodes: dict[str, Node] = {}
    edges: dict[str, frozenset[str]] = {}
    agent_ids: set[str] = set()
    for step in steps:
        node = _compile_step(step, registry, ids, previous[step.id], workflow, problems)
        if step.id in edges:
            continue  # a duplicate id, reported above
        edges[step.id] = node.waits_for if node is not None else _declared_order(step, ids, previous[step.id])
        if node is not None:
            nodes[step.id] = node
            if node.task.needs_agent and isinstance(step.with_.get("agent"), str) and "{" not in step.with_["agent"]:
                agent_ids.add(step.with_["agent"])
    outputs = _compile_field(workflow.outputs, None, "outputs", ids, workflow, problems, in_map=False)
    _check_cycles(edges, problems)
    if problems.items:
        raise ValidationFailed(problems.items)
    for node in nodes.values():
        for dep in node.waits_for:
            nodes[dep].dependants.append(node.id)
    document = workflow.to_document()
    return Plan(
        workflow=workflow,
        nodes=nodes,
        outputs=outputs or compile_value({}),
        agent_ids=frozenset(agent_ids),
        document=document,
        digest=digest(document),
    )


def _check_ids(steps: list[Step], problems: _Problems) -> set[str]:
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            problems.add(step.id, "id", f"duplicate step id '{step.id}'")
        seen.add(step.id)
    return seen


def _list_order(workflow: Workflow) -> dict[str, frozenset[str]]:
    """For each step, the steps of the list item before it (a group counts as one item)."""
    order: dict[str, frozenset[str]] = {}
    before: frozenset[str] = frozenset()
    for item in workflow.steps:
        members = item.parallel if isinstance(item, ParallelGroup) else [item]
        for step in members:
            order.setdefault(step.id, before)
        before = frozenset(s.id for s in members)
    return order


def _compile_step(
    step: Step,
    registry: TaskRegistry,
    ids: set[str],
    previous: frozenset[str],
    workflow: Workflow,
    problems: _Problems,
) -> Node | None:
    task = registry.get(step.task)
    if task is None:
        known = ", ".join(registry.names())
        problems.add(step.id, "task", f"unknown task type '{step.task}' (known: {known})")
    for need in step.needs or []:
        if need not in ids:
            problems.add(step.id, "needs", f"unknown step '{need}'")
        elif need == step.id:
            problems.add(step.id, "needs", "a step cannot need itself")
    in_map = step.for_each is not None
    config = _compile_field(step.with_, step.id, "with", ids, workflow, problems, in_map)
    condition = (
        _compile_field(step.if_, step.id, "if", ids, workflow, problems, in_map) if step.if_ is not None else None
    )
    for_each = _compile_field(step.for_each, step.id, "for_each", ids, workflow, problems, False) if in_map else None
    approval_if = (
        _compile_field(step.approval.if_, step.id, "approval.if", ids, workflow, problems, in_map)
        if step.approval is not None
        else None
    )
    if task is not None:
        _check_config(step, task, problems, templated=config is None or not config.constant)
    if (
        task is None
        or config is None
        or (step.if_ is not None and condition is None)
        or (in_map and for_each is None)
        or (step.approval is not None and approval_if is None)
    ):
        return None
    refs = [c.refs for c in (config, condition, for_each, approval_if) if c is not None]
    read = frozenset().union(*(r.steps for r in refs)) - {step.id}
    outputs_read = frozenset().union(*(r.outputs for r in refs)) - {step.id}
    needs = frozenset(n for n in step.needs or [] if n in ids and n != step.id)
    waits_for = (needs if step.needs is not None else previous) | read
    return Node(
        step=step,
        task=task,
        config=config,
        condition=condition,
        for_each=for_each,
        approval_if=approval_if,
        waits_for=waits_for,
        data_deps=needs | outputs_read,
    )


def _compile_field(
    value: Any,
    step_id: str | None,
    field_name: str,
    ids: set[str],
    workflow: Workflow,
    problems: _Problems,
    in_map: bool,
) -> CompiledValue | None:
    try:
        compiled = compile_value(value)
    except TemplateError as exc:
        problems.add(step_id, field_name, str(exc))
        return None
    refs = compiled.refs
    ok = True
    for name in sorted(refs.names - CONTEXT_NAMES):
        problems.add(
            step_id, field_name, f"unknown variable '{name}' (templates can use {', '.join(sorted(CONTEXT_NAMES))})"
        )
        ok = False
    if "item" in refs.names and not in_map:
        problems.add(step_id, field_name, "'item' is only defined inside a for_each step's with/if")
        ok = False
    for name in sorted(refs.inputs - set(workflow.inputs)):
        problems.add(step_id, field_name, f"unknown input '{name}'")
        ok = False
    if refs.dynamic_steps:
        problems.add(
            step_id,
            field_name,
            "read steps by a literal id (steps.<id> or steps['<id>']): other access cannot be checked or ordered",
        )
        ok = False
    for name in sorted(refs.steps - ids):
        problems.add(step_id, field_name, f"unknown step '{name}'")
        ok = False
    if step_id is not None and step_id in refs.outputs:
        problems.add(step_id, field_name, "a step cannot read its own output")
        ok = False
    return compiled if ok else None


def _check_config(step: Step, task: type[Task], problems: _Problems, templated: bool) -> None:
    """Check ``with`` against the task's config model as far as templates allow."""
    fields = task.Config.model_fields
    aliases = {f.alias or name for name, f in fields.items()} | set(fields)
    forbid = task.Config.model_config.get("extra") == "forbid"
    for key in step.with_:
        if forbid and key not in aliases:
            problems.add(
                step.id, f"with.{key}", f"unknown field for task '{step.task}' (fields: {', '.join(sorted(fields))})"
            )
    if not templated:  # (compiling ``with`` again here would raise on a template syntax error)
        try:
            task.Config.model_validate(step.with_)
        except ValidationError as exc:
            for err in exc.errors():
                if err["type"] == "extra_forbidden":
                    continue
                where = ".".join(str(p) for p in err["loc"])
                problems.add(step.id, f"with.{where}" if where else "with", err["msg"])
        return
    for name, info in fields.items():
        if info.is_required() and (info.alias or name) not in step.with_:
            problems.add(step.id, f"with.{info.alias or name}", "Field required")


def _declared_order(step: Step, ids: set[str], previous: frozenset[str]) -> frozenset[str]:
    """What a step that did not compile waits for, as far as its document says: its known
    ``needs``, or list order. Enough to find the cycles it is on next to its other problems."""
    if step.needs is None:
        return previous
    return frozenset(n for n in step.needs if n in ids and n != step.id)


def _check_cycles(edges: dict[str, frozenset[str]], problems: _Problems) -> None:
    """Report every cycle (each one once, naming its steps in order) with a depth-first search."""
    state: dict[str, int] = {}
    path: list[str] = []
    reported: set[frozenset[str]] = set()

    def visit(node_id: str) -> None:
        state[node_id] = 1
        path.append(node_id)
        for dep in sorted(edges[node_id]):
            if dep not in edges:
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.add(dep, "needs", "dependency cycle: " + " -> ".join(reversed(cycle)))
            elif state.get(dep) is None:
                visit(dep)
        state[node_id] = 2
        path.pop()

    for node_id in edges:
        if state.get(node_id) is None:
            visit(node_id)


def resolve_inputs(workflow: Workflow, given: dict[str, Any] | None) -> dict[str, Any]:
    """Apply defaults and check every input against its declared type."""
    given = dict(given or {})
    problems = _Problems()
    for name in sorted(set(given) - set(workflow.inputs)):
        problems.add(None, f"inputs.{name}", "unknown input (not declared by the workflow)")
    resolved: dict[str, Any] = {}
    for name, spec in workflow.inputs.items():
        if name not in given:
            if spec.required:
                problems.add(None, f"inputs.{name}", f"missing required input of type {spec.type}")
            else:
                resolved[name] = spec.default
            continue
        value = given[name]
        if not matches_type(value, spec.type):
            problems.add(None, f"inputs.{name}", f"expected {spec.type}, got {type(value).__name__} {value!r:.80}")
            continue
        resolved[name] = value
    if problems.items:
        raise ValidationFailed(problems.items, what="inputs")
    return resolved
