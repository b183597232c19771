"""Re-running a run: which of its steps a change reaches, and what the new run copies from it.

A re-run is a new run of the parent's workflow snapshot. Every step that neither depends on
``from_step`` nor reads a changed input or override, and that succeeded in the parent, is
*reused*: the executor copies its stored output (and its ``for_each`` items') without
calling its task. The rest runs. The compiler already knows what every step reads, so the
steps that run again are exactly those a change reaches, through data dependencies only
(a step that merely comes later in the document is not downstream of one it does not read).

A ``for_each`` item counts as a step: when only the list a ``for_each`` maps over can have
changed (its task's config reads nothing that changed), each item whose value the parent
also mapped over, and which succeeded there, is reused; only the new or failed items run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import Problem, ValidationFailed
from ..core.protocol import StepStatus
from ..storage.records import RunRecord, StepRecord, latest_attempts
from .budget import Budget
from .compiler import Node, Plan
from .models import pydantic_problems
from .templates import TemplateError, compile_value


class AgentOverride(BaseModel):
    """What a re-run changes of an agent, for that run only (the saved agent stays as it is)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1)
    system_prompt: str | None = None
    parameters: dict[str, Any] | None = None


class StepOverride(BaseModel):
    """What a re-run changes of a step: its ``with`` keys given here replace the document's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    with_: dict[str, Any] = Field(alias="with")


class Overrides(BaseModel):
    """What a re-run changes for itself only: agents' model, prompt and parameters, and steps' ``with``."""

    model_config = ConfigDict(extra="forbid")

    agents: dict[str, AgentOverride] = Field(default_factory=dict)
    steps: dict[str, StepOverride] = Field(default_factory=dict)


class RerunRequest(BaseModel):
    """The body of ``POST /api/v3/runs/{run_id}/rerun``."""

    model_config = ConfigDict(extra="forbid")

    from_step: str | None = Field(None, min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Inputs that differ from the parent's; the others are the parent's."""
    overrides: Overrides = Field(default_factory=Overrides)
    budget: Budget | None = None
    """The new run's budget: its fields over the parent's."""
    cache: bool | None = None
    """The new run's choice for the LLM cache (not inherited from the parent)."""


def rerun_request(doc: dict[str, Any]) -> RerunRequest:
    """The request, or :class:`ValidationFailed` naming each bad field (what the API answers with 422)."""
    try:
        return RerunRequest.model_validate(doc)
    except ValidationError as exc:
        raise ValidationFailed(pydantic_problems(exc, doc), what="re-run") from None


@dataclass(slots=True)
class Rerun:
    """What the engine starts: the plan (step overrides applied), the inputs, the changes
    recorded on the run, the parent's records of each reused node (its items included), and,
    for a ``for_each`` that runs again, the parent's succeeded items by their values."""

    plan: Plan
    inputs: dict[str, Any]
    changes: dict[str, Any]
    reused: dict[str, list[StepRecord]]
    reused_items: dict[str, list[tuple[Any, StepRecord]]]


def plan_rerun(
    parent: RunRecord, steps: list[StepRecord], request: RerunRequest, compile_: Callable[[dict[str, Any]], Plan]
) -> Rerun:
    """Decide what a re-run of ``parent`` runs again; :class:`ValidationFailed` names the field."""
    document = _with_step_overrides(parent.workflow, request.overrides.steps)
    plan = compile_(document)
    # Only the inputs the workflow declares carry over: a run imported from v2 kept more (its project, its id).
    declared = plan.workflow.inputs
    inputs = plan.resolve_inputs({**{k: v for k, v in parent.inputs.items() if k in declared}, **request.inputs})
    changed_inputs = {k for k in declared if inputs.get(k) != parent.inputs.get(k)}
    problems = []
    if request.from_step is not None and request.from_step not in plan.nodes:
        problems.append(_problem("from_step", f"unknown step '{request.from_step}'"))
    agent_of = {node_id: _agent_of(node, parent.inputs) for node_id, node in plan.nodes.items()}
    used_agents = set(agent_of.values()) - {None}
    problems += [
        _problem(f"overrides.agents.{agent_id}", f"no step of this workflow uses agent '{agent_id}'")
        for agent_id in request.overrides.agents
        if agent_id not in used_agents
    ]
    if problems:
        raise ValidationFailed(problems, what="re-run")
    agents = request.overrides.agents.keys()
    roots = {
        node_id
        for node_id, node in plan.nodes.items()
        if node_id == request.from_step
        or node_id in request.overrides.steps
        or agent_of[node_id] in agents
        or _reads(node, "inputs") & changed_inputs
    }
    latest = latest_attempts(steps)
    reusable = {node_id: records for node_id, node in plan.nodes.items() if (records := _finished(node, latest))}
    rerun = _downstream(plan, roots | (plan.nodes.keys() - reusable.keys()))
    items = {
        node_id: pairs
        for node_id in rerun
        if plan.nodes[node_id].for_each is not None
        and node_id != request.from_step
        and node_id not in request.overrides.steps
        and agent_of[node_id] not in agents
        and not _item_reads(plan.nodes[node_id], "inputs") & changed_inputs
        and not _item_reads(plan.nodes[node_id], "steps") & rerun
        and (pairs := _parent_items(plan.nodes[node_id], latest, parent))
    }
    changes = {
        "from_step": request.from_step,
        "inputs": {k: {"from": parent.inputs.get(k), "to": inputs.get(k)} for k in sorted(changed_inputs)},
        "overrides": {k: v for k, v in request.overrides.model_dump(by_alias=True, exclude_none=True).items() if v},
    }
    return Rerun(
        plan=plan,
        inputs=inputs,
        changes={k: v for k, v in changes.items() if v},
        reused={node_id: records for node_id, records in reusable.items() if node_id not in rerun},
        reused_items=items,
    )


def _with_step_overrides(document: dict[str, Any], overrides: dict[str, StepOverride]) -> dict[str, Any]:
    """The document with each overridden step's ``with`` keys replaced (a copy: the parent's snapshot stays)."""
    if not overrides:
        return document
    document = copy.deepcopy(document)
    found = set()
    for item in document.get("steps", []):
        for step in item.get("parallel", [item]) if isinstance(item, dict) else []:
            override = overrides.get(step.get("id")) if isinstance(step, dict) else None
            if override is not None:
                step["with"] = {**(step.get("with") or {}), **override.with_}
                found.add(step["id"])
    if missing := sorted(overrides.keys() - found):
        raise ValidationFailed(
            [_problem(f"overrides.steps.{step_id}", f"unknown step '{step_id}'") for step_id in missing], what="re-run"
        )
    return document


def _agent_of(node: Node, inputs: dict[str, Any]) -> str | None:
    """The agent a step asked in the parent run: its ``with.agent``, rendered when it is a
    template of the inputs (``{{ inputs.agent }}``, as agent runs and v2's imported runs name it)."""
    agent = node.step.with_.get("agent")
    if not isinstance(agent, str):
        return None
    try:
        rendered = compile_value(agent).render({"inputs": inputs, "steps": {}})
    except TemplateError:  # it reads another step's output: known only while the run goes on
        return None
    return rendered if isinstance(rendered, str) else None


def _reads(node: Node, kind: str) -> frozenset[str]:
    """The steps (``kind="steps"``) or inputs a node's templates read."""
    compiled = (node.config, node.condition, node.for_each, node.approval_if)
    return frozenset().union(*(getattr(c.refs, kind) for c in compiled if c is not None))


def _item_reads(node: Node, kind: str) -> frozenset[str]:
    """What a ``for_each`` node's items read besides the list they map over."""
    compiled = (node.config, node.condition, node.approval_if)
    return frozenset().union(*(getattr(c.refs, kind) for c in compiled if c is not None))


def _parent_items(node: Node, latest: dict[str, StepRecord], parent: RunRecord) -> list[tuple[Any, StepRecord]]:
    """The parent's succeeded items of a ``for_each`` node, each with the value it mapped over
    (the list rendered again from what the parent's steps gave); none if it cannot be rendered."""
    context = {
        "inputs": parent.inputs,
        "steps": {
            r.key: {"output": r.output, "status": str(r.status)} for r in latest.values() if r.item_index is None
        },
        "run": {"id": parent.run_id, "started_at": parent.started_at},
    }
    try:
        values = node.for_each.render(context)
    except TemplateError:
        return []
    if not isinstance(values, list):
        return []
    return [
        (values[r.item_index], r)
        for r in latest.values()
        if r.step_id == node.id and r.item_index is not None and r.item_index < len(values)
        and r.status == StepStatus.succeeded
    ]  # fmt: skip


def _finished(node: Node, latest: dict[str, StepRecord]) -> list[StepRecord]:
    """The parent's records of a node that succeeded there (with every item of a ``for_each``), or none."""
    record = latest.get(node.id)
    if record is None or record.status != StepStatus.succeeded:
        return []
    if node.for_each is None:
        return [record]
    items = [r for key, r in latest.items() if r.step_id == node.id and key != node.id]
    count = len(record.output) if isinstance(record.output, list) else -1
    return [record, *items] if len(items) == count else []


def _downstream(plan: Plan, roots: set[str]) -> set[str]:
    """``roots`` and every node that reads one of them, transitively (data dependencies, not order)."""
    readers: dict[str, set[str]] = {}
    for node_id, node in plan.nodes.items():
        for dep in _reads(node, "steps") | set(node.step.needs or ()):
            readers.setdefault(dep, set()).add(node_id)
    reached, stack = set(roots), list(roots)
    while stack:
        for reader in readers.get(stack.pop(), ()):
            if reader not in reached:
                reached.add(reader)
                stack.append(reader)
    return reached


def model_overrides(workflow: dict[str, Any], model: str, agent: str | None = None) -> dict[str, Any]:
    """The ``overrides`` that give ``agent`` (every agent the workflow's steps name, when None)
    another model: what ``clarion rerun --model`` and ``run.rerun(model=...)`` ask for."""
    named = {
        agent_id
        for item in workflow.get("steps", [])
        for step in item.get("parallel", [item])
        if isinstance(agent_id := (step.get("with") or {}).get("agent"), str)
    }
    chosen = [agent] if agent is not None else sorted(named)
    return {"agents": {agent_id: {"model": model} for agent_id in chosen}}


def agent_overrides(changes: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A run's agent overrides, from its stored ``changes`` (so a resumed re-run keeps them)."""
    return ((changes or {}).get("overrides") or {}).get("agents") or {}


def _problem(field: str, message: str) -> Problem:
    return Problem(loc=field, message=message, field=field)
