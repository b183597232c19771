import { layoutGraph, laneStatus } from '../graph';
import { StepRun, StepStatus, WorkflowDocument } from '../protocol';

const step = (key: string, status: string, item_index: number | null = null): StepRun => ({
  key,
  step_id: key.replace(/\[\d+\]$/, ''),
  item_index,
  attempt: 1,
  status,
  started_at: null,
  finished_at: null,
  duration_ms: null,
  output: null,
  error: null,
  usage: null
});

const WORKFLOW: WorkflowDocument = {
  id: 'tour',
  name: 'Tour',
  steps: [
    { id: 'write', task: 'file_write' },
    { parallel: [{ id: 'read', task: 'file_read' }, { id: 'count', task: 'shell' }] },
    { id: 'each', task: 'echo', for_each: '{{ inputs.words }}' }
  ]
};

describe('layoutGraph', () => {
  it('lays a parallel group side by side and a for_each step’s items inside it', () => {
    const stages = layoutGraph(WORKFLOW, [
      step('write', StepStatus.succeeded),
      step('count', StepStatus.running),
      step('each[1]', StepStatus.succeeded, 1),
      step('each[0]', StepStatus.running, 0)
    ]);
    expect(stages.map(s => [s.parallel, s.lanes.map(l => l.id)])).toEqual([
      [false, ['write']],
      [true, ['read', 'count']],
      [false, ['each']]
    ]);
    expect(stages[1].lanes[0].step).toBeNull();
    expect(stages[2].lanes[0].mapped).toBe(true);
    expect(stages[2].lanes[0].items.map(i => i.key)).toEqual(['each[0]', 'each[1]']);
    expect(laneStatus(stages[2].lanes[0])).toBe(StepStatus.running);
  });

  it('without the workflow document, shows the steps in the order they started', () => {
    const stages = layoutGraph(null, [step('reply', StepStatus.succeeded), step('apply', StepStatus.waiting)]);
    expect(stages.map(s => s.lanes[0].id)).toEqual(['reply', 'apply']);
    expect(laneStatus(stages[1].lanes[0])).toBe(StepStatus.waiting);
  });
});
