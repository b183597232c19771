"""Build the run document (the API's view of a run) from stored records."""

from __future__ import annotations

from ..core.protocol import StepStatus
from ..storage.records import RunRecord, StepRecord, duration_ms, latest_attempts
from .budget import BudgetState
from .models import PendingApproval, StepRun, Usage, WorkflowRun


def run_document(
    run: RunRecord, steps: list[StepRecord], last_seq: int = 0, *, with_workflow: bool = True
) -> WorkflowRun:
    """One entry per step execution (its latest attempt), in the order they started; ``last_seq``
    is the newest stored event's, where a client that read this document follows on from.
    Lists leave the workflow snapshot out (``with_workflow``): it can be large."""
    latest = latest_attempts(steps).values()
    return WorkflowRun(
        run_id=run.run_id,
        workflow_id=run.workflow_id,
        workflow_name=run.workflow_name,
        status=run.status,
        inputs=run.inputs,
        outputs=run.outputs,
        error=run.error,
        idempotency_key=run.idempotency_key,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        usage=Usage(**(run.usage or {})),
        last_seq=last_seq,
        workflow=run.workflow if with_workflow else None,
        steps=[_step(r) for r in latest],
        approvals=[
            PendingApproval(step_key=r.key, **r.approval)
            for r in latest
            if r.status == StepStatus.waiting and r.approval
        ],
        parent_run_id=run.parent_run_id,
        changes=run.changes,
        budget=BudgetState.model_validate(run.budget) if run.budget else None,
        cache=run.cache,
    )


def _step(record: StepRecord) -> StepRun:
    return StepRun(
        key=record.key,
        step_id=record.step_id,
        item_index=record.item_index,
        attempt=record.attempt,
        status=record.status,
        started_at=record.started_at,
        finished_at=record.finished_at,
        duration_ms=duration_ms(record.started_at, record.finished_at),
        output=record.output,
        error=record.error,
        usage=Usage(**record.usage) if record.usage else None,
        reused_from=record.reused_from,
    )
