"""Comparing runs: per step key, what each run did, with the steps that differ marked.

What differs is what a person re-running wants to see: a step whose status or output is
not the same in every run. Durations, attempts and tokens are shown beside, never a reason
to mark a step (two runs of one step never take the same time): a task that reports its own
``duration_ms`` in its output (``shell`` does) is compared without it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from .models import StepRun, WorkflowRun


class StepInRun(BaseModel):
    """One step of one run, as the comparison shows it; all None where the run has no such step."""

    status: str | None = None
    duration_ms: float | None = None
    attempts: int | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    output: Any = None
    reused_from: dict[str, Any] | None = None


class ComparedStep(BaseModel):
    """One step key across the compared runs: each run's status, time, attempts, tokens, cost and output, and whether they differ."""

    key: str
    differs: bool
    per_run: list[StepInRun]
    """In the order of ``runs``."""


class ComparedRun(BaseModel):
    """One compared run: its inputs, what it changed from its parent, and its totals."""

    run_id: str
    workflow_id: str
    status: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    parent_run_id: str | None = None
    changes: dict[str, Any] | None = None
    totals: dict[str, Any] = Field(default_factory=dict)
    """``duration_ms``, ``steps``, ``tokens``, ``cost_usd``."""


class RunComparison(BaseModel):
    """What ``GET /api/v3/runs/compare?ids=A,B`` answers."""

    runs: list[ComparedRun]
    steps: list[ComparedStep]


def compare_runs(runs: list[WorkflowRun]) -> RunComparison:
    """Every step key any of ``runs`` has, in first-seen order."""
    by_key = [{step.key: step for step in run.steps} for run in runs]
    keys = list(dict.fromkeys(key for steps in by_key for key in steps))
    compared = []
    for key in keys:
        per_run = [_step(steps.get(key)) for steps in by_key]
        seen = {(s.status, _canonical(s.output)) for s in per_run}
        compared.append(ComparedStep(key=key, differs=len(seen) > 1, per_run=per_run))
    return RunComparison(runs=[_run(run) for run in runs], steps=compared)


def _step(step: StepRun | None) -> StepInRun:
    if step is None:
        return StepInRun()
    usage = step.usage
    return StepInRun(
        status=step.status.value,
        duration_ms=step.duration_ms,
        attempts=step.attempt,
        tokens=usage.prompt_tokens + usage.completion_tokens if usage else None,
        cost_usd=usage.cost_usd if usage else None,
        output=step.output,
        reused_from=step.reused_from,
    )


def _run(run: WorkflowRun) -> ComparedRun:
    duration = (
        round((run.finished_at - run.started_at).total_seconds() * 1000, 3)
        if run.started_at and run.finished_at
        else None
    )
    return ComparedRun(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        status=run.status.value,
        inputs=run.inputs,
        parent_run_id=run.parent_run_id,
        changes=run.changes,
        totals={
            "duration_ms": duration,
            "steps": len(run.steps),
            "tokens": run.usage.prompt_tokens + run.usage.completion_tokens,
            "cost_usd": run.usage.cost_usd,
        },
    )


MEASURED = frozenset({"duration_ms"})
"""Output keys that measure a run rather than say what it produced."""


def _canonical(value: Any) -> str:
    """Outputs compared as canonical JSON (key order is not a difference), without what they measure."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in MEASURED}
    return json.dumps(value, sort_keys=True, default=str)
