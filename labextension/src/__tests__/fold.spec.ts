/**
 * The sidebar's reducer against the golden files that the Python fold
 * (`clarion_jupyter/workflow/fold.py`, `tests/test_fold.py`) is tested against too: one
 * event stream gives one run state in the notebook, the CLI and the sidebar.
 */
/// <reference types="node" />
import * as fs from 'fs';
import * as path from 'path';

import { ClarionEvent, WorkflowRun } from '../protocol';
import { emptyExtras, reduceRun } from '../fold';

const FOLDS = path.resolve(__dirname, '../../../tests/fixtures/folds');

interface Case {
  description: string;
  initial: WorkflowRun;
  events: ClarionEvent[];
  after: { seq: number; status: string; steps: Record<string, string>; approvals: string[]; budget?: object | null }[];
  expected: { run: WorkflowRun; text: object; decisions: object; reasons: object; items: object };
}

const cases: [string, Case][] = fs
  .readdirSync(FOLDS)
  .filter((name: string) => name.endsWith('.json'))
  .sort()
  .map((name: string) => [name.replace(/\.json$/, ''), JSON.parse(fs.readFileSync(path.join(FOLDS, name), 'utf8'))]);

describe('reduceRun on the golden event streams', () => {
  it('finds the golden files', () => {
    expect(cases.map(([name]) => name)).toEqual(
      expect.arrayContaining(['sequential', 'parallel', 'for_each', 'skips', 'retries', 'continue_on_error',
        'approval_granted', 'approval_rejected', 'cancel_mid_step', 'resumed', 'llm_tokens', 'budget'])
    );
  });

  it.each(cases)('%s: the state after each event and at the end', (_name, golden) => {
    const extras = emptyExtras();
    let run = golden.initial;
    golden.events.forEach((event, index) => {
      run = reduceRun(run, event, extras);
      const after = golden.after[index];
      const seen = {
        status: run.status,
        steps: Object.fromEntries(run.steps.map(s => [s.key, s.status])),
        approvals: (run.approvals ?? []).map(a => a.step_key)
      };
      expect([event.seq, seen]).toEqual([event.seq, { status: after.status, steps: after.steps, approvals: after.approvals }]);
      if ('budget' in after) {
        // A run with a budget: what it spent and holds, event by event.
        expect([event.seq, run.budget ?? null]).toEqual([event.seq, after.budget]);
      }
    });
    const { attempts: _attempts, ...rest } = extras;
    expect({ run, ...rest }).toEqual(golden.expected);
  });
});
