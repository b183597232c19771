/**
 * Run detail: the step graph coloured live, each step's attempts, timing, output, error and
 * streamed LLM text, the review of waiting steps (the diff, Approve / Reject), and the run's
 * actions (cancel, re-run, re-run with changes or from a step, delete, copy id, open in a
 * notebook); a re-run names its parent and its changes, and marks the steps it reused.
 * Everything the server sent is text in the DOM, except the agent's reply: untrusted
 * Markdown, through Lab's sanitizer.
 */
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AgentTask } from './agenttask';
import { ApiError, ClarionApi } from './api';
import { BudgetFact } from './budget';
import { ErrorMessage, Json, StatusBadge, formatCost, formatDuration, formatTime, runDuration, useNow } from './common';
import { DiffView } from './diff';
import { graphEdges, layoutGraph } from './graph';
import { StepGraph, reusedTitle } from './graphview';
import { RunLineage, RunLink } from './lineage';
import { UntrustedMarkdown } from './markdown';
import { Agent, Approval, StepRun, WorkflowRun } from './protocol';
import { isTerminal } from './fold';
import { RunModel } from './liverun';
import { AGENT_RUN_WORKFLOW, V2_RUN_WORKFLOW, runTitle } from './runtitle';
import { settledStatus, settledSteps } from './settled';

export interface IRunActions {
  openRun(runId: string): void;
  openInNotebook(runId: string): void;
  copy(text: string): void;
  rerun(run: WorkflowRun): Promise<unknown>;
  /** A re-run from `stepId`: that step and every step reading it run again, the others are reused. */
  rerunFrom(run: WorkflowRun, stepId: string): Promise<unknown>;
  /** Asks for changed inputs and models in a Lab dialog first. */
  rerunWith(run: WorkflowRun): Promise<unknown>;
  /** Asks for a confirmation first; resolves once the run is deleted (false: it was not). */
  deleteRun(run: WorkflowRun): Promise<boolean>;
}

/** What the detail view reads beside its run: the agents (for names) and Lab's renderers. */
export interface IRunServices {
  rendermime: IRenderMimeRegistry | null;
  agents(): Agent[] | null;
}

interface IRunDetailProps {
  model: RunModel;
  actions: IRunActions;
  services: IRunServices;
}

export function RunDetail(props: IRunDetailProps): JSX.Element {
  return (
    <UseSignal signal={props.model.changed}>{() => <RunDetailBody {...props} run={props.model.run} />}</UseSignal>
  );
}

function RunDetailBody({ model, run, actions, services }: IRunDetailProps & { run: WorkflowRun | null }): JSX.Element {
  const [selected, setSelected] = React.useState<string | null>(null);
  const [actionError, setActionError] = React.useState<string | null>(null);
  const now = useNow(run !== null && !isTerminal(run));
  // The graph is the workflow as this run ran it (the run document's snapshot), whatever was saved since.
  const workflow = run?.workflow ?? null;
  const edges = React.useMemo(() => graphEdges(workflow), [workflow]);

  if (model.error) {
    return <ErrorMessage message={model.error} onRetry={() => void model.start()} />;
  }
  if (!run) {
    return <div className="clarion-Empty">Loading run {model.runId}…</div>;
  }
  const act = (promise: Promise<unknown>): void => {
    setActionError(null);
    promise.catch((error: Error) => setActionError(error.message));
  };
  const steps = settledSteps(run);
  const stages = layoutGraph(workflow, steps);
  const chosen = selected ?? run.approvals?.[0]?.step_key ?? null;
  const step = steps.find(s => s.key === chosen) ?? null;
  return (
    <div className="clarion-RunDetail" data-run-id={run.run_id} data-status={run.status}>
      <div className="clarion-RunHeader">
        <h2 className="clarion-RunTitle">{runTitle(run, services.agents())}</h2>
        <StatusBadge status={run.status} />
        {model.connection === 'reconnecting' && <span className="clarion-Muted">reconnecting…</span>}
      </div>
      <div className="clarion-Toolbar" role="toolbar" aria-label="Run actions">
        <button
          className="jp-mod-styled clarion-Button"
          title="Copy the run id"
          onClick={() => actions.copy(run.run_id)}
        >
          <code>{run.run_id}</code> Copy id
        </button>
        {!isTerminal(run) && (
          <button
            className="jp-mod-styled jp-mod-warn clarion-Button"
            onClick={() => act(model.api.cancel(run.run_id))}
          >
            Cancel
          </button>
        )}
        <button
          className="jp-mod-styled clarion-Button"
          title="Run the same workflow again with the same inputs"
          onClick={() => act(actions.rerun(run))}
        >
          Re-run
        </button>
        {isTerminal(run) && (
          <button
            className="jp-mod-styled clarion-Button"
            title="Re-run with other inputs or models: the steps no change reaches are reused"
            onClick={() => act(actions.rerunWith(run))}
          >
            Re-run with…
          </button>
        )}
        <button
          className="jp-mod-styled clarion-Button"
          title="A new notebook with %clarion show"
          onClick={() => actions.openInNotebook(run.run_id)}
        >
          Open in a notebook
        </button>
        {isTerminal(run) && (
          <button
            className="jp-mod-styled jp-mod-reject clarion-Button"
            title="Delete this run with its steps and events"
            onClick={() => act(actions.deleteRun(run))}
          >
            Delete
          </button>
        )}
      </div>
      {actionError && <ErrorMessage message={actionError} />}
      <dl className="clarion-Facts">
        <dt>Started</dt>
        <dd>{formatTime(run.started_at ?? run.created_at)}</dd>
        <dt>Duration</dt>
        <dd data-duration>{formatDuration(runDuration(run.started_at, run.finished_at, now))}</dd>
        {run.usage.prompt_tokens + run.usage.completion_tokens > 0 && (
          <>
            <dt>Tokens</dt>
            <dd>
              {run.usage.prompt_tokens} in · {run.usage.completion_tokens} out {formatCost(run.usage.cost_usd)}
            </dd>
          </>
        )}
        <BudgetFact budget={run.budget} />
      </dl>
      <AgentTask run={run} agents={services.agents()} />
      <RunLineage run={run} onOpen={actions.openRun} />
      {Object.keys(run.inputs).length > 0 && (
        <details className="clarion-Section">
          <summary>Inputs</summary>
          <Json value={run.inputs} />
        </details>
      )}
      {run.error && (
        <div className="clarion-RunError" role="alert">
          <strong>{run.error.code}</strong>: {run.error.message}
        </div>
      )}
      <AgentReply run={run} rendermime={services.rendermime} />
      {(run.approvals ?? []).map(approval => (
        <ApprovalCard key={approval.step_key} run={run} approval={approval} api={model.api} onError={setActionError} />
      ))}
      <StepGraph stages={stages} edges={edges} selected={chosen} onSelect={setSelected} />
      {step && (
        <StepPanel
          step={step}
          model={model}
          onOpen={actions.openRun}
          onRerunFrom={isTerminal(run) ? () => act(actions.rerunFrom(run, step.step_id)) : null}
        />
      )}
      {run.outputs && Object.keys(run.outputs).length > 0 && (
        <details className="clarion-Section" open>
          <summary>Outputs</summary>
          <Json value={run.outputs} />
        </details>
      )}
    </div>
  );
}

/** An agent run's reply, as v2 showed it: its summary (or its text) above the diff. */
function AgentReply({ run, rendermime }: { run: WorkflowRun; rendermime: IRenderMimeRegistry | null }): JSX.Element | null {
  const reply = run.steps.find(s => s.key === 'reply' && s.output);
  if (run.workflow_id !== AGENT_RUN_WORKFLOW && run.workflow_id !== V2_RUN_WORKFLOW) {
    return null;
  }
  // v2 kept the summary beside the raw reply: an imported run has it in its outputs.
  const summary = reply?.output.json?.summary ?? reply?.output.text ?? run.outputs?.summary;
  if (summary === undefined || summary === null || summary === '') {
    return null;
  }
  return (
    <section className="clarion-Reply" aria-label="The agent's reply">
      <div className="clarion-Label">Reply{reply?.output.model ? ` · ${reply.output.model}` : ''}</div>
      <UntrustedMarkdown text={typeof summary === 'string' ? summary : JSON.stringify(summary)} rendermime={rendermime} />
    </section>
  );
}

/** Whether the LLM cache answered the step (its output says `cached: true`): no model was called. */
function answeredFromCache(step: StepRun): boolean {
  const output = step.output;
  return typeof output === 'object' && output !== null && !Array.isArray(output) && output.cached === true;
}

function StepPanel({
  step,
  model,
  onOpen,
  onRerunFrom
}: {
  step: StepRun;
  model: RunModel;
  onOpen: (runId: string) => void;
  /** Null while the run goes on (a run is re-run once it has finished). */
  onRerunFrom: (() => void) | null;
}): JSX.Element {
  const attempts = model.extras.attempts[step.key] ?? [];
  const text = model.extras.text[step.key];
  const decision = model.extras.decisions[step.key];
  return (
    <section className="clarion-StepPanel" aria-label={`Step ${step.key}`} data-step-panel={step.key}>
      <h3>
        {step.key} <StatusBadge status={step.status} />
        {answeredFromCache(step) && (
          <span className="clarion-Cached" title="Answered from the LLM cache: no model call, no cost (the tokens are the first call's)">
            cached
          </span>
        )}
        {onRerunFrom && (
          <button
            className="jp-mod-styled clarion-Small"
            title={`A new run: ${step.step_id} and every step that reads it run again, the others are reused`}
            onClick={onRerunFrom}
          >
            Re-run from here
          </button>
        )}
      </h3>
      <dl className="clarion-Facts">
        {step.reused_from && (
          <>
            <dt>Reused from</dt>
            <dd title={reusedTitle(step.reused_from)}>
              <RunLink runId={step.reused_from.run_id} onOpen={onOpen} /> attempt {step.reused_from.attempt}
            </dd>
          </>
        )}
        {step.started_at && (
          <>
            <dt>Started</dt>
            <dd>{formatTime(step.started_at)}</dd>
          </>
        )}
        {step.duration_ms !== null && (
          <>
            <dt>Duration</dt>
            <dd>{formatDuration(step.duration_ms)}</dd>
          </>
        )}
        {step.attempt > 0 && (
          <>
            <dt>Attempt</dt>
            <dd>{step.attempt}</dd>
          </>
        )}
        {step.usage && (
          <>
            <dt>Tokens</dt>
            <dd>
              {step.usage.prompt_tokens} in · {step.usage.completion_tokens} out {formatCost(step.usage.cost_usd)}
            </dd>
          </>
        )}
      </dl>
      {decision && (
        <p className="clarion-Muted">
          {decision.decision}
          {decision.by ? ` by ${decision.by}` : ''}
          {decision.comment ? `: ${decision.comment}` : ''}
        </p>
      )}
      {attempts.length > 1 && (
        <table className="clarion-Attempts">
          <thead>
            <tr>
              <th>Attempt</th>
              <th>Status</th>
              <th>Duration</th>
              <th>Error</th>
            </tr>
          </thead>
          <tbody>
            {attempts.map(a => (
              <tr key={a.attempt}>
                <td>{a.attempt}</td>
                <td>
                  <StatusBadge status={model.run ? settledStatus(model.run, a.status) : a.status} />
                </td>
                <td>{formatDuration(a.duration_ms)}</td>
                <td>{a.error?.message ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {step.error && (
        <div className="clarion-RunError" role="alert">
          <strong>{step.error.code}</strong>: {step.error.message}
          {Object.keys(step.error).some(k => k !== 'code' && k !== 'message') && (
            <Json value={Object.fromEntries(Object.entries(step.error).filter(([k]) => k !== 'code' && k !== 'message'))} />
          )}
        </div>
      )}
      {text !== undefined && (
        <div className="clarion-Section">
          <div className="clarion-Label">Streamed text</div>
          <pre className="clarion-Stream" aria-live="polite">
            {text}
          </pre>
        </div>
      )}
      {step.output !== null && step.output !== undefined && (
        <div className="clarion-Section">
          <div className="clarion-Label">Output</div>
          <Json value={step.output} />
        </div>
      )}
    </section>
  );
}

function ApprovalCard({
  run,
  approval,
  api,
  onError
}: {
  run: WorkflowRun;
  approval: Approval;
  api: ClarionApi;
  onError: (message: string | null) => void;
}): JSX.Element {
  const [comment, setComment] = React.useState('');
  const [busy, setBusy] = React.useState(false);
  const applies = approval.step_key === 'apply';
  const decide = (decision: 'approve' | 'reject'): void => {
    setBusy(true);
    onError(null);
    api
      .decide(run.run_id, approval.step_key, decision, comment)
      .catch((error: ApiError) => onError(error.message))
      .finally(() => setBusy(false));
  };
  return (
    <section className="clarion-Approval" aria-label={`Review of ${approval.step_key}`} data-approval={approval.step_key}>
      <h3>
        {applies ? 'Review the changes' : `Step ${approval.step_key} waits for your decision`}
      </h3>
      {approval.message && <p>{approval.message}</p>}
      <DiffView preview={approval.preview} />
      <div className="clarion-Toolbar">
        <input
          className="jp-mod-styled clarion-Comment"
          placeholder="Comment (optional)"
          aria-label="Comment"
          value={comment}
          onChange={e => setComment(e.target.value)}
        />
        <button className="jp-mod-styled jp-mod-accept clarion-Button" disabled={busy} onClick={() => decide('approve')}>
          {applies ? 'Apply' : 'Approve'}
        </button>
        <button className="jp-mod-styled jp-mod-reject clarion-Button" disabled={busy} onClick={() => decide('reject')}>
          {applies ? 'Discard' : 'Reject'}
        </button>
      </div>
    </section>
  );
}
