/** One run followed live: its document, then its events through the one fold (`fold.ts`). */
import { ISignal, Signal } from '@lumino/signaling';

import { ClarionApi } from './api';
import { EventStream } from './events';
import { RunExtras, emptyExtras, reduceRun } from './fold';
import { ClarionEvent, WorkflowRun } from './protocol';

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
