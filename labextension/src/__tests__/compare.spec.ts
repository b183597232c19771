import { ClarionApi } from '../api';
import { CompareModel, compareTable } from '../compare';
import { RunComparison, StepInRun } from '../protocol';
import { FakeServer } from './fake';

function cell(fields: Partial<StepInRun> = {}): StepInRun {
  return { status: 'succeeded', duration_ms: 5, attempts: 1, tokens: null, cost_usd: null, output: null, ...fields };
}

const MISSING: StepInRun = { status: null, duration_ms: null, attempts: null, tokens: null, cost_usd: null, output: null };

function comparison(): RunComparison {
  const run = (run_id: string, parent: string | null = null) => ({
    run_id,
    workflow_id: 'triage',
    status: 'succeeded',
    inputs: {},
    parent_run_id: parent,
    changes: parent ? { from_step: 'classify' } : null,
    totals: { duration_ms: 10, steps: 3, tokens: 0, cost_usd: null }
  });
  return {
    runs: [run('a'), run('b', 'a')],
    steps: [
      { key: 'read', differs: false, per_run: [cell({ output: { content: 'x' } }), cell({ output: { content: 'x' }, reused_from: { run_id: 'a', attempt: 1 } })] },
      { key: 'classify', differs: true, per_run: [cell({ output: { text: 'a bug' } }), cell({ output: { text: 'a feature' } })] },
      { key: 'notify', differs: false, per_run: [cell({ output: 'sent' }), cell({ output: 'sent' })] },
      { key: 'fix', differs: true, per_run: [cell({ status: 'failed' }), MISSING] }
    ]
  };
}

describe('compareTable', () => {
  it('puts the steps that differ first, in the server order, and the equal ones after', () => {
    const table = compareTable(comparison());
    expect(table.differing.map(r => r.key)).toEqual(['classify', 'fix']);
    expect(table.equal.map(r => r.key)).toEqual(['read', 'notify']);
  });

  it("diffs each later run's output against the first run's, only where the step differs", () => {
    const table = compareTable(comparison());
    const [classify] = table.differing;
    expect(classify.cells[0].diff).toBeNull();
    expect(classify.cells[1].diff?.words).toEqual([
      { op: 'equal', text: 'a' },
      { op: 'delete', text: 'bug' },
      { op: 'insert', text: 'feature' }
    ]);
    expect(table.equal.every(row => row.cells.every(c => c.diff === null))).toBe(true);
  });

  it('marks a run without the step, and a status that is not the base run’s', () => {
    const fix = compareTable(comparison()).differing[1];
    expect(fix.cells.map(c => c.missing)).toEqual([false, true]);
    expect(fix.cells.map(c => c.statusDiffers)).toEqual([false, true]);
  });

  it('keeps what a reused step was copied from', () => {
    const read = compareTable(comparison()).equal[0];
    expect(read.cells[1].reused_from).toEqual({ run_id: 'a', attempt: 1 });
  });
});

describe('CompareModel', () => {
  it('asks GET /api/v3/runs/compare for its runs, in their order', async () => {
    const server = new FakeServer().on('GET', /\/api\/v3\/runs\/compare$/, () => ({ json: comparison() }));
    const model = new CompareModel(new ClarionApi(server.settings()), ['a', 'b']);
    let changed = 0;
    model.changed.connect(() => changed++);
    await model.load();
    expect(new URL(server.requests[0].url).searchParams.get('ids')).toBe('a,b');
    expect(model.table?.differing.map(r => r.key)).toEqual(['classify', 'fix']);
    expect(model.error).toBeNull();
    expect(changed).toBe(1);
  });

  it("keeps the API's message when the comparison is refused", async () => {
    const server = new FakeServer().on('GET', /\/runs\/compare$/, () => ({
      status: 404,
      json: { error: { code: 'not_found', message: "run 'gone' not found" } }
    }));
    const model = new CompareModel(new ClarionApi(server.settings()), ['a', 'gone']);
    await model.load();
    expect(model.table).toBeNull();
    expect(model.error).toBe("run 'gone' not found");
  });
});
