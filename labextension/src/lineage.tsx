/**
 * Where a re-run comes from, in its run detail: the parent run (a link that opens it) and
 * what the re-run changed (where it started, inputs, overrides).
 */
import * as React from 'react';

import { WorkflowRun } from './protocol';
import { changeLines } from './rerun';

/** A link-styled button that opens a run's tab. */
export function RunLink({ runId, onOpen }: { runId: string; onOpen: (runId: string) => void }): JSX.Element {
  return (
    <button className="clarion-Link" data-open-run={runId} title={`Open run ${runId}`} onClick={() => onOpen(runId)}>
      <code>{runId}</code>
    </button>
  );
}

export function RunLineage({ run, onOpen }: { run: WorkflowRun; onOpen: (runId: string) => void }): JSX.Element | null {
  if (!run.parent_run_id) {
    return null;
  }
  const lines = changeLines(run.changes);
  return (
    <section className="clarion-Lineage" aria-label="Re-run of" data-parent-run={run.parent_run_id}>
      <div>
        <span className="clarion-Label">Re-run of</span> <RunLink runId={run.parent_run_id} onOpen={onOpen} />
      </div>
      {lines.length > 0 ? (
        <ul className="clarion-Changes" aria-label="Changes">
          {lines.map(line => (
            <li key={line}>{line}</li>
          ))}
        </ul>
      ) : (
        <div className="clarion-Muted">No changes: only the steps that had not succeeded in the parent, and those that read them, ran again.</div>
      )}
    </section>
  );
}
