/**
 * The Workflows view: each stored workflow with Run (a form for its inputs), Edit as YAML
 * and Delete.
 */
import { CORE_SCHEMA, load } from 'js-yaml';
import * as React from 'react';

import { ApiError, ClarionApi } from './api';
import { ErrorMessage } from './common';
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

/** The text a field starts with: the default, as JSON (which YAML reads too) for arrays and objects. */
function initialText(spec: InputSpec): string {
  if (spec.default === undefined || spec.default === null) {
    return '';
  }
  return typeof spec.default === 'string' ? spec.default : JSON.stringify(spec.default);
}

/**
 * A field's value as its declared type, or an error naming the input. Arrays and objects
 * are YAML, as in a `%%clarion` cell: flow (`[a, b]`, `{k: v}`, so JSON too) or block
 * (`- a` a line); YAML's core schema, so a date stays a string.
 */
export function parseInput(name: string, spec: InputSpec, text: string, checked: boolean): unknown {
  switch (spec.type ?? 'string') {
    case 'boolean':
      return checked;
    case 'integer':
    case 'number': {
      const value = Number(text);
      if (text.trim() === '' || Number.isNaN(value) || (spec.type === 'integer' && !Number.isInteger(value))) {
        throw new Error(`input '${name}' must be ${spec.type === 'integer' ? 'an integer' : 'a number'}`);
      }
      return value;
    }
    case 'array':
    case 'object': {
      const shape = spec.type === 'array' ? 'an array ([a, b], or one "- item" a line)' : 'an object ({key: value}, or one "key: value" a line)';
      let value: unknown;
      try {
        value = load(text, { schema: CORE_SCHEMA });
      } catch (error) {
        throw new Error(`input '${name}' must be ${shape}: ${(error as Error).message.split('\n')[0]}`);
      }
      if (spec.type === 'array' ? !Array.isArray(value) : typeof value !== 'object' || Array.isArray(value) || !value) {
        throw new Error(`input '${name}' must be ${shape}`);
      }
      return value;
    }
    default:
      return text;
  }
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
      {inputs.map(([name, spec]) => {
        const type = spec.type ?? 'string';
        const id = `clarion-input-${workflow.id}-${name}`;
        return (
          <div className="clarion-Field" key={name}>
            <label htmlFor={id}>
              {name} <span className="clarion-Muted">{type}{spec.default === undefined ? ', required' : ''}</span>
            </label>
            {type === 'boolean' ? (
              <input
                id={id}
                type="checkbox"
                checked={checks[name]}
                onChange={e => setChecks({ ...checks, [name]: e.target.checked })}
              />
            ) : type === 'array' || type === 'object' ? (
              <textarea
                id={id}
                className="jp-mod-styled"
                rows={3}
                placeholder={type === 'array' ? '[a, b] or one "- item" a line' : '{key: value} or one "key: value" a line'}
                value={texts[name]}
                onChange={e => setTexts({ ...texts, [name]: e.target.value })}
              />
            ) : (
              <input
                id={id}
                className="jp-mod-styled"
                type={type === 'string' ? 'text' : 'number'}
                step={type === 'integer' ? 1 : 'any'}
                value={texts[name]}
                required={spec.default === undefined}
                onChange={e => setTexts({ ...texts, [name]: e.target.value })}
              />
            )}
            {spec.description && <div className="clarion-Muted">{spec.description}</div>}
          </div>
        );
      })}
      {error && <ErrorMessage message={error} />}
      <button type="submit" className="jp-mod-styled jp-mod-accept clarion-Button" disabled={busy}>
        Start run
      </button>
    </form>
  );
}
