/**
 * The Clarion sidebar plugin: a left-area panel (Clarion icon, a badge for runs waiting for
 * approval), commands with palette entries and context-menu items (file browser, runs, steps), run detail,
 * workflow editor and Compare tabs that Lab tracks and restores on reload, notifications for the
 * runs started here, and its settings in Lab's settings editor.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, WidgetTracker } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { AgentEditor } from './agenteditor';
import { ClarionApi } from './api';
import { CommandIDs, PALETTE_COMMANDS, addCommands } from './commands';
import { CompareWidget } from './comparetab';
import { ClarionController } from './controller';
import { WorkflowEditor } from './editor';
import { RunNotifier } from './notifier';
import { RunDetailWidget } from './runtab';
import { runTitle } from './runtitle';
import { ClarionSettings, PLUGIN_ID } from './settings';
import { ClarionSidebar } from './sidebar';
import clarionSvg from '../style/clarion.svg';

export const clarionIcon = new LabIcon({ name: 'clarion:logo', svgstr: clarionSvg });

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Clarion: workflows, live runs, approvals and agent runs over the v3 API.',
  autoStart: true,
  requires: [IEditorServices],
  optional: [ICommandPalette, ILayoutRestorer, IDefaultFileBrowser, IRenderMimeRegistry, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    editorServices: IEditorServices,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    fileBrowser: IDefaultFileBrowser | null,
    rendermime: IRenderMimeRegistry | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    const api = new ClarionApi(app.serviceManager.serverSettings);
    const controller = new ClarionController(api);
    const settings = new ClarionSettings();
    const { commands, shell } = app;
    const runs = new WidgetTracker<RunDetailWidget>({ namespace: 'clarion-run' });
    const compares = new WidgetTracker<CompareWidget>({ namespace: 'clarion-compare' });
    const editors = new WidgetTracker<WorkflowEditor>({ namespace: 'clarion-workflow' });
    const agentEditors = new WidgetTracker<AgentEditor>({ namespace: 'clarion-agent' });

    const openRun = (runId: string): void => void commands.execute(CommandIDs.openRun, { runId });
    // A run just started may not be in the list yet (or is filtered out of it): its document names it.
    const nameOf = async (runId: string): Promise<string> => {
      const run = controller.runs.get(runId) ?? (await api.getRun(runId).catch(() => null));
      return run ? runTitle(run, controller.agents) : `Run ${runId.slice(-8)}`;
    };
    const notifier = new RunNotifier(controller.event, nameOf, settings, openRun);
    const started = (runId: string): void => {
      notifier.watch(runId);
      openRun(runId);
    };
    const selectedFiles = (): string[] =>
      fileBrowser ? Array.from(fileBrowser.selectedItems()).filter(i => i.type !== 'directory').map(i => i.path) : [];
    const sidebar = new ClarionSidebar(controller, settings, {
      openRun,
      editWorkflow: id => void commands.execute(CommandIDs.editWorkflow, { id }),
      deleteWorkflow: id => void commands.execute(CommandIDs.deleteWorkflow, { id }),
      editAgent: id => void commands.execute(CommandIDs.editAgent, { id }),
      newAgent: () => void commands.execute(CommandIDs.newAgent),
      deleteFinishedRuns: () => void commands.execute(CommandIDs.deleteFinishedRuns),
      compareRuns: ids => void commands.execute(CommandIDs.compareRuns, { ids: ids.join(',') }),
      selectedFiles,
      started
    });
    sidebar.title.icon = clarionIcon;
    shell.add(sidebar, 'left', { rank: 600 });

    addCommands({
      app, api, controller, sidebar, started, runs, compares, editors, agentEditors, editorServices, rendermime, fileBrowser,
      icon: clarionIcon
    }); // prettier-ignore
    if (palette) {
      for (const command of PALETTE_COMMANDS) {
        palette.addItem({ command, category: 'Clarion' });
      }
    }
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
      void restorer.restore(runs, {
        command: CommandIDs.openRun,
        args: widget => ({ runId: widget.model.runId }),
        name: widget => widget.model.runId
      });
      void restorer.restore(compares, {
        command: CommandIDs.compareRuns,
        args: widget => ({ ids: widget.model.runIds.join(',') }),
        name: widget => widget.model.runIds.join(',')
      });
      void restorer.restore(editors, {
        command: CommandIDs.editWorkflow,
        args: widget => ({ id: widget.workflowId }),
        name: widget => widget.workflowId
      });
      void restorer.restore(agentEditors, {
        command: CommandIDs.editAgent,
        args: widget => ({ id: widget.agentId }),
        name: widget => widget.agentId ?? widget.id
      });
    }
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => settings.follow(loaded))
        .catch(error => console.warn('Clarion: its settings could not be read, the defaults apply', error));
    }
    void app.restored.then(() => controller.start());
  }
};

export default plugin;
