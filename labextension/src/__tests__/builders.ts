/** Run documents and events as the v3 API sends them. */
import { ClarionEvent, EventType, RunStatus, WorkflowRun } from '../protocol';

let clock = Date.parse('2026-12-01T10:00:00Z');

export function runDoc(runId: string, fields: Partial<WorkflowRun> = {}): WorkflowRun {
  return {
    run_id: runId,
    workflow_id: 'tour',
    workflow_name: 'Tour',
    status: RunStatus.queued,
    inputs: {},
    outputs: null,
    error: null,
    idempotency_key: null,
    created_at: '2026-12-01T10:00:00.000000Z',
    started_at: null,
    finished_at: null,
    usage: { prompt_tokens: 0, completion_tokens: 0, cost_usd: null },
    last_seq: 0,
    steps: [],
    ...fields
  };
}

export function event(
  runId: string,
  seq: number,
  type: EventType,
  stepId: string | null = null,
  data: Record<string, unknown> = {}
): ClarionEvent {
  clock += 100;
  return { seq, type, run_id: runId, step_id: stepId, ts: new Date(clock).toISOString(), data };
}
