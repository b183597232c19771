/**
 * Edit as YAML: a JupyterLab code editor in a main-area tab that saves through
 * `PUT /api/v3/workflows/{id}` and shows the server's validation problems twice: in the
 * editor as lint diagnostics (a gutter marker and an underline at the line each points at,
 * cleared once a save succeeds), and as a list under the text, each naming its step and
 * field (a click on one moves the cursor to the marked place).
 */
import { lintGutter, setDiagnostics } from '@codemirror/lint';
import { MainAreaWidget, ToolbarButton } from '@jupyterlab/apputils';
import { CodeEditor, CodeEditorWrapper, IEditorServices } from '@jupyterlab/codeeditor';
import { CodeMirrorEditor } from '@jupyterlab/codemirror';
import { ReactWidget, UseSignal, saveIcon } from '@jupyterlab/ui-components';
import { Signal } from '@lumino/signaling';
import { Panel } from '@lumino/widgets';
import { dump } from 'js-yaml';
import * as React from 'react';

import { ApiError, ClarionApi } from './api';
import { Place, problemDiagnostics, problemPlace } from './diagnostics';
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

function ProblemList(props: { status: Status; text: () => string; onGo: (place: Place) => void }): JSX.Element {
  return <UseSignal signal={props.status.changed}>{() => <ProblemListBody {...props} />}</UseSignal>;
}

function ProblemListBody({
  status,
  text,
  onGo
}: {
  status: Status;
  text: () => string;
  onGo: (place: Place) => void;
}): JSX.Element | null {
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
          const place = problemPlace(p, text().split('\n'));
          return (
            <li key={i}>
              <button className="clarion-Link" onClick={() => onGo(place)} title={`Go to line ${place.line}`}>
                {p.loc} (line {place.line})
              </button>{' '}
              {p.message}
            </li>
          );
        })}
      </ul>
    </div>
  );
}

export class WorkflowEditor extends MainAreaWidget<Panel> {
  private _editor: CodeEditorWrapper;
  private _status = new Status();

  constructor(
    readonly api: ClarionApi,
    readonly workflowId: string,
    text: string,
    services: IEditorServices
  ) {
    // A plain panel laid out by CSS (a column: the editor stretches, the problems take their height).
    const content = new Panel();
    content.addClass('clarion-EditorContent');
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
    if (this._editor.editor instanceof CodeMirrorEditor) {
      this._editor.editor.injectExtension(lintGutter());
    }
    const problems = ReactWidget.create(<ProblemList status={this._status} text={() => this.text} onGo={place => this.goTo(place)} />);
    problems.addClass('clarion-ProblemsWidget');
    content.addWidget(this._editor);
    content.addWidget(problems);
    this.toolbar.addItem(
      'save',
      new ToolbarButton({ icon: saveIcon, label: 'Save', tooltip: 'Validate and save (Ctrl+S; Cmd+S on a Mac)', onClick: () => void this.save() })
    );
    model.sharedModel.changed.connect(() => {
      if (this._status.saved) {
        this._status.set([], null, false);
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
      this._mark([]);
      return true;
    } catch (error) {
      const e = error as ApiError;
      this._status.set(e.problems ?? [], e.message, false);
      this._mark(e.problems ?? []);
      return false;
    }
  }

  /** Shows `problems` as the editor's lint diagnostics (none: clears them). */
  private _mark(problems: Problem[]): void {
    const editor = this._editor.editor;
    if (editor instanceof CodeMirrorEditor) {
      const view = editor.editor;
      view.dispatch(setDiagnostics(view.state, problemDiagnostics(problems, view.state.doc)));
    }
  }

  goTo({ line, from }: Place): void {
    const editor = this._editor.editor;
    editor.setCursorPosition({ line: Math.max(0, line - 1), column: from });
    editor.focus();
  }

  protected onActivateRequest(): void {
    this._editor.editor.focus();
  }
}
