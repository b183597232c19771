/**
 * A run's document kept current by its events: the reducer the Run detail view and the
 * runs list share, and the model that follows one run live.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ClarionApi } from './api';
import { EventStream } from './events';
import {
  Approval,
  ClarionEvent,
  EventType,
  RunStatus,
  StepRun,
  StepStatus,
  TERMINAL_EVENTS,
  TERMINAL_RUN,
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

/** What the run document does not hold and the events do: attempts, streamed text, decisions. */
export interface RunExtras {
  attempts: Record<string, Attempt[]>;
  text: Record<string, string>;
  decisions: Record<string, { decision: 'approved' | 'rejected'; by?: string; comment?: string }>;
}

export function emptyExtras(): RunExtras {
  return { attempts: {}, text: {}, decisions: {} };
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

/**
 * The run after `event` (a new object when anything changed; the same one for an event
 * already applied, so replays after a reconnect change nothing).
 */
export function reduceRun(run: WorkflowRun, event: ClarionEvent, extras?: RunExtras): WorkflowRun {
  if (event.run_id !== run.run_id || event.seq <= run.last_seq) {
    return run;
  }
  const next: WorkflowRun = { ...run, last_seq: event.seq };
  const data = event.data ?? {};
  const key = event.step_id;
  const step = (change: (s: StepRun) => Partial<StepRun>): void => {
    if (key === null) {
      return;
    }
    const steps = next.steps.slice();
    let index = steps.findIndex(s => s.key === key);
    if (index < 0) {
      steps.push(emptyStep(key));
      index = steps.length - 1;
    }
    steps[index] = { ...steps[index], ...change(steps[index]) };
    next.steps = steps;
  };
  const attempt = (status: string, finished: boolean): void => {
    if (!extras || key === null) {
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
  switch (event.type) {
    case EventType.run_queued:
      next.status = RunStatus.queued;
      break;
    case EventType.run_started:
      next.status = RunStatus.running;
      next.started_at = next.started_at ?? event.ts;
      break;
    case EventType.step_started:
      if (next.status === RunStatus.waiting || next.status === RunStatus.queued) {
        next.status = RunStatus.running;
      }
      step(() => ({
        status: StepStatus.running,
        attempt: Number(data.attempt ?? 1),
        started_at: event.ts,
        finished_at: null,
        duration_ms: null,
        error: null
      }));
      if (extras && key !== null) {
        delete extras.text[key];
      }
      attempt(StepStatus.running, false);
      break;
    case EventType.step_retrying:
      step(() => ({ status: StepStatus.retrying, error: data.error ?? null }));
      attempt(StepStatus.failed, true);
      break;
    case EventType.step_completed:
      step(s => ({
        status: StepStatus.succeeded,
        output: data.output ?? null,
        usage: data.usage ?? s.usage,
        finished_at: event.ts,
        duration_ms: data.duration_ms ?? durationBetween(s.started_at, event.ts)
      }));
      attempt(StepStatus.succeeded, true);
      break;
    case EventType.step_failed:
      step(s => ({
        status: StepStatus.failed,
        error: data.error ?? null,
        finished_at: event.ts,
        duration_ms: data.duration_ms ?? durationBetween(s.started_at, event.ts)
      }));
      attempt(StepStatus.failed, true);
      break;
    case EventType.step_skipped:
      step(() => ({ status: StepStatus.skipped, finished_at: event.ts }));
      break;
    case EventType.llm_token:
      if (extras && key !== null) {
        extras.text[key] = (extras.text[key] ?? '') + String(data.text ?? '');
      }
      break;
    case EventType.approval_requested: {
      step(() => ({ status: StepStatus.waiting }));
      const approval: Approval = {
        step_key: key ?? '',
        preview: data.preview ?? null,
        message: data.message ?? null,
        requested_at: event.ts
      };
      next.approvals = [...(run.approvals ?? []).filter(a => a.step_key !== key), approval];
      if (!next.steps.some(s => s.key !== key && s.status === StepStatus.running)) {
        next.status = RunStatus.waiting;
      }
      break;
    }
    case EventType.approval_granted:
    case EventType.approval_rejected:
      next.approvals = (run.approvals ?? []).filter(a => a.step_key !== key);
      if (next.status === RunStatus.waiting && next.approvals.length === 0) {
        next.status = RunStatus.running;
      }
      if (extras && key !== null) {
        extras.decisions[key] = {
          decision: event.type === EventType.approval_granted ? 'approved' : 'rejected',
          by: data.by,
          comment: data.comment
        };
      }
      break;
    default:
      if (event.type in TERMINAL_EVENTS) {
        next.status = TERMINAL_EVENTS[event.type];
        next.finished_at = event.ts;
        next.approvals = [];
        if (data.outputs !== undefined) {
          next.outputs = data.outputs;
        }
        if (data.error !== undefined) {
          next.error = data.error;
        }
        if (data.usage) {
          next.usage = data.usage;
        }
      }
  }
  return next;
}

export function isTerminal(run: WorkflowRun): boolean {
  return TERMINAL_RUN.has(run.status);
}

/** One run followed live: its document, then `WS /ws/runs/{id}/subscribe?since=last_seq`. */
export class RunModel {
  private _run: WorkflowRun | null = null;
  private _extras: RunExtras = emptyExtras();
  private _error: string | null = null;
  private _stream: EventStream | null = null;
  private _changed = new Signal<this, void>(this);
  private _disposed = false;

  constructor(
    readonly api: ClarionApi,
    readonly runId: string
  ) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get run(): WorkflowRun | null {
    return this._run;
  }

  get extras(): RunExtras {
    return this._extras;
  }

  get error(): string | null {
    return this._error;
  }

  get connection(): string {
    return this._stream?.state ?? 'closed';
  }

  /**
   * Loads the document for what events do not carry (inputs, names, creation time), then
   * rebuilds its state from every stored event (`since=0`, so attempts and streamed text
   * are complete) and follows the live ones on the same socket.
   */
  async start(): Promise<void> {
    try {
      const doc = await this.api.getRun(this.runId);
      this._run = { ...doc, last_seq: 0, steps: [], approvals: [] };
      this._error = null;
    } catch (error) {
      this._error = (error as Error).message;
      this._changed.emit();
      return;
    }
    this._changed.emit();
    if (!this._disposed) {
      this._follow();
    }
  }

  apply(event: ClarionEvent): void {
    if (!this._run) {
      return;
    }
    const next = reduceRun(this._run, event, this._extras);
    if (next !== this._run) {
      this._run = next;
      this._changed.emit();
    }
  }

  dispose(): void {
    this._disposed = true;
    this._stream?.dispose();
    Signal.clearData(this);
  }

  private _follow(): void {
    const stream = new EventStream(`ws/runs/${encodeURIComponent(this.runId)}/subscribe`, this._run!.last_seq, {
      settings: this.api.settings
    });
    stream.event.connect((_, event) => this.apply(event));
    stream.stateChanged.connect(() => this._changed.emit());
    this._stream = stream.connect();
  }
}
