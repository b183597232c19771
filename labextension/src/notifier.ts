/**
 * Lab notifications for the runs started from this JupyterLab: when one succeeds, fails, is
 * cancelled or waits for an approval, with an action that opens it. Only runs this Lab
 * started are told (others belong to someone else's notebook or CLI), and only while the
 * `notifications` setting is on. The message is text: Lab's toasts do not render HTML.
 */
import { Notification } from '@jupyterlab/apputils';
import { ISignal } from '@lumino/signaling';

import { ClarionEvent, EventType } from './protocol';
import { ClarionSettings } from './settings';

type Kind = 'success' | 'error' | 'warning' | 'info';

const TOLD: Record<string, [Kind, string]> = {
  [EventType.workflow_succeeded]: ['success', 'succeeded'],
  [EventType.workflow_failed]: ['error', 'failed'],
  [EventType.workflow_cancelled]: ['info', 'was cancelled'],
  [EventType.approval_requested]: ['warning', 'waits for your approval']
};

/** How many unwatched runs' told events are kept for a `watch` that comes after them. */
const REMEMBERED = 64;

export class RunNotifier {
  private _watched = new Set<string>();
  /**
   * A short run can end before the request that started it has answered, so before `watch`:
   * the told events of runs not (yet) watched are kept here, the oldest run dropped first.
   */
  private _early = new Map<string, ClarionEvent[]>();

  /**
   * @param events every event of `WS /ws/runs`
   * @param nameOf what a run is called (its workflow, or its agent)
   * @param open opens a run's tab
   */
  constructor(
    events: ISignal<unknown, ClarionEvent>,
    private readonly _nameOf: (runId: string) => Promise<string>,
    private readonly _settings: Pick<ClarionSettings, 'notifications'>,
    private readonly _open: (runId: string) => void
  ) {
    events.connect((_, event) => void this._told(event));
  }

  /** A run this Lab started: its end and its approvals are notified. */
  watch(runId: string): void {
    this._watched.add(runId);
    const early = this._early.get(runId) ?? [];
    this._early.delete(runId);
    for (const event of early) {
      void this._told(event);
    }
  }

  private async _told(event: ClarionEvent): Promise<void> {
    const told = TOLD[event.type];
    if (!told) {
      return;
    }
    if (!this._watched.has(event.run_id)) {
      this._remember(event);
      return;
    }
    if (event.type !== EventType.approval_requested) {
      this._watched.delete(event.run_id);
    }
    if (!this._settings.notifications) {
      return;
    }
    const [kind, what] = told;
    const name = await this._nameOf(event.run_id);
    const step = event.type === EventType.approval_requested && event.step_id ? ` (step ${event.step_id})` : '';
    Notification.emit(`Clarion: ${name} ${what}${step}`, kind, {
      autoClose: kind === 'success' || kind === 'info' ? 8000 : false,
      actions: [{ label: 'Open', callback: () => this._open(event.run_id) }]
    });
  }

  private _remember(event: ClarionEvent): void {
    const early = this._early.get(event.run_id) ?? [];
    this._early.delete(event.run_id);
    this._early.set(event.run_id, [...early, event]);
    if (this._early.size > REMEMBERED) {
      this._early.delete(this._early.keys().next().value as string);
    }
  }
}
