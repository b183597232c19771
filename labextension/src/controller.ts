/**
 * The sidebar's shared state: the API, the health of the server extension, the one
 * `WS /ws/runs` socket that feeds the Runs list and the waiting badge, and the stored
 * workflows and agents.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, ClarionApi } from './api';
import { ConnectionState, EventStream } from './events';
import { Agent, ClarionEvent, WorkflowDocument } from './protocol';
import { RunHistory, WaitingModel } from './history';

export class ClarionController {
  readonly runs: RunHistory;
  readonly waiting: WaitingModel;
  workflows: WorkflowDocument[] | null = null;
  agents: Agent[] | null = null;
  workflowsError: string | null = null;
  agentsError: string | null = null;
  /** Why the API cannot be used at all (the server extension is missing, or refuses). */
  fatal: string | null = null;
  /** May this user change agents and workflows (`ClarionApi.canWrite`)? Asked once, at start. */
  canWrite = true;
  private _stream: EventStream | null = null;
  private _changed = new Signal<this, void>(this);
  private _event = new Signal<this, ClarionEvent>(this);
  /** Workflows a shown run had while the list did not: read again once each. */
  private _sought = new Set<string>();

  constructor(readonly api: ClarionApi) {
    this.runs = new RunHistory(api);
    this.waiting = new WaitingModel(api);
    this.runs.changed.connect(() => this._seekWorkflows());
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Every event of `WS /ws/runs`, after the models applied it. */
  get event(): ISignal<this, ClarionEvent> {
    return this._event;
  }

  get connection(): ConnectionState {
    return this._stream?.state ?? 'closed';
  }

  async start(): Promise<void> {
    try {
      await this.api.health();
      this.fatal = null;
    } catch (error) {
      const e = error as ApiError;
      // 503 is an engine that cannot run (a locked database): its message says why.
      this.fatal = e.message;
      this._changed.emit();
      return;
    }
    this._changed.emit();
    if (!this._stream) {
      const stream = new EventStream('ws/runs', null, { settings: this.api.settings });
      stream.event.connect((_, event) => {
        this.runs.apply(event);
        this.waiting.apply(event);
        this._event.emit(event);
      });
      stream.stateChanged.connect(() => this._changed.emit());
      stream.reconnected.connect(() => void this.catchUp());
      this._stream = stream.connect();
    }
    await Promise.all([
      this.runs.reload(),
      this.reloadWorkflows(),
      this.reloadAgents(),
      this._reloadWaiting(),
      this._askWrite()
    ]);
  }

  private async _askWrite(): Promise<void> {
    this.canWrite = await this.api.canWrite();
    this._changed.emit();
  }

  /** After the socket came back: whatever happened while it was down. */
  async catchUp(): Promise<void> {
    await Promise.all([this.runs.catchUp(), this._reloadWaiting(), this.reloadWorkflows()]);
  }

  async reloadWorkflows(): Promise<void> {
    try {
      this.workflows = await this.api.listWorkflows();
      this.workflowsError = null;
    } catch (error) {
      this.workflowsError = (error as Error).message;
    }
    this._changed.emit();
  }

  async reloadAgents(): Promise<void> {
    try {
      this.agents = await this.api.listAgents();
      this.agentsError = null;
    } catch (error) {
      this.agentsError = (error as Error).message;
    }
    this._changed.emit();
  }

  /**
   * A run of a workflow saved since the list was read (over the API, by an import of v2 runs)
   * reads the workflows again, so the Runs filter offers it without a reload. Once per
   * workflow: the runs of a deleted one stay in the list.
   */
  private _seekWorkflows(): void {
    if (this.workflows === null) {
      return;
    }
    const known = new Set(this.workflows.map(w => w.id));
    const unknown = this.runs.runs.find(run => !known.has(run.workflow_id) && !this._sought.has(run.workflow_id));
    if (unknown) {
      this._sought.add(unknown.workflow_id);
      void this.reloadWorkflows();
    }
  }

  dispose(): void {
    this._stream?.dispose();
    Signal.clearData(this);
  }

  private async _reloadWaiting(): Promise<void> {
    try {
      await this.waiting.reload();
    } catch {
      // the badge keeps its count; the list shows the API's error
    }
  }
}
