/**
 * The Runs list: pages of `GET /api/v3/runs` (newest first, cursor paging) kept live by
 * every run's events from `WS /ws/runs`. Nothing polls.
 *
 * Run ids are time-ordered, so "newest first" is "greatest id first": a new run is placed
 * by a binary search, never by re-sorting. After the socket reconnects, the first page is
 * reloaded and each run still active is caught up from its stored events (`since`).
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ClarionApi } from './api';
import { ClarionEvent, EventType, RunStatus, TERMINAL_EVENTS, WorkflowRun } from './protocol';
import { isTerminal, reduceRun } from './fold';

export interface HistoryFilter {
  status?: string;
  workflow_id?: string;
}

export const PAGE_SIZE = 100;

export class RunHistory {
  private _runs: WorkflowRun[] = [];
  private _byId = new Map<string, WorkflowRun>();
  private _cursor: string | null = null;
  private _filter: HistoryFilter = {};
  private _loading = false;
  private _error: string | null = null;
  private _pending = new Map<string, ClarionEvent[]>();
  private _generation = 0;
  private _changed = new Signal<this, void>(this);

  constructor(readonly api: ClarionApi) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get runs(): readonly WorkflowRun[] {
    return this._runs;
  }

  get filter(): HistoryFilter {
    return this._filter;
  }

  get hasMore(): boolean {
    return this._cursor !== null;
  }

  get loading(): boolean {
    return this._loading;
  }

  get error(): string | null {
    return this._error;
  }

  get(runId: string): WorkflowRun | undefined {
    return this._byId.get(runId);
  }

  /** The first page for the current filter, replacing what is shown. */
  async reload(): Promise<void> {
    const generation = ++this._generation;
    this._loading = true;
    this._changed.emit();
    try {
      const page = await this.api.listRuns({ ...this._filter, limit: PAGE_SIZE });
      if (generation !== this._generation) {
        return;
      }
      this._setRuns(page.runs);
      this._cursor = page.next_cursor;
      this._error = null;
    } catch (error) {
      if (generation === this._generation) {
        this._error = (error as Error).message;
      }
    } finally {
      if (generation === this._generation) {
        this._loading = false;
        this._changed.emit();
      }
    }
  }

  /** The next page, appended (the virtual list asks for it as it nears the end). */
  async loadMore(): Promise<void> {
    if (this._loading || this._cursor === null) {
      return;
    }
    const generation = this._generation;
    this._loading = true;
    this._changed.emit();
    try {
      const page = await this.api.listRuns({ ...this._filter, limit: PAGE_SIZE, cursor: this._cursor });
      if (generation !== this._generation) {
        return;
      }
      const fresh = page.runs.filter(run => !this._byId.has(run.run_id));
      for (const run of fresh) {
        this._byId.set(run.run_id, run);
      }
      this._runs = this._runs.concat(fresh);
      this._cursor = page.next_cursor;
      this._error = null;
    } catch (error) {
      this._error = (error as Error).message;
    } finally {
      if (generation === this._generation) {
        this._loading = false;
        this._changed.emit();
      }
    }
  }

  setFilter(filter: HistoryFilter): Promise<void> {
    this._filter = { ...filter };
    return this.reload();
  }

  matches(run: WorkflowRun): boolean {
    const { status, workflow_id } = this._filter;
    return (!status || run.status === status) && (!workflow_id || run.workflow_id === workflow_id);
  }

  /** One event of `WS /ws/runs`: the run it concerns is updated, added or (filtered out) removed. */
  apply(event: ClarionEvent): void {
    const known = this._byId.get(event.run_id);
    if (!known) {
      this._discover(event);
      return;
    }
    const next = reduceRun(known, event);
    if (next === known) {
      return;
    }
    if (!this.matches(next)) {
      this._byId.delete(next.run_id);
      this._runs = this._runs.filter(run => run.run_id !== next.run_id);
    } else {
      this._byId.set(next.run_id, next);
      const index = this._indexOf(next.run_id);
      const runs = this._runs.slice();
      runs[index] = next;
      this._runs = runs;
    }
    this._changed.emit();
  }

  /** Runs deleted: out of the list (the server sends no event for a deletion). */
  remove(runIds: Iterable<string>): void {
    const gone = new Set(runIds);
    if (![...gone].some(id => this._byId.has(id))) {
      return;
    }
    gone.forEach(id => this._byId.delete(id));
    this._runs = this._runs.filter(run => !gone.has(run.run_id));
    this._changed.emit();
  }

  /** After the socket came back: the first page again, and the missed events of active runs. */
  async catchUp(): Promise<void> {
    const active = this._runs.filter(run => !isTerminal(run));
    await this.reload();
    await Promise.all(
      active
        .filter(run => this._byId.has(run.run_id) && !this._fresh(run))
        .map(async run => {
          const events = await this.api.events(run.run_id, run.last_seq);
          for (const event of events) {
            this.apply(event);
          }
        })
    );
  }

  private _fresh(run: WorkflowRun): boolean {
    return this._byId.get(run.run_id) !== run;
  }

  /**
   * A run not shown yet: its document (names, inputs, creation time), with its state rebuilt
   * from its stored events, since the document does not say which event it reflects. Events
   * that arrive meanwhile are applied after (those already stored are skipped by seq).
   */
  private _discover(event: ClarionEvent): void {
    const buffered = this._pending.get(event.run_id);
    if (buffered) {
      buffered.push(event);
      return;
    }
    const oldest = this._runs[this._runs.length - 1];
    if (this.hasMore && oldest && event.run_id < oldest.run_id) {
      return; // older than what is loaded: paging will bring it
    }
    const queue = [event];
    this._pending.set(event.run_id, queue);
    const generation = this._generation;
    Promise.all([this.api.getRun(event.run_id), this.api.events(event.run_id, 0)])
      .then(([doc, events]) => {
        let run: WorkflowRun = { ...doc, status: RunStatus.queued, last_seq: 0, steps: [], approvals: [] };
        for (const stored of events.concat(queue)) {
          run = reduceRun(run, stored);
        }
        if (generation !== this._generation || this._byId.has(run.run_id) || !this.matches(run)) {
          return;
        }
        this._insert(run);
      })
      .catch(() => undefined)
      .finally(() => this._pending.delete(event.run_id));
  }

  private _insert(run: WorkflowRun): void {
    let low = 0;
    let high = this._runs.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this._runs[mid].run_id > run.run_id) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    const runs = this._runs.slice();
    runs.splice(low, 0, run);
    this._runs = runs;
    this._byId.set(run.run_id, run);
    this._changed.emit();
  }

  private _indexOf(runId: string): number {
    let low = 0;
    let high = this._runs.length - 1;
    while (low <= high) {
      const mid = (low + high) >> 1;
      const id = this._runs[mid].run_id;
      if (id === runId) {
        return mid;
      }
      if (id > runId) {
        low = mid + 1;
      } else {
        high = mid - 1;
      }
    }
    return this._runs.findIndex(run => run.run_id === runId);
  }

  private _setRuns(runs: WorkflowRun[]): void {
    this._runs = runs.map(run => ({ ...run, steps: [] }));
    this._byId = new Map(this._runs.map(run => [run.run_id, run]));
  }
}

/**
 * Runs waiting for a person's decision, for the badge on the Clarion icon: those the list
 * of `status=waiting` returned, kept current by approval and terminal events.
 */
export class WaitingModel {
  private _steps = new Map<string, Set<string>>();
  private _changed = new Signal<this, number>(this);

  constructor(readonly api: ClarionApi) {}

  get changed(): ISignal<this, number> {
    return this._changed;
  }

  get count(): number {
    return this._steps.size;
  }

  async reload(): Promise<void> {
    const steps = new Map<string, Set<string>>();
    let cursor: string | null = null;
    do {
      const page = await this.api.listRuns({ status: RunStatus.waiting, limit: 500, cursor });
      for (const run of page.runs) {
        const keys = (run.approvals ?? []).map(a => a.step_key);
        steps.set(run.run_id, new Set(keys.length ? keys : ['?']));
      }
      cursor = page.next_cursor;
    } while (cursor !== null);
    this._steps = steps;
    this._changed.emit(this.count);
  }

  apply(event: ClarionEvent): void {
    const before = this.count;
    const key = event.step_id ?? '';
    if (event.type === EventType.approval_requested) {
      const keys = this._steps.get(event.run_id) ?? new Set<string>();
      keys.add(key);
      this._steps.set(event.run_id, keys);
    } else if (event.type === EventType.approval_granted || event.type === EventType.approval_rejected) {
      const keys = this._steps.get(event.run_id);
      keys?.delete(key);
      keys?.delete('?');
      if (keys && keys.size === 0) {
        this._steps.delete(event.run_id);
      }
    } else if (event.type in TERMINAL_EVENTS) {
      this._steps.delete(event.run_id);
    }
    if (this.count !== before) {
      this._changed.emit(this.count);
    }
  }
}
