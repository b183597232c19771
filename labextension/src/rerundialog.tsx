/**
 * The Re-run with… dialog, a Lab dialog: the run's inputs prefilled (arrays and objects as
 * YAML, as the run form edits them) and a model field per agent the run uses. A field that
 * holds no value is marked at once and keeps Lab's accept button disabled.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { InputField } from './inputfield';
import { Agent, RerunRequest, WorkflowRun } from './protocol';
import { RerunForm } from './rerun';

/** The dialog's body: Lab reads the request from `getValue` when Re-run is pressed. */
export class RerunDialogBody extends ReactWidget implements Dialog.IBodyWidget<RerunRequest> {
  constructor(readonly form: RerunForm) {
    super();
    this.addClass('clarion-RerunDialog');
    // Lab's dialog checks its fields (`:invalid`) on every input event, before the field has
    // handled it: once the field has set its validity, the dialog is asked to check again.
    form.changed.connect(() => queueMicrotask(() => this.node.dispatchEvent(new Event('input', { bubbles: true }))));
  }

  getValue(): RerunRequest {
    return this.form.request();
  }

  render(): JSX.Element {
    return <UseSignal signal={this.form.changed}>{() => <RerunFields form={this.form} />}</UseSignal>;
  }
}

function RerunFields({ form }: { form: RerunForm }): JSX.Element {
  return (
    <div className="clarion-Form">
      <p className="clarion-Muted">The steps that no change reaches are reused: their outputs are copied, their tasks do not run.</p>
      <fieldset className="clarion-Fieldset">
        <legend>Inputs</legend>
        {form.inputs.length === 0 && <div className="clarion-Muted">This workflow takes no inputs.</div>}
        {form.inputs.map(([name, spec]) => (
          <InputField
            key={name}
            id={`clarion-rerun-input-${name}`}
            name={name}
            spec={spec}
            text={form.texts[name]}
            checked={form.checks[name]}
            problem={form.inputProblem(name)}
            validate={text => form.inputProblem(name, text)}
            onText={text => form.setText(name, text)}
            onCheck={checked => form.setCheck(name, checked)}
          />
        ))}
      </fieldset>
      {form.agents.length > 0 && (
        <fieldset className="clarion-Fieldset">
          <legend>Models</legend>
          {form.agents.map(id => {
            const problem = form.modelProblem(id);
            return (
              <div className="clarion-Field" key={id}>
                <label htmlFor={`clarion-rerun-model-${id}`}>
                  {id} <span className="clarion-Muted">agent&apos;s model, for this run only</span>
                </label>
                <input
                  id={`clarion-rerun-model-${id}`}
                  className="jp-mod-styled"
                  data-agent-model={id}
                  value={form.models[id]}
                  placeholder="a litellm model, e.g. openai/gpt-4o"
                  aria-invalid={problem !== null}
                  onChange={e => {
                    e.currentTarget.setCustomValidity(form.modelProblem(id, e.currentTarget.value) ?? '');
                    form.setModel(id, e.currentTarget.value);
                  }}
                />
                {problem && (
                  <div className="clarion-FieldProblem" role="alert">
                    {problem}
                  </div>
                )}
              </div>
            );
          })}
        </fieldset>
      )}
    </div>
  );
}

/** Asks how to re-run `run`: the request, or null when the user cancels. */
export async function askRerun(run: WorkflowRun, agents: readonly Agent[] | null, title: string): Promise<RerunRequest | null> {
  const answer = await showDialog({
    title: `Re-run ${title} with…`,
    body: new RerunDialogBody(new RerunForm(run, agents)),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Re-run' })],
    focusNodeSelector: 'input, textarea'
  });
  return answer.button.accept ? answer.value : null;
}
