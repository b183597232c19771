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

export class RunNotifier {
  private _watched = new Set<string>();

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
  }

  private async _told(event: ClarionEvent): Promise<void> {
    const told = TOLD[event.type];
    if (!told || !this._watched.has(event.run_id)) {
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
}
