/**
 * The Clarion sidebar plugin: a left-area panel (Clarion icon, a badge for runs waiting for
 * approval), commands with palette entries, Run detail and workflow editor tabs.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Clipboard, ICommandPalette, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ClarionApi } from './api';
import { ClarionController } from './controller';
import { IRunActions, RunDetail } from './detail';
import { WorkflowEditor, yamlOf } from './editor';
import { RunModel } from './run';
import { ClarionSidebar } from './sidebar';
import clarionSvg from '../style/clarion.svg';

export const clarionIcon = new LabIcon({ name: 'clarion:logo', svgstr: clarionSvg });

export namespace CommandIDs {
  export const show = 'clarion:show-sidebar';
  export const openRun = 'clarion:open-run';
  export const editWorkflow = 'clarion:edit-workflow';
  export const openInNotebook = 'clarion:open-run-in-notebook';
  export const refresh = 'clarion:refresh';
}

class RunDetailWidget extends MainAreaWidget<ReactWidget> {
  constructor(
    readonly model: RunModel,
    actions: IRunActions
  ) {
    const content = ReactWidget.create(<RunDetail model={model} actions={actions} />);
    content.addClass('clarion-RunDetailContent');
    super({ content });
    this.id = `clarion-run-${model.runId}`;
    this.title.label = `Run ${model.runId.slice(-8)}`;
    this.title.icon = clarionIcon;
    this.title.closable = true;
    model.changed.connect(() => {
      const run = model.run;
      if (run) {
        this.title.label = `${run.workflow_name || run.workflow_id} · ${run.status}`;
        this.title.caption = `Run ${run.run_id}`;
      }
    });
    void model.start();
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@clarion/sidebar:plugin',
  description: 'Clarion: workflows, live runs, approvals and agent runs over the v3 API.',
  autoStart: true,
  requires: [IEditorServices],
  optional: [ICommandPalette, ILayoutRestorer, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    editorServices: IEditorServices,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    fileBrowser: IDefaultFileBrowser | null
  ) => {
    const api = new ClarionApi(app.serviceManager.serverSettings);
    const controller = new ClarionController(api);
    const { commands, shell } = app;

    const openRun = (runId: string): void => void commands.execute(CommandIDs.openRun, { runId });
    const selectedFiles = (): string[] =>
      fileBrowser ? Array.from(fileBrowser.selectedItems()).filter(i => i.type !== 'directory').map(i => i.path) : [];
    const sidebar = new ClarionSidebar(controller, {
      openRun,
      editWorkflow: id => void commands.execute(CommandIDs.editWorkflow, { id }),
      selectedFiles
    });
    sidebar.title.icon = clarionIcon;
    shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);

    const runActions: IRunActions = {
      openRun,
      openInNotebook: runId => void commands.execute(CommandIDs.openInNotebook, { runId }),
      copy: text => {
        Clipboard.copyToSystem(text);
        Notification.info(`Copied ${text}`, { autoClose: 2000 });
      }
    };

    commands.addCommand(CommandIDs.show, {
      label: 'Clarion: Show Runs, Workflows and Agents',
      icon: clarionIcon,
      execute: () => shell.activateById(sidebar.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Clarion: Refresh',
      execute: () => controller.start()
    });
    commands.addCommand(CommandIDs.openRun, {
      label: args => (args.runId ? `Clarion: Open Run ${args.runId}` : 'Clarion: Open Run'),
      execute: args => {
        const runId = String(args.runId ?? '');
        if (!runId) {
          return;
        }
        const existing = Array.from(shell.widgets('main')).find(w => w.id === `clarion-run-${runId}`);
        if (existing) {
          shell.activateById(existing.id);
          return;
        }
        const widget = new RunDetailWidget(new RunModel(api, runId), runActions);
        shell.add(widget, 'main');
        shell.activateById(widget.id);
      }
    });
    commands.addCommand(CommandIDs.editWorkflow, {
      label: 'Clarion: Edit Workflow as YAML',
      execute: async args => {
        const id = String(args.id ?? '');
        const existing = Array.from(shell.widgets('main')).find(w => w.id === `clarion-workflow-${id}`);
        if (existing) {
          shell.activateById(existing.id);
          return;
        }
        try {
          const workflow = await api.getWorkflow(id);
          const editor = new WorkflowEditor(api, id, yamlOf(workflow), editorServices);
          shell.add(editor, 'main');
          shell.activateById(editor.id);
        } catch (error) {
          Notification.error(`Cannot open workflow ${id}: ${(error as Error).message}`);
        }
      }
    });
    commands.addCommand(CommandIDs.openInNotebook, {
      label: 'Clarion: Open Run in a Notebook',
      execute: async args => {
        const runId = String(args.runId ?? '');
        const panel = (await commands.execute('notebook:create-new', {})) as NotebookPanel;
        await panel.context.ready;
        const cell = panel.content.model?.cells.get(0);
        cell?.sharedModel.setSource(`%load_ext clarion_jupyter\n%clarion show ${runId}`);
      }
    });
    if (palette) {
      for (const command of [CommandIDs.show, CommandIDs.refresh]) {
        palette.addItem({ command, category: 'Clarion' });
      }
    }
    void app.restored.then(() => controller.start());
  }
};

export default plugin;
