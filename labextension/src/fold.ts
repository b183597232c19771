/**
 * The one event fold, in TypeScript: a run's document kept current by its events, as
 * `clarion_jupyter/workflow/fold.py` folds them (both are tested against the golden files in
 * `tests/fixtures/folds/`). The Run detail view and the runs list share it.
 */
import {
  Approval,
  ClarionEvent,
  EventType,
  RunStatus,
  StepRun,
  StepStatus,
  TERMINAL_EVENTS,
  TERMINAL_RUN,
  Usage,
  WorkflowRun
} from './protocol';

/** One attempt of one step, as the events told it. */
export interface Attempt {
  attempt: number;
  status: string;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  error: any;
}

/**
 * What the run document does not hold and the events do: attempts, streamed text, decisions,
 * why steps were skipped and how many items a `for_each` step maps over.
 */
export interface RunExtras {
  attempts: Record<string, Attempt[]>;
  text: Record<string, string>;
  decisions: Record<string, { decision: 'approved' | 'rejected'; by?: string | null; comment?: string | null }>;
  reasons: Record<string, string>;
  items: Record<string, number>;
}

export function emptyExtras(): RunExtras {
  return { attempts: {}, text: {}, decisions: {}, reasons: {}, items: {} };
}

function emptyStep(key: string): StepRun {
  const match = /^(.*)\[(\d+)\]$/.exec(key);
  return {
    key,
    step_id: match ? match[1] : key,
    item_index: match ? Number(match[2]) : null,
    attempt: 0,
    status: StepStatus.pending,
    started_at: null,
    finished_at: null,
    duration_ms: null,
    output: null,
    error: null,
    usage: null
  };
}

function durationBetween(start: string | null, end: string | null): number | null {
  return start && end ? Math.max(0, Date.parse(end) - Date.parse(start)) : null;
}

/** What a failed or cancelled run stops (the engine marks them `cancelled`). */
const STOPPED: ReadonlySet<string> = new Set([StepStatus.running, StepStatus.retrying, StepStatus.waiting]);
const ACTIVE: ReadonlySet<string> = new Set([StepStatus.running, StepStatus.retrying]);

/**
 * `waiting` while a step waits for a person and none runs (a `for_each` step is not itself
 * running: its items are); else `running` once any step began.
 */
function liveStatus(run: WorkflowRun): string {
  if (!(run.approvals ?? []).length) {
    return run.steps.length ? RunStatus.running : run.status;
  }
  const parents = new Set(run.steps.filter(s => s.item_index !== null).map(s => s.step_id));
  const active = run.steps.some(s => ACTIVE.has(s.status) && !parents.has(s.key));
  return active ? RunStatus.running : RunStatus.waiting;
}

function addUsage(total: Usage | null | undefined, usage: Usage): Usage {
  const cost = usage.cost_usd !== null && usage.cost_usd !== undefined ? (total?.cost_usd ?? 0) + usage.cost_usd : (total?.cost_usd ?? null);
  return {
    prompt_tokens: (total?.prompt_tokens ?? 0) + (usage.prompt_tokens ?? 0),
    completion_tokens: (total?.completion_tokens ?? 0) + (usage.completion_tokens ?? 0),
    cost_usd: cost
  };
}

/**
 * The run after `event` (a new object when anything changed; the same one for an event
 * already applied, so replays after a reconnect change nothing). The same fold as
 * `clarion_jupyter/workflow/fold.py`: both are tested against `tests/fixtures/folds/`.
 */
export function reduceRun(run: WorkflowRun, event: ClarionEvent, extras?: RunExtras): WorkflowRun {
  if (event.run_id !== run.run_id || event.seq <= run.last_seq) {
    return run;
  }
  const next: WorkflowRun = { ...run, last_seq: event.seq };
  const data = event.data ?? {};
  // A run with a budget announces it, whole, on every event that changed it.
  if (data.budget && typeof data.budget === 'object') {
    next.budget = data.budget;
  }
  const key = event.step_id;
  if (key === null) {
    reduceRunEvent(next, event, data);
  } else {
    reduceStepEvent(next, key, event, data, extras);
    if (!TERMINAL_RUN.has(next.status)) {
      next.status = liveStatus(next);
    }
  }
  return next;
}

function reduceRunEvent(next: WorkflowRun, event: ClarionEvent, data: Record<string, any>): void {
  switch (event.type) {
    case EventType.run_queued:
      next.status = RunStatus.queued;
      next.created_at = next.created_at || event.ts;
      if ('workflow_id' in data) {
        next.workflow_id = data.workflow_id;
      }
      if ('inputs' in data) {
        next.inputs = data.inputs;
      }
      break;
    case EventType.run_started:
      next.status = RunStatus.running;
      next.started_at = next.started_at ?? event.ts;
      break;
    default:
      if (event.type in TERMINAL_EVENTS) {
        next.status = TERMINAL_EVENTS[event.type];
        next.finished_at = event.ts;
        next.approvals = [];
        for (const name of ['outputs', 'error', 'usage'] as const) {
          if (data[name] !== undefined && data[name] !== null) {
            (next as any)[name] = data[name];
          }
        }
        if (next.status !== RunStatus.succeeded) {
          next.steps = next.steps.map(s =>
            STOPPED.has(s.status)
              ? { ...s, status: StepStatus.cancelled, finished_at: event.ts, duration_ms: durationBetween(s.started_at, event.ts) }
              : s
          );
        }
      }
  }
}

function reduceStepEvent(
  next: WorkflowRun,
  key: string,
  event: ClarionEvent,
  data: Record<string, any>,
  extras?: RunExtras
): void {
  const attempt = (status: string, finished: boolean): void => {
    if (!extras) {
      return;
    }
    const list = (extras.attempts[key] ??= []);
    const number = Number(data.attempt ?? 1);
    let entry = list.find(a => a.attempt === number);
    if (!entry) {
      entry = { attempt: number, status, started_at: event.ts, finished_at: null, duration_ms: null, error: null };
      list.push(entry);
    }
    entry.status = status;
    if (finished) {
      entry.finished_at = event.ts;
      entry.duration_ms = data.duration_ms ?? durationBetween(entry.started_at, event.ts);
      entry.error = data.error ?? null;
    }
  };
  let change: Partial<StepRun>;
  switch (event.type) {
    case EventType.llm_token:
      if (extras) {
        extras.text[key] = (extras.text[key] ?? '') + String(data.text ?? '');
      }
      return;
    case EventType.step_started:
      change = {
        status: StepStatus.running,
        attempt: Number(data.attempt ?? 1),
        started_at: event.ts,
        finished_at: null,
        duration_ms: null,
        error: null
      };
      if (extras) {
        delete extras.text[key];
        if ('items' in data) {
          extras.items[key] = data.items;
        }
      }
      attempt(StepStatus.running, false);
      break;
    case EventType.step_retrying:
      change = { status: StepStatus.retrying, error: data.error ?? null, finished_at: event.ts };
      attempt(StepStatus.failed, true);
      break;
    case EventType.step_completed:
      change = { status: StepStatus.succeeded, output: data.output ?? null, finished_at: event.ts };
      if (data.reused_from) {
        change.reused_from = data.reused_from;
      }
      if (data.usage) {
        change.usage = data.usage;
        next.usage = addUsage(next.usage, data.usage);
      }
      attempt(StepStatus.succeeded, true);
      break;
    case EventType.step_failed:
      change = { status: StepStatus.failed, error: data.error ?? null, finished_at: event.ts };
      attempt(StepStatus.failed, true);
      break;
    case EventType.step_cancelled:
      change = { status: StepStatus.cancelled, finished_at: event.ts };
      break;
    case EventType.step_skipped:
      change = { status: StepStatus.skipped, finished_at: event.ts };
      if (extras && data.reason) {
        extras.reasons[key] = data.reason;
      }
      break;
    case EventType.approval_requested: {
      change = { status: StepStatus.waiting, started_at: event.ts, finished_at: null };
      const approval = {
        step_key: key,
        preview: data.preview ?? null,
        message: data.message ?? null,
        requested_at: event.ts,
        timeout_s: data.timeout_s ?? null
      } as Approval;
      next.approvals = [...(next.approvals ?? []).filter(a => a.step_key !== key), approval];
      break;
    }
    case EventType.approval_granted:
    case EventType.approval_rejected: {
      const granted = event.type === EventType.approval_granted;
      next.approvals = (next.approvals ?? []).filter(a => a.step_key !== key);
      if (extras) {
        extras.decisions[key] = { decision: granted ? 'approved' : 'rejected', by: data.by, comment: data.comment };
      }
      // Approved, the stored step is running from the decision on; rejected, the step's end
      // (skipped or failed) follows in the same commit.
      change = granted ? { status: StepStatus.running, started_at: event.ts } : {};
      break;
    }
    default:
      return;
  }
  if ('attempt' in data && event.type !== EventType.step_started) {
    change.attempt = Number(data.attempt);
  }
  if ('item_index' in data) {
    change.item_index = data.item_index;
  }
  const steps = next.steps.slice();
  let index = steps.findIndex(s => s.key === key);
  if (index < 0) {
    steps.push(emptyStep(key));
    index = steps.length - 1;
  }
  const step = { ...steps[index], ...change };
  if (change.finished_at) {
    step.duration_ms = data.duration_ms ?? durationBetween(step.started_at, change.finished_at);
  }
  steps[index] = step;
  next.steps = steps;
}

export function isTerminal(run: WorkflowRun): boolean {
  return TERMINAL_RUN.has(run.status);
}
