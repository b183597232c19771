/**
 * The Compare tab: per run its inputs, changes and totals; per step key each run's status,
 * duration, attempts, tokens, cost and output. The steps that differ come first, marked, each
 * later run's output diffed against the first run's (words for text, paths for JSON); the
 * equal steps are collapsed below.
 */
import { UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ErrorMessage, Json, StatusBadge, formatCost, formatDuration } from './common';
import { CompareCell, CompareModel, CompareRow } from './compare';
import { reusedTitle } from './graphview';
import { RunLink } from './lineage';
import { JsonChange, OutputDiff, WordSpan, dottedPath, textOf } from './outputdiff';
import { ComparedRun, JSONValue } from './protocol';
import { changeLines } from './rerun';

export function CompareView({ model, onOpen }: { model: CompareModel; onOpen: (runId: string) => void }): JSX.Element {
  return <UseSignal signal={model.changed}>{() => <CompareBody model={model} onOpen={onOpen} />}</UseSignal>;
}

function CompareBody({ model, onOpen }: { model: CompareModel; onOpen: (runId: string) => void }): JSX.Element {
  if (model.error) {
    return <ErrorMessage message={model.error} onRetry={() => void model.load()} />;
  }
  const table = model.table;
  if (!table) {
    return <div className="clarion-Empty">Comparing {model.runIds.length} runs…</div>;
  }
  const { runs, differing, equal } = table;
  return (
    <div className="clarion-Compare" data-runs={model.runIds.join(',')}>
      <div className="clarion-RunHeader">
        <h2 className="clarion-RunTitle">
          Compare {runs.length} runs{new Set(runs.map(r => r.workflow_id)).size === 1 ? ` of ${runs[0].workflow_id}` : ''}
        </h2>
        <button className="jp-mod-styled clarion-Small" title="Compare them again (a run may have gone on)" onClick={() => void model.load()}>
          Refresh
        </button>
      </div>
      <RunsTable runs={runs} onOpen={onOpen} />
      <h3 className="clarion-CompareHeading">
        {differing.length ? `${differing.length} step${differing.length === 1 ? '' : 's'} differ` : 'No step differs'}
      </h3>
      {differing.length > 0 ? (
        <StepsTable runs={runs} rows={differing} label="Steps that differ" />
      ) : (
        <div className="clarion-Muted">Every step has the same status and output in each run.</div>
      )}
      {equal.length > 0 && (
        <details className="clarion-Section clarion-EqualSteps">
          <summary>
            {equal.length} equal step{equal.length === 1 ? '' : 's'}
          </summary>
          <StepsTable runs={runs} rows={equal} label="Equal steps" />
        </details>
      )}
    </div>
  );
}

function RunsTable({ runs, onOpen }: { runs: ComparedRun[]; onOpen: (runId: string) => void }): JSX.Element {
  const row = (label: string, cell: (run: ComparedRun) => React.ReactNode): JSX.Element => (
    <tr>
      <th scope="row">{label}</th>
      {runs.map(run => (
        <td key={run.run_id}>{cell(run)}</td>
      ))}
    </tr>
  );
  return (
    <table className="clarion-CompareTable clarion-CompareRuns" aria-label="Runs">
      <thead>
        <tr>
          <th />
          {runs.map((run, index) => (
            <th key={run.run_id} scope="col" data-run-id={run.run_id}>
              <RunLink runId={run.run_id} onOpen={onOpen} /> <StatusBadge status={run.status} />
              {index === 0 && runs.length > 1 && <span className="clarion-Muted"> base</span>}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {row('Inputs', run => (Object.keys(run.inputs).length ? <Json value={run.inputs} /> : <span className="clarion-Muted">none</span>))}
        {row('Changes', run => <Changes run={run} onOpen={onOpen} />)}
        {row('Duration', run => formatDuration(run.totals.duration_ms))}
        {row('Steps', run => String(run.totals.steps))}
        {row('Tokens', run => (run.totals.tokens ? String(run.totals.tokens) : '—'))}
        {row('Cost', run => formatCost(run.totals.cost_usd) || '—')}
      </tbody>
    </table>
  );
}

function Changes({ run, onOpen }: { run: ComparedRun; onOpen: (runId: string) => void }): JSX.Element {
  if (!run.parent_run_id) {
    return <span className="clarion-Muted">not a re-run</span>;
  }
  return (
    <div>
      re-run of <RunLink runId={run.parent_run_id} onOpen={onOpen} />
      <ul className="clarion-Changes">
        {changeLines(run.changes).map(line => (
          <li key={line}>{line}</li>
        ))}
      </ul>
    </div>
  );
}

function StepsTable({ runs, rows, label }: { runs: ComparedRun[]; rows: CompareRow[]; label: string }): JSX.Element {
  return (
    <table className="clarion-CompareTable clarion-CompareSteps" aria-label={label}>
      <thead>
        <tr>
          <th scope="col">Step</th>
          {runs.map(run => (
            <th key={run.run_id} scope="col">
              <code>{run.run_id.slice(-8)}</code>
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map(row => (
          <tr key={row.key} data-step-key={row.key} data-differs={row.differs} className={row.differs ? 'clarion-mod-differs' : ''}>
            <th scope="row">
              {row.key}
              {row.differs && <span className="clarion-DiffersBadge">differs</span>}
            </th>
            {row.cells.map((cell, index) => (
              <StepCell key={runs[index].run_id} cell={cell} />
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function StepCell({ cell }: { cell: CompareCell }): JSX.Element {
  if (cell.missing) {
    return (
      <td className="clarion-Muted" data-missing="true">
        no such step
      </td>
    );
  }
  const meta = [
    formatDuration(cell.duration_ms),
    cell.attempts && cell.attempts > 1 ? `${cell.attempts} attempts` : '',
    cell.tokens ? `${cell.tokens} tokens` : '',
    formatCost(cell.cost_usd)
  ].filter(Boolean);
  return (
    <td data-status={cell.status}>
      <div className="clarion-CellMeta">
        <span className={cell.statusDiffers ? 'clarion-mod-differs' : ''}>
          <StatusBadge status={String(cell.status)} />
        </span>
        {meta.length > 0 && <span className="clarion-Muted"> {meta.join(' · ')}</span>}
        {cell.reused_from && (
          <span className="clarion-ReusedBadge" title={reusedTitle(cell.reused_from)}>
            reused
          </span>
        )}
      </div>
      {cell.diff ? <DiffOutput diff={cell.diff} /> : <PlainOutput value={cell.output} />}
    </td>
  );
}

function PlainOutput({ value }: { value: JSONValue }): JSX.Element | null {
  if (value === null || value === undefined) {
    return null;
  }
  const text = textOf(value);
  return text !== null ? <pre className="clarion-CellOutput">{text}</pre> : <Json value={value} />;
}

/** A later run's output against the base's: the words removed and added, then the other paths that changed. */
function DiffOutput({ diff }: { diff: OutputDiff }): JSX.Element {
  if (diff.same) {
    return <div className="clarion-Muted">same output as the base</div>;
  }
  return (
    <div className="clarion-OutputDiff">
      {diff.words && (
        <pre className="clarion-CellOutput clarion-WordDiff" aria-label="Text diff">
          <Words spans={diff.words} />
        </pre>
      )}
      {diff.changes.length > 0 && (
        <ul className="clarion-JsonDiff" aria-label="JSON diff">
          {diff.changes.map(change => (
            <JsonChangeItem key={`${change.kind}:${dottedPath(change.path)}`} change={change} />
          ))}
        </ul>
      )}
    </div>
  );
}

function Words({ spans }: { spans: WordSpan[] }): JSX.Element {
  return (
    <>
      {spans.map((span, index) => (
        <React.Fragment key={index}>
          {index > 0 && ' '}
          {span.op === 'insert' ? <ins>{span.text}</ins> : span.op === 'delete' ? <del>{span.text}</del> : span.text}
        </React.Fragment>
      ))}
    </>
  );
}

/** One path that differs: a changed text by its words, any other value as JSON, before → after. */
function JsonChangeItem({ change }: { change: JsonChange }): JSX.Element {
  const value = (v: JSONValue): string => JSON.stringify(v) ?? 'null';
  return (
    <li data-kind={change.kind}>
      <code>{dottedPath(change.path) || '(the value)'}</code> <span className="clarion-Muted">{change.kind}</span>{' '}
      {change.words ? (
        <span className="clarion-WordDiff">
          <Words spans={change.words} />
        </span>
      ) : (
        <>
          {change.kind !== 'added' && <del>{value(change.before)}</del>}
          {change.kind === 'changed' && ' → '}
          {change.kind !== 'removed' && <ins>{value(change.after)}</ins>}
        </>
      )}
    </li>
  );
}
