/**
 * Every sidebar action as a Lab command, so each one is in the command palette (acting on
 * the run tab in front, or asking which workflow or agent), in menus and shortcuts as Lab
 * users expect. Deletions ask for a confirmation with Lab's own dialog first.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Clipboard, Dialog, InputDialog, Notification, WidgetTracker, showDialog } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon, deleteIcon, runIcon, saveIcon } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { ApiError, ClarionApi } from './api';
import { CompareModel } from './compare';
import { CompareWidget, compareTabId } from './comparetab';
import { ClarionController } from './controller';
import { IRunActions, IRunServices } from './detail';
import { AgentEditor } from './agenteditor';
import { WorkflowEditor, YamlEditor, yamlOf } from './editor';
import { Agent, RerunRequest, TERMINAL_RUN, WorkflowRun } from './protocol';
import { RunModel } from './liverun';
import { askRerun } from './rerundialog';
import { RunDetailWidget } from './runtab';
import { AGENT_RUN_WORKFLOW, V2_RUN_WORKFLOW, runTitle } from './runtitle';
import { ClarionSidebar } from './sidebar';
import { Tab } from './sidebarstate';

export namespace CommandIDs {
  export const show = 'clarion:show-sidebar';
  export const showWorkflows = 'clarion:show-workflows';
  export const showRuns = 'clarion:show-runs';
  export const showAgents = 'clarion:show-agents';
  export const refresh = 'clarion:refresh';
  export const openRun = 'clarion:open-run';
  export const cancelRun = 'clarion:cancel-run';
  export const rerun = 'clarion:rerun';
  export const deleteRun = 'clarion:delete-run';
  export const deleteFinishedRuns = 'clarion:delete-finished-runs';
  export const copyRunId = 'clarion:copy-run-id';
  export const openInNotebook = 'clarion:open-run-in-notebook';
  export const runWorkflow = 'clarion:run-workflow';
  export const editWorkflow = 'clarion:edit-workflow';
  export const saveWorkflow = 'clarion:save-workflow';
  export const deleteWorkflow = 'clarion:delete-workflow';
  export const editAgent = 'clarion:edit-agent';
  export const newAgent = 'clarion:new-agent';
  export const importAgents = 'clarion:import-agents';
  export const runAgent = 'clarion:run-agent';
  export const runAgentOnFiles = 'clarion:run-agent-on-files';
  export const runFile = 'clarion:run-file';
  export const rerunFromStep = 'clarion:rerun-from-step';
  export const rerunWith = 'clarion:rerun-with';
  export const compareRuns = 'clarion:compare-runs';
}

/** The commands the palette lists (the file browser's two are in its context menu). */
export const PALETTE_COMMANDS = Object.values(CommandIDs).filter(
  id => id !== CommandIDs.runFile && id !== CommandIDs.runAgentOnFiles
);

export interface IClarionParts {
  app: JupyterFrontEnd;
  api: ClarionApi;
  controller: ClarionController;
  sidebar: ClarionSidebar;
  /** A run started from this Lab: opened, and notified when it ends or waits. */
  started: (runId: string) => void;
  runs: WidgetTracker<RunDetailWidget>;
  compares: WidgetTracker<CompareWidget>;
  editors: WidgetTracker<WorkflowEditor>;
  agentEditors: WidgetTracker<AgentEditor>;
  editorServices: IEditorServices;
  rendermime: IRenderMimeRegistry | null;
  fileBrowser: IDefaultFileBrowser | null;
  icon: LabIcon;
}

/** Asks which of `items` ([id, label]); null when the user cancels or there is none. */
async function pick(title: string, items: [string, string][]): Promise<string | null> {
  if (items.length === 0) {
    Notification.warning(`${title}: there is none.`, { autoClose: 4000 });
    return null;
  }
  if (items.length === 1) {
    return items[0][0];
  }
  const labels = items.map(([id, label]) => `${label} (${id})`);
  const answer = await InputDialog.getItem({ title, items: labels });
  return answer.button.accept && answer.value !== null ? items[labels.indexOf(answer.value)][0] : null;
}

async function confirm(title: string, body: string, label: string): Promise<boolean> {
  const answer = await showDialog({
    title,
    body,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label })]
  });
  return answer.button.accept;
}

function failed(what: string, error: unknown): void {
  Notification.error(`${what}: ${(error as Error).message}`, { autoClose: 8000 });
}

export function addCommands(parts: IClarionParts): void {
  const { app, api, controller, sidebar, started, runs, editors, agentEditors, icon } = parts;
  const { commands, shell } = app;
  const services: IRunServices = { rendermime: parts.rendermime, agents: () => controller.agents };

  const showTab = (tab: Tab, open: string | null = null): void => {
    sidebar.state.show(tab, open);
    shell.activateById(sidebar.id);
  };
  /**
   * For a command of a context menu (`isContextMenu`), a `data-` attribute of the element the
   * menu was opened on (or of one it is in). Lab keeps the last menu's target: elsewhere it is stale.
   */
  const clicked = (args: ReadonlyPartialJSONObject, attribute: 'runId' | 'step'): string | undefined =>
    args.isContextMenu
      ? app.contextMenuHitTest(node => node.dataset[attribute] !== undefined)?.dataset[attribute]
      : undefined;
  /** The run an argument names, the run (row, or run detail) a context menu was opened on, or the run tab in front. */
  const runIdOf = (args: ReadonlyPartialJSONObject): string =>
    String(args.runId ?? clicked(args, 'runId') ?? runs.currentWidget?.model.runId ?? '');
  const workflowItems = (): [string, string][] => (controller.workflows ?? []).map(w => [w.id, w.name]);
  const deletableItems = (): [string, string][] =>
    workflowItems().filter(([id]) => id !== AGENT_RUN_WORKFLOW && id !== V2_RUN_WORKFLOW);
  const agentItems = (): [string, string][] => (controller.agents ?? []).map(a => [a.id, a.name]);
  const knownRun = async (runId: string): Promise<WorkflowRun> =>
    runs.find(w => w.model.runId === runId)?.model.run ?? controller.runs.get(runId) ?? api.getRun(runId);

  const runActions: IRunActions = {
    openRun: runId => void commands.execute(CommandIDs.openRun, { runId }),
    openInNotebook: runId => void commands.execute(CommandIDs.openInNotebook, { runId }),
    copy: text => {
      Clipboard.copyToSystem(text);
      Notification.info(`Copied ${text}`, { autoClose: 2000 });
    },
    rerun: run => api.runWorkflow(run.workflow_id, run.inputs).then(answer => started(answer.run_id)),
    rerunFrom: (run, stepId) => commands.execute(CommandIDs.rerunFromStep, { runId: run.run_id, step: stepId }),
    rerunWith: run => commands.execute(CommandIDs.rerunWith, { runId: run.run_id }),
    deleteRun: run => commands.execute(CommandIDs.deleteRun, { runId: run.run_id }) as Promise<boolean>
  };

  commands.addCommand(CommandIDs.show, {
    label: 'Clarion: Show Runs, Workflows and Agents',
    icon,
    execute: () => shell.activateById(sidebar.id)
  });
  for (const [id, tab, label] of [
    [CommandIDs.showWorkflows, 'workflows', 'Clarion: Show Workflows'],
    [CommandIDs.showRuns, 'runs', 'Clarion: Show Runs'],
    [CommandIDs.showAgents, 'agents', 'Clarion: Show Agents']
  ] as [string, Tab, string][]) {
    commands.addCommand(id, { label, execute: () => showTab(tab) });
  }
  commands.addCommand(CommandIDs.refresh, {
    label: 'Clarion: Refresh',
    execute: () => controller.start()
  });

  commands.addCommand(CommandIDs.openRun, {
    label: 'Clarion: Open Run…',
    execute: async args => {
      const runId =
        String(args.runId ?? '') ||
        (await pick(
          'Open which run?',
          controller.runs.runs.slice(0, 50).map(r => [r.run_id, `${runTitle(r, controller.agents)} · ${r.status}`])
        ));
      if (!runId) {
        return;
      }
      const existing = runs.find(w => w.model.runId === runId);
      if (existing) {
        shell.activateById(existing.id);
        return;
      }
      // A tab Lab restores may be of a run deleted since: no tab for it, a word instead.
      const gone = await api.getRun(runId).then(
        () => false,
        (error: ApiError) => error.status === 404
      );
      if (gone) {
        Notification.warning(`Run ${runId} no longer exists: it was deleted.`, { autoClose: 5000 });
        return;
      }
      const opened = runs.find(w => w.model.runId === runId); // by a click while we asked
      if (opened) {
        shell.activateById(opened.id);
        return;
      }
      const widget = new RunDetailWidget(new RunModel(api, runId), runActions, services, icon);
      void runs.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
    }
  });
  const onRun = (label: string, isEnabled: (args: ReadonlyPartialJSONObject) => boolean = args => !!runIdOf(args)) => ({
    label,
    isEnabled
  });
  commands.addCommand(CommandIDs.cancelRun, {
    ...onRun('Clarion: Cancel Run'),
    execute: args => api.cancel(runIdOf(args)).catch(error => failed('Cannot cancel', error))
  });
  commands.addCommand(CommandIDs.rerun, {
    ...onRun('Clarion: Re-run with the Same Inputs'),
    icon: runIcon,
    execute: async args => {
      try {
        await runActions.rerun(await knownRun(runIdOf(args)));
      } catch (error) {
        failed('Cannot re-run', error);
      }
    }
  });
  addIterateCommands(parts, runIdOf, clicked, runActions.openRun);
  commands.addCommand(CommandIDs.copyRunId, {
    ...onRun('Clarion: Copy Run Id'),
    execute: args => runActions.copy(runIdOf(args))
  });
  commands.addCommand(CommandIDs.deleteRun, {
    ...onRun('Clarion: Delete Run…'),
    icon: deleteIcon,
    execute: async args => {
      const runId = runIdOf(args);
      const run = await knownRun(runId);
      if (!TERMINAL_RUN.has(run.status)) {
        Notification.warning(`Run ${runId} is ${run.status}: cancel it first.`, { autoClose: 5000 });
        return false;
      }
      const name = runTitle(run, controller.agents);
      if (!(await confirm('Delete this run?', `${name} (${run.status}, ${runId}) and all its steps and events.`, 'Delete'))) {
        return false;
      }
      try {
        await api.deleteRun(runId);
      } catch (error) {
        failed('Cannot delete the run', error);
        return false;
      }
      controller.runs.remove([runId]);
      runs.find(w => w.model.runId === runId)?.close();
      return true;
    }
  });
  commands.addCommand(CommandIDs.deleteFinishedRuns, {
    label: 'Clarion: Delete the Finished Runs the Runs List Shows…',
    icon: deleteIcon,
    execute: async () => {
      const filter = controller.runs.filter;
      const workflow = controller.workflows?.find(w => w.id === filter.workflow_id);
      const which = [
        filter.status ? `${filter.status}` : 'finished',
        'runs',
        filter.workflow_id ? `of ${workflow?.name ?? filter.workflow_id}` : 'of every workflow'
      ].join(' ');
      if (!(await confirm('Delete runs?', `Delete all ${which}, with their steps and events? Active runs stay.`, 'Delete'))) {
        return;
      }
      try {
        const deleted = await api.deleteRuns(filter);
        Notification.success(`Deleted ${deleted} run${deleted === 1 ? '' : 's'}.`, { autoClose: 4000 });
      } catch (error) {
        failed('Cannot delete the runs', error);
      }
      await controller.runs.reload();
    }
  });
  commands.addCommand(CommandIDs.openInNotebook, {
    ...onRun('Clarion: Open Run in a Notebook'),
    execute: async args => {
      const runId = runIdOf(args);
      const panel = (await commands.execute('notebook:create-new', {})) as NotebookPanel;
      await panel.context.ready;
      const cell = panel.content.model?.cells.get(0);
      cell?.sharedModel.setSource(`%load_ext clarion_jupyter\n%clarion show ${runId}`);
    }
  });

  commands.addCommand(CommandIDs.runWorkflow, {
    label: 'Clarion: Run Workflow…',
    icon: runIcon,
    execute: async args => {
      const id = String(args.id ?? '') || (await pick('Run which workflow?', workflowItems()));
      if (id) {
        showTab('workflows', id);
      }
    }
  });
  /** Edit a workflow or an agent as YAML: the one named (or picked), in its tab if one is open. */
  const editCommand = (
    kind: 'workflow' | 'agent',
    items: () => [string, string][],
    opened: (id: string) => YamlEditor | undefined,
    open: (id: string) => Promise<void>
  ) => ({
    label: `Clarion: Edit ${kind === 'workflow' ? 'Workflow' : 'Agent'} as YAML…`,
    execute: async (args: ReadonlyPartialJSONObject) => {
      const id = String(args.id ?? '') || (await pick(`Edit which ${kind}?`, items()));
      const existing = id ? opened(id) : undefined;
      if (existing) {
        shell.activateById(existing.id);
      } else if (id) {
        await open(id).catch(error => failed(`Cannot open ${kind} ${id}`, error));
      }
    }
  });
  const showEditor = (editor: YamlEditor): void => {
    shell.add(editor, 'main');
    shell.activateById(editor.id);
  };
  commands.addCommand(
    CommandIDs.editWorkflow,
    editCommand('workflow', workflowItems, id => editors.find(w => w.workflowId === id), async id => {
      const [workflow, canWrite] = await Promise.all([api.getWorkflow(id), api.canWrite()]);
      const editor = new WorkflowEditor(api, id, yamlOf(workflow), parts.editorServices, canWrite);
      void editors.add(editor);
      showEditor(editor);
    })
  );
  // One Save for every YAML editor (Accel S in either): the editor in front only, so a
  // notebook in front keeps Lab's own Save.
  const yamlInFront = (): YamlEditor | null => (shell.currentWidget instanceof YamlEditor ? shell.currentWidget : null);
  commands.addCommand(CommandIDs.saveWorkflow, {
    label: () => (yamlInFront() instanceof AgentEditor ? 'Clarion: Save Agent' : 'Clarion: Save Workflow'),
    caption: 'Validate and save through the Clarion API',
    icon: saveIcon,
    isEnabled: () => yamlInFront() !== null,
    execute: () => yamlInFront()?.save()
  });
  commands.addCommand(CommandIDs.deleteWorkflow, {
    label: 'Clarion: Delete Workflow…',
    icon: deleteIcon,
    execute: async args => {
      const id = String(args.id ?? '') || (await pick('Delete which workflow?', deletableItems()));
      const workflow = controller.workflows?.find(w => w.id === id);
      if (!id || !(await confirm('Delete this workflow?', `${workflow?.name ?? id} (${id}). Its finished runs stay in the Runs list.`, 'Delete'))) {
        return;
      }
      try {
        await api.deleteWorkflow(id);
        editors.find(w => w.workflowId === id)?.close();
      } catch (error) {
        failed(`Cannot delete workflow ${id}`, error);
      }
      await controller.reloadWorkflows();
    }
  });

  const openAgentEditor = async (agent: Agent | null): Promise<void> => {
    const editor = new AgentEditor(api, agent, parts.editorServices, await api.canWrite());
    // A new agent is tracked (and restored on reload) once it has an id: from its first save.
    editor.saved.connect(() => {
      void (agentEditors.has(editor) ? agentEditors.save(editor) : agentEditors.add(editor));
      void controller.reloadAgents();
    });
    if (agent) {
      void agentEditors.add(editor);
    }
    showEditor(editor);
  };
  commands.addCommand(
    CommandIDs.editAgent,
    editCommand(
      'agent',
      agentItems,
      id => agentEditors.find(w => w.agentId === id),
      async id => openAgentEditor(await api.getAgent(id))
    )
  );
  commands.addCommand(CommandIDs.newAgent, {
    label: 'Clarion: New Agent',
    caption: 'A new agent, written as YAML and saved through the Clarion API',
    execute: () => openAgentEditor(null)
  });

  commands.addCommand(CommandIDs.importAgents, {
    label: 'Clarion: Import v2 Agents…',
    execute: () => {
      sidebar.state.requestImport();
      shell.activateById(sidebar.id);
    }
  });
  const runAgent = async (args: ReadonlyPartialJSONObject): Promise<void> => {
    const id = String(args.id ?? '') || (await pick('Run which agent?', agentItems()));
    if (id) {
      showTab('agents', id);
    }
  };
  commands.addCommand(CommandIDs.runAgent, { label: 'Clarion: Run Agent…', icon: runIcon, execute: runAgent });
  commands.addCommand(CommandIDs.runAgentOnFiles, {
    label: 'Run agent on these files',
    icon,
    execute: async args => {
      await controller.reloadAgents();
      await runAgent(args);
    }
  });
  commands.addCommand(CommandIDs.runFile, {
    label: 'Run with Clarion',
    icon,
    isVisible: () => selectedYaml(parts) !== null,
    execute: async () => {
      const path = selectedYaml(parts);
      if (path) {
        const id = await saveFromFile(parts, path);
        if (id) {
          await controller.reloadWorkflows();
          showTab('workflows', id);
        }
      }
    }
  });
}

/** A menu label: the palette's names the extension, a context menu's (`isContextMenu`) does not need to. */
function labelled(label: string): (args: ReadonlyPartialJSONObject) => string {
  return args => (args.isContextMenu ? label : `Clarion: ${label}`);
}

/**
 * Iterating on runs: re-run from a step, re-run with changed inputs and models (a Lab dialog),
 * and compare runs in a tab. Each starts from the run (and step) named by its arguments, by the
 * element a context menu was opened on, or by the run tab in front.
 */
function addIterateCommands(
  parts: IClarionParts,
  runIdOf: (args: ReadonlyPartialJSONObject) => string,
  clicked: (args: ReadonlyPartialJSONObject, attribute: 'runId' | 'step') => string | undefined,
  openRun: (runId: string) => void
): void {
  const { app, api, controller, sidebar, started, runs, compares, icon } = parts;
  const { commands, shell } = app;
  const known = (runId: string): WorkflowRun | null =>
    runs.find(w => w.model.runId === runId)?.model.run ?? controller.runs.get(runId) ?? null;
  /** A run is re-run once it has finished (one not loaded here is left to the server to judge). */
  const finished = (args: ReadonlyPartialJSONObject): boolean => {
    const runId = runIdOf(args);
    const run = runId ? known(runId) : null;
    return !!runId && (!run || TERMINAL_RUN.has(run.status));
  };
  /** The run's document with its workflow snapshot (lists leave it out). */
  const document = async (runId: string): Promise<WorkflowRun> => {
    const run = known(runId);
    return run?.workflow ? run : api.getRun(runId);
  };
  const rerun = async (runId: string, request: RerunRequest): Promise<void> => {
    try {
      started((await api.rerun(runId, request)).run_id);
    } catch (error) {
      failed('Cannot re-run', error);
    }
  };

  commands.addCommand(CommandIDs.rerunFromStep, {
    label: labelled('Re-run from Here'),
    caption: 'A new run: this step and every step that reads it run again, the others are reused',
    icon: runIcon,
    isEnabled: finished,
    execute: async args => {
      const runId = runIdOf(args);
      // A for_each item's node names its step: the step re-runs, with every item.
      let step = String(args.step ?? clicked(args, 'step') ?? '').replace(/\[\d+\]$/, '');
      if (!step) {
        const run = await document(runId).catch(() => null);
        const steps = [...new Set((run?.steps ?? []).map(s => s.step_id))];
        step = (await pick('Re-run from which step?', steps.map(id => [id, id]))) ?? '';
      }
      if (step) {
        await rerun(runId, { from_step: step });
      }
    }
  });
  commands.addCommand(CommandIDs.rerunWith, {
    label: labelled('Re-run with…'),
    caption: 'Re-run with other inputs or models: the steps no change reaches are reused',
    icon: runIcon,
    isEnabled: finished,
    execute: async args => {
      const runId = runIdOf(args);
      let request: RerunRequest | null;
      try {
        const run = await document(runId);
        if (controller.agents === null) {
          await controller.reloadAgents();
        }
        request = await askRerun(run, controller.agents, runTitle(run, controller.agents));
      } catch (error) {
        failed('Cannot re-run', error);
        return;
      }
      if (request) {
        await rerun(runId, request);
      }
    }
  });

  const selected = (): string[] => sidebar.selection.chosen(controller.runs.runs.map(run => run.run_id));
  commands.addCommand(CommandIDs.compareRuns, {
    label: labelled('Compare Selected Runs'),
    caption: 'The runs side by side, step by step (select them in the Runs list with Ctrl-click or Shift-click)',
    isEnabled: args => !args.isContextMenu || selected().length >= 2,
    execute: args => {
      const ids = args.ids ? String(args.ids).split(',').filter(Boolean) : selected();
      if (ids.length < 2) {
        Notification.warning('Compare: select two or more runs in the Runs list first (Ctrl-click or Shift-click them).', {
          autoClose: 5000
        });
        return;
      }
      const existing = compares.find(w => w.id === compareTabId(ids));
      if (existing) {
        shell.activateById(existing.id);
        return;
      }
      const widget = new CompareWidget(new CompareModel(api, ids), openRun, icon);
      void compares.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
    }
  });
}

function selectedYaml({ fileBrowser }: IClarionParts): string | null {
  const items = fileBrowser ? Array.from(fileBrowser.selectedItems()) : [];
  return items.length === 1 && /\.ya?ml$/i.test(items[0].path) ? items[0].path : null;
}

/**
 * Saves the workflow a YAML file holds (replacing the saved one of the same id), so that its
 * run form opens with the file's inputs; its id, or null when the server refused it (told).
 */
async function saveFromFile({ app, api }: IClarionParts, path: string): Promise<string | null> {
  try {
    const file = await app.serviceManager.contents.get(path, { content: true, format: 'text', type: 'file' });
    const text = String(file.content);
    try {
      return (await api.createWorkflowYaml(text)).id;
    } catch (error) {
      const id = (error as ApiError).details?.id;
      if ((error as ApiError).status !== 409 || typeof id !== 'string') {
        throw error;
      }
      return (await api.saveWorkflowYaml(id, text)).id;
    }
  } catch (error) {
    const e = error as ApiError;
    const problems = e.problems?.map(p => `${p.loc}: ${p.message}`).join('; ');
    failed(`${path} is not a workflow Clarion can run`, problems ? new Error(problems) : e);
    return null;
  }
}
