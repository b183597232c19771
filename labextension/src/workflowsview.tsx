/**
 * The Workflows view: each stored workflow with Run (a form for its inputs), Edit as YAML
 * and Delete.
 */
import * as React from 'react';

import { ApiError, ClarionApi } from './api';
import { ErrorMessage } from './common';
import { InputField } from './inputfield';
import { inputText, parseInput } from './inputvalue';
import { InputSpec, WorkflowDocument } from './protocol';
import { AGENT_RUN_WORKFLOW, V2_RUN_WORKFLOW } from './runtitle';

export function WorkflowsView({
  api,
  workflows,
  error,
  open,
  formKey,
  onToggle,
  onReload,
  onEdit,
  onDelete,
  onStarted
}: {
  api: ClarionApi;
  workflows: WorkflowDocument[] | null;
  error: string | null;
  /** The workflow whose run form is open. */
  open: string | null;
  /** Changes when a form is asked for again (it then starts afresh). */
  formKey: number;
  onToggle: (id: string) => void;
  onReload: () => void;
  onEdit: (id: string) => void;
  onDelete: (id: string) => void;
  onStarted: (runId: string) => void;
}): JSX.Element {
  if (error) {
    return <ErrorMessage message={error} onRetry={onReload} />;
  }
  if (workflows === null) {
    return <div className="clarion-Empty">Loading workflows…</div>;
  }
  if (workflows.length === 0) {
    return (
      <div className="clarion-Empty">
        No workflows saved yet. Save one with <code>%%clarion --save</code> in a notebook or{' '}
        <code>POST /api/v3/workflows</code>.
      </div>
    );
  }
  return (
    <ul className="clarion-List" aria-label="Workflows">
      {workflows.map(workflow => (
        <li key={workflow.id} className="clarion-Item" data-workflow={workflow.id}>
          <div className="clarion-ItemText">
            <span className="clarion-ItemName">{workflow.name}</span>
            <span className="clarion-Muted">
              {workflow.id} · {countSteps(workflow)} step{countSteps(workflow) === 1 ? '' : 's'}
            </span>
          </div>
          <div className="clarion-ItemActions">
            <button
              className="jp-mod-styled jp-mod-accept clarion-Small"
              aria-expanded={open === workflow.id}
              onClick={() => onToggle(workflow.id)}
            >
              Run
            </button>
            <button className="jp-mod-styled clarion-Small" onClick={() => onEdit(workflow.id)}>
              Edit as YAML
            </button>
            {workflow.id !== AGENT_RUN_WORKFLOW && workflow.id !== V2_RUN_WORKFLOW && (
              <button
                className="jp-mod-styled jp-mod-reject clarion-Small"
                aria-label={`Delete ${workflow.name}`}
                title="Delete this workflow (its finished runs stay)"
                onClick={() => onDelete(workflow.id)}
              >
                Delete
              </button>
            )}
          </div>
          {workflow.description && <div className="clarion-Muted">{workflow.description}</div>}
          {open === workflow.id && (
            <RunForm
              key={formKey}
              api={api}
              workflow={workflow}
              onStarted={runId => {
                onToggle(workflow.id);
                onStarted(runId);
              }}
            />
          )}
        </li>
      ))}
    </ul>
  );
}

function countSteps(workflow: WorkflowDocument): number {
  return workflow.steps.reduce((n, entry) => n + ('parallel' in entry ? entry.parallel.length : 1), 0);
}

/** The text a field starts with: its default. */
function initialText(spec: InputSpec): string {
  return inputText(spec.default);
}

function RunForm({
  api,
  workflow,
  onStarted
}: {
  api: ClarionApi;
  workflow: WorkflowDocument;
  onStarted: (runId: string) => void;
}): JSX.Element {
  const inputs = Object.entries(workflow.inputs ?? {});
  const [texts, setTexts] = React.useState<Record<string, string>>(() =>
    Object.fromEntries(inputs.map(([name, spec]) => [name, initialText(spec)]))
  );
  const [checks, setChecks] = React.useState<Record<string, boolean>>(() =>
    Object.fromEntries(inputs.map(([name, spec]) => [name, spec.default === true]))
  );
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  const submit = (event: React.FormEvent): void => {
    event.preventDefault();
    const values: Record<string, unknown> = {};
    try {
      for (const [name, spec] of inputs) {
        const required = spec.default === undefined;
        if (!required && (spec.type ?? 'string') !== 'boolean' && texts[name] === initialText(spec)) {
          continue; // left at its default: the server applies it
        }
        values[name] = parseInput(name, spec, texts[name], checks[name]);
      }
    } catch (e) {
      setError((e as Error).message);
      return;
    }
    setBusy(true);
    setError(null);
    api
      .runWorkflow(workflow.id, values)
      .then(answer => onStarted(answer.run_id))
      .catch((e: ApiError) =>
        setError(e.problems.length ? e.problems.map(p => `${p.loc}: ${p.message}`).join('\n') : e.message)
      )
      .finally(() => setBusy(false));
  };
  return (
    <form className="clarion-Form" onSubmit={submit} aria-label={`Run ${workflow.name}`}>
      {inputs.length === 0 && <div className="clarion-Muted">This workflow takes no inputs.</div>}
      {inputs.map(([name, spec]) => (
        <InputField
          key={name}
          id={`clarion-input-${workflow.id}-${name}`}
          name={name}
          spec={spec}
          text={texts[name]}
          checked={checks[name]}
          onText={text => setTexts({ ...texts, [name]: text })}
          onCheck={checked => setChecks({ ...checks, [name]: checked })}
        />
      ))}
      {error && <ErrorMessage message={error} />}
      <button type="submit" className="jp-mod-styled jp-mod-accept clarion-Button" disabled={busy}>
        Start run
      </button>
    </form>
  );
}
