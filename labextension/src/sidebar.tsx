/** The sidebar panel: Workflows, Runs and Agents tabs over one controller. */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AgentsView } from './agentsview';
import { ErrorMessage, useSignal } from './common';
import { ClarionController } from './controller';
import { RunsView } from './runsview';
import { WorkflowsView } from './workflowsview';

export interface ISidebarActions {
  openRun(runId: string): void;
  editWorkflow(id: string): void;
  selectedFiles(): string[];
}

type Tab = 'workflows' | 'runs' | 'agents';
const TABS: [Tab, string][] = [
  ['workflows', 'Workflows'],
  ['runs', 'Runs'],
  ['agents', 'Agents']
];

function Sidebar({ controller, actions }: { controller: ClarionController; actions: ISidebarActions }): JSX.Element {
  useSignal(controller.changed);
  useSignal(controller.waiting.changed);
  const [tab, setTab] = React.useState<Tab>('runs');
  const tabs = React.useRef<(HTMLButtonElement | null)[]>([]);
  if (controller.fatal) {
    return (
      <div className="clarion-Sidebar">
        <div className="clarion-SidebarHead">
          <h2 className="clarion-Title">Clarion</h2>
        </div>
        <ErrorMessage message={controller.fatal} onRetry={() => void controller.start()} />
      </div>
    );
  }
  /** Workflows and agents have no events: showing their tab reads them again. */
  const select = (id: Tab): void => {
    setTab(id);
    if (id === 'workflows') {
      void controller.reloadWorkflows();
    } else if (id === 'agents') {
      void controller.reloadAgents();
    }
  };
  const onTabKey = (event: React.KeyboardEvent, index: number): void => {
    const delta = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0;
    if (delta) {
      const next = (index + delta + TABS.length) % TABS.length;
      select(TABS[next][0]);
      tabs.current[next]?.focus();
    }
  };
  const waiting = controller.waiting.count;
  return (
    <div className="clarion-Sidebar">
      <div className="clarion-SidebarHead">
        <h2 className="clarion-Title">Clarion</h2>
        <span className={`clarion-Connection clarion-Connection-${controller.connection}`} role="status">
          {controller.connection === 'open' ? 'live' : controller.connection}
        </span>
      </div>
      {controller.connection === 'reconnecting' && (
        <div className="clarion-Notice" role="status">
          Lost the connection to the server: reconnecting, then catching up on what happened meanwhile.
        </div>
      )}
      <div className="clarion-Tabs" role="tablist" aria-label="Clarion">
        {TABS.map(([id, label], index) => (
          <button
            key={id}
            ref={el => (tabs.current[index] = el)}
            role="tab"
            id={`clarion-tab-${id}`}
            aria-selected={tab === id}
            aria-controls={`clarion-panel-${id}`}
            tabIndex={tab === id ? 0 : -1}
            className={`clarion-Tab${tab === id ? ' clarion-mod-active' : ''}`}
            onClick={() => select(id)}
            onKeyDown={e => onTabKey(e, index)}
          >
            {label}
            {id === 'runs' && waiting > 0 && (
              <span className="clarion-Count" title={`${waiting} waiting for approval`}>
                {waiting}
              </span>
            )}
          </button>
        ))}
      </div>
      <div className="clarion-Panel" role="tabpanel" id={`clarion-panel-${tab}`} aria-labelledby={`clarion-tab-${tab}`}>
        {tab === 'workflows' && (
          <WorkflowsView
            api={controller.api}
            workflows={controller.workflows}
            error={controller.workflowsError}
            onReload={() => void controller.reloadWorkflows()}
            onEdit={actions.editWorkflow}
            onStarted={actions.openRun}
          />
        )}
        {tab === 'runs' && (
          <RunsView model={controller.runs} workflows={controller.workflows ?? []} onOpen={actions.openRun} />
        )}
        {tab === 'agents' && (
          <AgentsView
            api={controller.api}
            agents={controller.agents}
            error={controller.agentsError}
            onReload={() => void controller.reloadAgents()}
            selectedFiles={actions.selectedFiles}
            onStarted={actions.openRun}
          />
        )}
      </div>
    </div>
  );
}

export class ClarionSidebar extends ReactWidget {
  constructor(
    readonly controller: ClarionController,
    private readonly _actions: ISidebarActions
  ) {
    super();
    this.id = 'clarion-sidebar';
    this.addClass('clarion-SidebarWidget');
    this.title.caption = 'Clarion: workflows, runs and agents';
    controller.waiting.changed.connect((_, count) => this.showWaiting(count));
  }

  /** The badge on the Clarion icon: runs waiting for a person's decision. */
  showWaiting(count: number): void {
    // Lab keeps the tab's `data-id` in the same dataset: change only our key.
    const { waiting: _previous, ...others } = this.title.dataset;
    this.title.dataset = count > 0 ? { ...others, waiting: String(count) } : others;
    this.title.caption = count > 0 ? `Clarion: ${count} run(s) waiting for approval` : 'Clarion: workflows, runs and agents';
  }

  render(): JSX.Element {
    return <Sidebar controller={this.controller} actions={this._actions} />;
  }
}
