/**
 * Edit as YAML: a JupyterLab code editor in a main-area tab that saves through
 * `PUT /api/v3/workflows/{id}` and lists the server's validation problems under the text,
 * each naming its step and field (a click on one with a line number moves the cursor there).
 */
import { MainAreaWidget, ToolbarButton } from '@jupyterlab/apputils';
import { CodeEditor, CodeEditorWrapper, IEditorServices } from '@jupyterlab/codeeditor';
import { ReactWidget, saveIcon } from '@jupyterlab/ui-components';
import { Signal } from '@lumino/signaling';
import { BoxPanel } from '@lumino/widgets';
import { dump } from 'js-yaml';
import * as React from 'react';

import { ApiError, ClarionApi } from './api';
import { useSignal } from './common';
import { Problem, WorkflowDocument } from './protocol';

/** The text to edit: the YAML as it was saved, or the stored document as YAML. */
export function yamlOf(workflow: WorkflowDocument): string {
  if (workflow.source) {
    return workflow.source;
  }
  const { source: _source, created_at: _created, updated_at: _updated, ...doc } = workflow;
  return dump(doc, { lineWidth: 100, noRefs: true });
}

class Status {
  problems: Problem[] = [];
  message: string | null = null;
  saved = false;
  changed = new Signal<this, void>(this);
  set(problems: Problem[], message: string | null, saved: boolean): void {
    this.problems = problems;
    this.message = message;
    this.saved = saved;
    this.changed.emit();
  }
}

function ProblemList({ status, onGo }: { status: Status; onGo: (line: number) => void }): JSX.Element | null {
  useSignal(status.changed);
  if (status.saved) {
    return (
      <div className="clarion-Saved" role="status">
        Saved.
      </div>
    );
  }
  if (!status.message && status.problems.length === 0) {
    return null;
  }
  return (
    <div className="clarion-Problems" role="alert">
      {status.message && <div className="clarion-ProblemsHead">{status.message}</div>}
      <ul>
        {status.problems.map((p, i) => {
          const line = /line (\d+)/.exec(p.loc)?.[1];
          return (
            <li key={i}>
              <button className="clarion-Link" onClick={() => line && onGo(Number(line))} disabled={!line}>
                {p.loc}
              </button>{' '}
              {p.message}
            </li>
          );
        })}
      </ul>
    </div>
  );
}

export class WorkflowEditor extends MainAreaWidget<BoxPanel> {
  private _editor: CodeEditorWrapper;
  private _status = new Status();

  constructor(
    readonly api: ClarionApi,
    readonly workflowId: string,
    text: string,
    services: IEditorServices
  ) {
    const content = new BoxPanel({ direction: 'top-to-bottom', spacing: 0 });
    super({ content });
    this.id = `clarion-workflow-${workflowId}`;
    this.title.label = `${workflowId}.yaml`;
    this.title.caption = `Workflow ${workflowId} (saved through the Clarion API)`;
    this.title.closable = true;
    this.addClass('clarion-WorkflowEditor');
    const model = new CodeEditor.Model({ mimeType: 'text/x-yaml' });
    model.sharedModel.setSource(text);
    this._editor = new CodeEditorWrapper({ model, factory: services.factoryService.newDocumentEditor });
    this._editor.addClass('clarion-YamlEditor');
    const problems = ReactWidget.create(<ProblemList status={this._status} onGo={line => this.goTo(line)} />);
    problems.addClass('clarion-ProblemsWidget');
    content.addWidget(this._editor);
    content.addWidget(problems);
    BoxPanel.setStretch(this._editor, 1);
    BoxPanel.setStretch(problems, 0);
    this.toolbar.addItem(
      'save',
      new ToolbarButton({ icon: saveIcon, label: 'Save', tooltip: 'Validate and save (Ctrl+S)', onClick: () => void this.save() })
    );
    model.sharedModel.changed.connect(() => {
      if (this._status.saved) {
        this._status.set([], null, false);
      }
    });
    this.node.addEventListener('keydown', event => {
      if ((event.ctrlKey || event.metaKey) && event.key === 's') {
        event.preventDefault();
        event.stopPropagation();
        void this.save();
      }
    });
  }

  get text(): string {
    return this._editor.model.sharedModel.getSource();
  }

  async save(): Promise<boolean> {
    try {
      await this.api.saveWorkflowYaml(this.workflowId, this.text);
      this._status.set([], null, true);
      return true;
    } catch (error) {
      const e = error as ApiError;
      this._status.set(e.problems ?? [], e.message, false);
      return false;
    }
  }

  goTo(line: number): void {
    const editor = this._editor.editor;
    editor.setCursorPosition({ line: Math.max(0, line - 1), column: 0 });
    editor.focus();
  }

  protected onActivateRequest(): void {
    this._editor.editor.focus();
  }
}
