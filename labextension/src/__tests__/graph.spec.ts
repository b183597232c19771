import { graphEdges, layoutGraph, laneStatus, templateSteps } from '../graph';
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

/** The architecture's example workflow (ARCHITECTURE.md, "Workflow document"). */
const TRIAGE: WorkflowDocument = {
  id: 'triage',
  name: 'Triage a bug report',
  steps: [
    { id: 'read', task: 'file_read', with: { path: '{{ inputs.report }}' } },
    {
      parallel: [
        { id: 'classify', task: 'llm_call', with: { agent: 'triager', prompt: 'Classify: {{ steps.read.output.content }}' } },
        { id: 'size', task: 'shell', with: { command: 'wc -c {{ inputs.report }}' } }
      ]
    },
    { id: 'fix', task: 'shell', if: "{{ steps.classify.output.text == 'bug' }}", with: { command: 'make test' } },
    { id: 'per_file', task: 'file_read', needs: ['read'], for_each: '{{ inputs.files }}', with: { path: '{{ item }}' } }
  ]
};

const pairs = (workflow: WorkflowDocument): string[] =>
  graphEdges(workflow).map(e => `${e.from}>${e.to}:${e.kind}`);

describe('graphEdges', () => {
  it('joins each step to the list entry before it', () => {
    expect(pairs({ id: 'w', name: 'W', steps: [{ id: 'a', task: 'echo' }, { id: 'b', task: 'echo' }, { id: 'c', task: 'echo' }] })).toEqual([
      'a>b:order',
      'b>c:order'
    ]);
  });

  it('fans out into a parallel group’s members and back in after it', () => {
    expect(pairs(WORKFLOW)).toEqual(['write>read:order', 'write>count:order', 'read>each:order', 'count>each:order']);
  });

  it('follows needs instead of list order, and adds the steps a template reads', () => {
    // The engine's waits_for: classify reads read (already its predecessor), fix reads classify
    // (already its predecessor via the group), per_file needs only read.
    expect(pairs(TRIAGE)).toEqual([
      'read>classify:order',
      'read>size:order',
      'classify>fix:order',
      'size>fix:order',
      'read>per_file:needs'
    ]);
  });

  it('draws a read of an earlier step’s output that list order alone would not', () => {
    const workflow: WorkflowDocument = {
      id: 'w',
      name: 'W',
      steps: [
        { id: 'a', task: 'echo' },
        { id: 'b', task: 'echo' },
        { id: 'c', task: 'echo', needs: [], with: { value: ["{{ steps['a'].output.value }}", { nested: '{% if steps.b.status %}x{% endif %}' }] } },
        { id: 'd', task: 'echo', approval: { if: '{{ steps.a.output }}' }, with: { value: 'steps.c outside a template' } }
      ]
    };
    expect(pairs(workflow)).toEqual(['a>b:order', 'a>c:reads', 'b>c:reads', 'c>d:order', 'a>d:reads']);
  });

  it('gives a for_each step the edges of a plain step, and ignores unknown ids and itself', () => {
    const workflow: WorkflowDocument = {
      id: 'w',
      name: 'W',
      steps: [
        { id: 'list', task: 'echo' },
        { id: 'each', task: 'echo', for_each: '{{ steps.list.output.value }}', needs: ['list', 'ghost', 'each'] },
        { id: 'after', task: 'echo' }
      ]
    };
    expect(pairs(workflow)).toEqual(['list>each:needs', 'each>after:order']);
  });

  it('has no edges without a workflow document', () => {
    expect(graphEdges(null)).toEqual([]);
  });
});

describe('templateSteps', () => {
  it('finds steps.<id> and steps["<id>"] only inside templates, not other names ending in steps', () => {
    expect([...templateSteps('{{ steps.a.output }} steps.b {{ inputs.steps }} {{ steps[ "c" ].status }}')]).toEqual(['a', 'c']);
  });
});
