/** The sidebar panel: Workflows, Runs and Agents tabs over one controller. */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AgentsView } from './agentsview';
import { ErrorMessage } from './common';
import { ClarionController } from './controller';
import { HistoryView } from './historyview';
import { RunSelection } from './selection';
import { ClarionSettings } from './settings';
import { SidebarState, Tab } from './sidebarstate';
import { WorkflowsView } from './workflowsview';

export interface ISidebarActions {
  openRun(runId: string): void;
  editWorkflow(id: string): void;
  /** Each asks for a confirmation first. */
  deleteWorkflow(id: string): void;
  editAgent(id: string): void;
  newAgent(): void;
  deleteFinishedRuns(): void;
  /** A Compare tab of these runs. */
  compareRuns(runIds: string[]): void;
  selectedFiles(): string[];
  /** A run started from this Lab: it is opened, and notified when it ends or waits. */
  started(runId: string): void;
}

const TABS: [Tab, string][] = [
  ['workflows', 'Workflows'],
  ['runs', 'Runs'],
  ['agents', 'Agents']
];

interface ISidebarProps {
  controller: ClarionController;
  state: SidebarState;
  selection: RunSelection;
  settings: ClarionSettings;
  actions: ISidebarActions;
}

function Sidebar(props: ISidebarProps): JSX.Element {
  const { controller, state, settings } = props;
  return (
    <UseSignal signal={controller.changed}>
      {() => (
        <UseSignal signal={controller.waiting.changed}>
          {() => (
            <UseSignal signal={state.changed}>
              {() => (
                <UseSignal signal={settings.changed}>{() => <SidebarBody {...props} />}</UseSignal>
              )}
            </UseSignal>
          )}
        </UseSignal>
      )}
    </UseSignal>
  );
}

function SidebarBody({ controller, state, selection, settings, actions }: ISidebarProps): JSX.Element {
  const tabs = React.useRef<(HTMLButtonElement | null)[]>([]);
  const tab = state.tab;
  // Workflows and agents have no events: showing their tab reads them again.
  React.useEffect(() => {
    if (tab === 'workflows') {
      void controller.reloadWorkflows();
    } else if (tab === 'agents') {
      void controller.reloadAgents();
    }
  }, [tab, state.requests]);
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
  const onTabKey = (event: React.KeyboardEvent, index: number): void => {
    const delta = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0;
    if (delta) {
      const next = (index + delta + TABS.length) % TABS.length;
      state.show(TABS[next][0]);
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
            onClick={() => state.show(id)}
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
            open={state.open}
            formKey={state.requests}
            onToggle={id => state.toggle('workflows', id)}
            onReload={() => void controller.reloadWorkflows()}
            onEdit={actions.editWorkflow}
            onDelete={actions.deleteWorkflow}
            onStarted={actions.started}
          />
        )}
        {tab === 'runs' && (
          <HistoryView
            model={controller.runs}
            selection={selection}
            workflows={controller.workflows ?? []}
            agents={controller.agents}
            actions={{ open: actions.openRun, deleteFinished: actions.deleteFinishedRuns, compare: actions.compareRuns }}
          />
        )}
        {tab === 'agents' && (
          <AgentsView
            api={controller.api}
            agents={controller.agents}
            error={controller.agentsError}
            open={state.open}
            formKey={state.requests}
            imports={state.imports}
            canWrite={controller.canWrite}
            defaultApply={settings.defaultApplyMode}
            onToggle={id => state.toggle('agents', id)}
            onReload={() => void controller.reloadAgents()}
            onImported={() => void Promise.all([controller.reloadAgents(), controller.reloadWorkflows()])}
            onEdit={actions.editAgent}
            onNew={actions.newAgent}
            selectedFiles={actions.selectedFiles}
            onStarted={actions.started}
          />
        )}
      </div>
    </div>
  );
}

export class ClarionSidebar extends ReactWidget {
  readonly state = new SidebarState();
  /** The runs selected in the Runs list, to compare. */
  readonly selection = new RunSelection();

  constructor(
    readonly controller: ClarionController,
    readonly settings: ClarionSettings,
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
    return (
      <Sidebar
        controller={this.controller}
        state={this.state}
        selection={this.selection}
        settings={this.settings}
        actions={this._actions}
      />
    );
  }
}
