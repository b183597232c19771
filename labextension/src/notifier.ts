/**
 * Lab notifications for the runs started from this JupyterLab: when one succeeds, fails, is
 * cancelled or waits for an approval, with an action that opens it. Only runs this Lab
 * started are told (others belong to someone else's notebook or CLI), and only while the
 * `notifications` setting is on. The message is text: Lab's toasts do not render HTML.
 */
import { Notification } from '@jupyterlab/apputils';

import { ClarionController } from './controller';
import { ClarionEvent, EventType } from './protocol';
import { runTitle } from './runtitle';
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

  constructor(
    private readonly _controller: ClarionController,
    private readonly _settings: ClarionSettings,
    private readonly _open: (runId: string) => void
  ) {
    _controller.event.connect((_, event) => void this._told(event));
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
    // A run just started may not be in the list yet (or is filtered out of it): its document names it.
    const run =
      this._controller.runs.get(event.run_id) ?? (await this._controller.api.getRun(event.run_id).catch(() => null));
    const name = run ? runTitle(run, this._controller.agents) : `Run ${event.run_id.slice(-8)}`;
    const step = event.type === EventType.approval_requested && event.step_id ? ` (step ${event.step_id})` : '';
    Notification.emit(`Clarion: ${name} ${what}${step}`, kind, {
      autoClose: kind === 'success' || kind === 'info' ? 8000 : false,
      actions: [{ label: 'Open', callback: () => this._open(event.run_id) }]
    });
  }
}
