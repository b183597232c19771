/**
 * The Agents view, Clarion v2's main screen inside Lab: the agents with their model and
 * provider, New agent and Edit as YAML (an editor tab, as for workflows), the import of v2
 * agent files (YAML, JSON or a whole `clarion.db`), and Run agent: a prompt, the files
 * selected in Lab's file browser, the agent's user variables; the run then opens, to its
 * diff and Apply / Discard.
 */
import * as React from 'react';

import { importedFromV2 } from './agentdoc';
import { ApiError, ClarionApi } from './api';
import { ErrorMessage } from './common';
import { ContextPreview } from './contextpreview';
import { NO_WRITE_PERMISSION } from './editor';
import { Agent, ApplyMode, ImportReport, PreparedPrompt } from './protocol';

export function provider(model: string): string {
  const slash = model.indexOf('/');
  return slash > 0 ? model.slice(0, slash) : 'openai';
}

export function AgentsView({
  api,
  agents,
  error,
  open,
  formKey,
  imports,
  canWrite,
  defaultApply,
  onToggle,
  onReload,
  onImported,
  onEdit,
  onNew,
  selectedFiles,
  onStarted
}: {
  api: ClarionApi;
  agents: Agent[] | null;
  error: string | null;
  /** The agent whose Run agent form is open. */
  open: string | null;
  /** Changes when a form is asked for again (it then starts afresh, with the files selected now). */
  formKey: number;
  /** Counts the requests to import: each opens the file chooser. */
  imports: number;
  /** False: the user may read agents, not create or import them (the buttons say why). */
  canWrite: boolean;
  /** What the form proposes for applying the file changes (the extension's setting). */
  defaultApply: ApplyMode;
  onToggle: (id: string) => void;
  onReload: () => void;
  /** An import ended: its agents, and the workflow of its runs, are read again. */
  onImported: () => void;
  /** Opens the agent in a YAML editor tab. */
  onEdit: (id: string) => void;
  /** Opens the editor on a new agent. */
  onNew: () => void;
  /** The paths selected in the file browser now. */
  selectedFiles: () => string[];
  onStarted: (runId: string) => void;
}): JSX.Element {
  return (
    <div className="clarion-AgentsView">
      <ImportBox api={api} imports={imports} canWrite={canWrite} onImported={onImported} onNew={onNew} />
      {error && <ErrorMessage message={error} onRetry={onReload} />}
      {agents === null && !error && <div className="clarion-Empty">Loading agents…</div>}
      {agents !== null && agents.length === 0 && (
        <div className="clarion-Empty">No agents yet: make one with New agent, or import your Clarion v2 agents above.</div>
      )}
      {agents !== null && agents.length > 0 && (
        <ul className="clarion-List" aria-label="Agents">
          {agents.map(a => (
            <li key={a.id} className="clarion-Item" data-agent={a.id}>
              <div className="clarion-ItemText">
                <span className="clarion-ItemName">{a.name}</span>
                <span className="clarion-Muted">
                  {a.model} · {provider(a.model)}
                  {importedFromV2(a) ? ' · from v2' : ''}
                </span>
              </div>
              <div className="clarion-ItemActions">
                <button
                  className="jp-mod-styled jp-mod-accept clarion-Small"
                  aria-expanded={open === a.id}
                  onClick={() => onToggle(a.id)}
                >
                  Run agent
                </button>
                <button className="jp-mod-styled clarion-Small" onClick={() => onEdit(a.id)}>
                  Edit as YAML
                </button>
              </div>
              {a.description && <div className="clarion-Muted">{a.description}</div>}
              {open === a.id && (
                <RunAgentForm
                  key={formKey}
                  api={api}
                  agent={a}
                  defaultApply={defaultApply}
                  selectedFiles={selectedFiles}
                  onStarted={onStarted}
                />
              )}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function ImportBox({
  api,
  imports,
  canWrite,
  onImported,
  onNew
}: {
  api: ClarionApi;
  imports: number;
  canWrite: boolean;
  onImported: () => void;
  onNew: () => void;
}): JSX.Element {
  const input = React.useRef<HTMLInputElement>(null);
  const asked = React.useRef(imports);
  React.useEffect(() => {
    if (imports !== asked.current) {
      asked.current = imports;
      input.current?.click();
    }
  }, [imports]);
  const [reports, setReports] = React.useState<{ name: string; report?: ImportReport; error?: string }[]>([]);
  const [busy, setBusy] = React.useState(false);
  const upload = async (files: FileList | null): Promise<void> => {
    if (!files || files.length === 0) {
      return;
    }
    setBusy(true);
    const results: typeof reports = [];
    for (const file of Array.from(files)) {
      try {
        results.push({ name: file.name, report: await api.importAgents(file, file.name) });
      } catch (error) {
        const e = error as ApiError;
        const problems = e.problems.map(p => `${p.loc}: ${p.message}`).join('; ');
        results.push({ name: file.name, error: problems || e.message });
      }
    }
    setReports(results);
    setBusy(false);
    if (input.current) {
      input.current.value = '';
    }
    onImported();
  };
  return (
    <div className="clarion-Import">
      <input
        ref={input}
        type="file"
        multiple
        accept=".yml,.yaml,.json,.db,.sqlite"
        aria-label="Clarion v2 agent files"
        className="clarion-Hidden"
        onChange={e => void upload(e.target.files)}
      />
      <button
        className="jp-mod-styled jp-mod-accept clarion-Button"
        disabled={!canWrite}
        title={canWrite ? undefined : NO_WRITE_PERMISSION}
        onClick={onNew}
      >
        New agent
      </button>
      <button
        className="jp-mod-styled clarion-Button"
        disabled={busy || !canWrite}
        title={canWrite ? undefined : NO_WRITE_PERMISSION}
        onClick={() => input.current?.click()}
      >
        Import v2 agents…
      </button>
      <span className="clarion-Muted">YAML, JSON or clarion.db</span>
      {reports.map(r => (
        <div key={r.name} className="clarion-ImportReport" role="status">
          <strong>{r.name}</strong>:{' '}
          {r.error ?? `${r.report!.agents.length} imported (${r.report!.agents.map(a => a.name).join(', ')})`}
          {r.report?.runs && r.report.runs.found > 0 && (
            <div>
              {r.report.runs.imported} of {r.report.runs.found} v2 runs imported
              {r.report.runs.already_imported ? ` (${r.report.runs.already_imported} already there)` : ''}
            </div>
          )}
          {r.report?.api_keys?.map(k => (
            <div key={k.env} className={k.set ? 'clarion-Muted' : 'clarion-Warning'}>
              {k.agents.join(', ')} read the API key from <code>${k.env}</code>
              {k.set ? ' (set)' : ': set it where the server runs; keys are not imported'}
            </div>
          ))}
          {r.report?.warnings.map((w, i) => (
            <div key={`w${i}`} className="clarion-Warning">
              {w.source}: {w.message}
            </div>
          ))}
          {r.report?.errors.map((w, i) => (
            <div key={`e${i}`} className="clarion-Error">
              {w.source}: {w.message}
            </div>
          ))}
        </div>
      ))}
    </div>
  );
}

function RunAgentForm({
  api,
  agent,
  defaultApply,
  selectedFiles,
  onStarted
}: {
  api: ClarionApi;
  agent: Agent;
  defaultApply: ApplyMode;
  selectedFiles: () => string[];
  onStarted: (runId: string) => void;
}): JSX.Element {
  const [prompt, setPrompt] = React.useState('');
  const [files, setFiles] = React.useState<string[]>(() => selectedFiles());
  const [variables, setVariables] = React.useState<Record<string, string>>(() =>
    Object.fromEntries(agent.user_variables.map(v => [v.name, v.default === undefined ? '' : String(v.default)]))
  );
  const [apply, setApply] = React.useState<ApplyMode>(defaultApply);
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  const [prepared, setPrepared] = React.useState<PreparedPrompt | null>(null);
  const failed = (e: ApiError): void =>
    setError(e.problems.length ? e.problems.map(p => `${p.loc}: ${p.message}`).join('\n') : e.message);
  /** What would be sent, counted by the server; a context over its cap is an error here, before any call. */
  const check = async (): Promise<PreparedPrompt | null> => {
    const answer = await api.promptAgent(agent.id, { prompt, variables, files });
    setPrepared(answer);
    if (answer.context?.problem) {
      setError(`nothing was sent: ${answer.context.problem}`);
      return null;
    }
    return answer;
  };
  const preview = (): void => {
    setBusy(true);
    setError(null);
    check()
      .catch(failed)
      .finally(() => setBusy(false));
  };
  const submit = (event: React.FormEvent): void => {
    event.preventDefault();
    const missing = agent.user_variables.filter(v => v.required && !variables[v.name]).map(v => v.name);
    if (missing.length) {
      setError(`fill in: ${missing.join(', ')}`);
      return;
    }
    setBusy(true);
    setError(null);
    check()
      .then(ok => (ok ? api.runAgent(agent.id, { prompt, variables, files, apply }) : null))
      .then(answer => answer && onStarted(answer.run_id))
      .catch(failed)
      .finally(() => setBusy(false));
  };
  const id = `clarion-agent-${agent.id}`;
  return (
    <form className="clarion-Form" onSubmit={submit} aria-label={`Run ${agent.name}`}>
      <div className="clarion-Field">
        <label htmlFor={`${id}-prompt`}>Prompt</label>
        <textarea
          id={`${id}-prompt`}
          className="jp-mod-styled"
          rows={4}
          required
          value={prompt}
          onChange={e => setPrompt(e.target.value)}
        />
      </div>
      <div className="clarion-Field">
        <div className="clarion-FieldHead">
          <span>Files</span>
          <button
            type="button"
            className="jp-mod-styled clarion-Small"
            title="Take the files selected in the file browser now"
            onClick={() => setFiles(selectedFiles())}
          >
            Use selection
          </button>
        </div>
        {files.length === 0 ? (
          <div className="clarion-Muted">None: select files in the file browser, then use the selection.</div>
        ) : (
          <ul className="clarion-Files" aria-label="Files to send">
            {files.map(f => (
              <li key={f}>
                <code>{f}</code>
                <button
                  type="button"
                  className="clarion-Link"
                  aria-label={`Remove ${f}`}
                  onClick={() => setFiles(files.filter(x => x !== f))}
                >
                  ×
                </button>
              </li>
            ))}
          </ul>
        )}
      </div>
      {agent.user_variables.map(v => (
        <div className="clarion-Field" key={v.name}>
          <label htmlFor={`${id}-var-${v.name}`}>
            {v.name} {v.required && <span className="clarion-Muted">required</span>}
          </label>
          <input
            id={`${id}-var-${v.name}`}
            className="jp-mod-styled"
            value={variables[v.name] ?? ''}
            onChange={e => setVariables({ ...variables, [v.name]: e.target.value })}
          />
          {v.description && <div className="clarion-Muted">{v.description}</div>}
        </div>
      ))}
      <div className="clarion-Field">
        <label htmlFor={`${id}-apply`}>Apply the file changes</label>
        <select
          id={`${id}-apply`}
          className="jp-mod-styled"
          value={apply}
          onChange={e => setApply(e.target.value as ApplyMode)}
        >
          <option value="review">after I review the diff</option>
          <option value="auto">at once</option>
          <option value="never">never (reply only)</option>
        </select>
      </div>
      {prepared && <ContextPreview prepared={prepared} />}
      {error && <ErrorMessage message={error} />}
      <div className="clarion-Actions">
        <button type="button" className="jp-mod-styled clarion-Button" disabled={busy || !prompt} onClick={preview}>
          Show what is sent
        </button>
        <button type="submit" className="jp-mod-styled jp-mod-accept clarion-Button" disabled={busy}>
          Run {agent.name}
        </button>
      </div>
    </form>
  );
}
