/**
 * Edit as YAML: a JupyterLab code editor in a main-area tab that saves a document (a workflow,
 * an agent) through the Clarion API and shows the server's validation problems twice: in the
 * editor as lint diagnostics (a gutter marker and an underline at the line each points at,
 * cleared once a save succeeds), and as a list under the text, each naming its step or field
 * (a click on one moves the cursor to the marked place). The tab carries Lab's unsaved-changes
 * dot while the text differs from what was last saved (closing then asks first), and a
 * document that cannot be saved here opens read-only, saying why.
 */
import { lintGutter, setDiagnostics } from '@codemirror/lint';
import { Dialog, MainAreaWidget, ToolbarButton, showDialog } from '@jupyterlab/apputils';
import { CodeEditor, CodeEditorWrapper, IEditorServices } from '@jupyterlab/codeeditor';
import { CodeMirrorEditor } from '@jupyterlab/codemirror';
import { ReactWidget, UseSignal, saveIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Panel } from '@lumino/widgets';
import { dump } from 'js-yaml';
import * as React from 'react';

import { ApiError, ClarionApi } from './api';
import { Place, problemDiagnostics, problemPlace, problemsOf } from './diagnostics';
import { Problem, WorkflowDocument } from './protocol';
import { V2_RUN_WORKFLOW } from './runtitle';

/** The text to edit: the YAML as it was saved, or the stored document as YAML. */
export function yamlOf(workflow: WorkflowDocument): string {
  if (workflow.source) {
    return workflow.source;
  }
  const { source: _source, created_at: _created, updated_at: _updated, ...doc } = workflow;
  return dump(doc, { lineWidth: 100, noRefs: true });
}

/** What the editor says to a user whose Jupyter authorizer refuses `write` on Clarion (`ClarionApi.canWrite`). */
export const NO_WRITE_PERMISSION =
  "Read-only: this Jupyter server's authorizer lets you read Clarion's agents and workflows, not change them.";

export interface IYamlEditorOptions {
  /** The tab's id: one tab per document. */
  id: string;
  label: string;
  caption: string;
  /** The kind's class (`clarion-WorkflowEditor`, `clarion-AgentEditor`), beside `clarion-YamlDocument`. */
  className: string;
  text: string;
  services: IEditorServices;
  /** Why this document cannot be saved here (it then opens read-only); null: it can. */
  readOnly?: string | null;
  /** A word above the text about this document (where it came from, what a save does). */
  notice?: string | null;
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

/**
 * One document as YAML in a main-area tab. What the text is saved as is the kind's
 * (`store`); the editor validates nothing itself, the server judges every save.
 */
export abstract class YamlEditor extends MainAreaWidget<Panel> {
  private _editor: CodeEditorWrapper;
  private _status = new Status();
  private _savedText: string;
  private _saved = new Signal<this, void>(this);
  readonly readOnly: string | null;

  constructor(options: IYamlEditorOptions) {
    // A plain panel laid out by CSS (a column: the editor stretches, the problems take their height).
    const content = new Panel();
    content.addClass('clarion-EditorContent');
    super({ content });
    this.id = options.id;
    this.title.label = options.label;
    this.title.caption = options.caption;
    this.title.closable = true;
    this.addClass('clarion-YamlDocument');
    this.addClass(options.className);
    this.readOnly = options.readOnly ?? null;
    this._savedText = options.text;
    const model = new CodeEditor.Model({ mimeType: 'text/x-yaml' });
    model.sharedModel.setSource(options.text);
    this._editor = new CodeEditorWrapper({ model, factory: options.services.factoryService.newDocumentEditor });
    this._editor.addClass('clarion-YamlEditor');
    if (this._editor.editor instanceof CodeMirrorEditor) {
      this._editor.editor.injectExtension(lintGutter());
    }
    this._editor.editor.setOption('readOnly', this.readOnly !== null);
    const notes = [this.readOnly, options.notice ?? null].filter((note): note is string => !!note);
    if (notes.length) {
      const notice = ReactWidget.create(<Notes notes={notes} />);
      notice.addClass('clarion-EditorNotice');
      content.addWidget(notice);
    }
    const problems = ReactWidget.create(<ProblemList status={this._status} text={() => this.text} onGo={place => this.goTo(place)} />);
    problems.addClass('clarion-ProblemsWidget');
    content.addWidget(this._editor);
    content.addWidget(problems);
    this.toolbar.addItem(
      'save',
      new ToolbarButton({
        icon: saveIcon,
        label: 'Save',
        enabled: this.readOnly === null,
        tooltip: this.readOnly ?? 'Validate and save (Ctrl+S; Cmd+S on a Mac)',
        onClick: () => void this.save()
      })
    );
    model.sharedModel.changed.connect(() => {
      if (this._status.saved) {
        this._status.set([], null, false);
      }
      this.title.className = this.dirty ? 'jp-mod-dirty' : '';
    });
  }

  get text(): string {
    return this._editor.model.sharedModel.getSource();
  }

  /** The text differs from what was opened or last saved. */
  get dirty(): boolean {
    return this.text !== this._savedText;
  }

  /** A save succeeded. */
  get saved(): ISignal<this, void> {
    return this._saved;
  }

  /** Sends the text to the server: the kind's create or replace. */
  protected abstract store(text: string): Promise<void>;

  async save(): Promise<boolean> {
    if (this.readOnly !== null) {
      this._status.set([], this.readOnly, false);
      return false;
    }
    const text = this.text;
    try {
      await this.store(text);
      this._savedText = text;
      this.title.className = this.dirty ? 'jp-mod-dirty' : '';
      this._status.set([], null, true);
      this._mark([]);
      this._saved.emit();
      return true;
    } catch (error) {
      const e = error as ApiError;
      const problems = problemsOf(e);
      this._status.set(problems, e.message, false);
      this._mark(problems);
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

  /** Unsaved changes are not thrown away without asking, as Lab's own editors ask. */
  protected onCloseRequest(msg: Message): void {
    if (!this.dirty) {
      super.onCloseRequest(msg);
      return;
    }
    void showDialog({
      title: 'Close without saving?',
      body: `${this.title.label} has unsaved changes.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Discard' })]
    }).then(answer => {
      if (answer.button.accept) {
        this._savedText = this.text;
        this.close();
      }
    });
  }
}

function Notes({ notes }: { notes: string[] }): JSX.Element {
  return (
    <>
      {notes.map(note => (
        <div key={note} className="clarion-Notice" role="note">
          {note}
        </div>
      ))}
    </>
  );
}

export class WorkflowEditor extends YamlEditor {
  constructor(
    readonly api: ClarionApi,
    readonly workflowId: string,
    text: string,
    services: IEditorServices,
    canWrite = true
  ) {
    super({
      id: `clarion-workflow-${workflowId}`,
      label: `${workflowId}.yaml`,
      caption: `Workflow ${workflowId} (saved through the Clarion API)`,
      className: 'clarion-WorkflowEditor',
      text,
      services,
      readOnly:
        workflowId === V2_RUN_WORKFLOW
          ? 'Read-only: this workflow is built in. It describes the runs imported from Clarion v2; re-running one starts an agent run.'
          : canWrite
            ? null
            : NO_WRITE_PERMISSION
    });
  }

  protected async store(text: string): Promise<void> {
    await this.api.saveWorkflowYaml(this.workflowId, text);
  }
}
