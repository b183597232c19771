import { EventType, RunStatus, StepStatus } from '../protocol';
import { emptyExtras, reduceRun } from '../fold';
import { settledSteps } from '../settled';
import { event, runDoc } from './builders';

const UNTIL_NAP_STARTED = [
  event('r1', 1, EventType.run_started),
  event('r1', 2, EventType.step_started, 'first'),
  event('r1', 3, EventType.step_completed, 'first', { output: { value: 1 } }),
  event('r1', 4, EventType.step_started, 'nap')
];

function folded(events: ReturnType<typeof event>[]) {
  let run = runDoc('r1');
  const extras = emptyExtras();
  for (const e of events) {
    run = reduceRun(run, e, extras);
  }
  return run;
}

/** A run as the events leave it when a cancel stopped `nap` and no step event said so. */
function cancelledMidStep() {
  return folded([...UNTIL_NAP_STARTED, event('r1', 5, EventType.workflow_cancelled)]);
}

describe('settledSteps', () => {
  it('shows the step a cancel stopped as cancelled, not running', () => {
    const steps = settledSteps(cancelledMidStep());
    expect(steps.map(s => [s.key, s.status])).toEqual([
      ['first', StepStatus.succeeded],
      ['nap', StepStatus.cancelled]
    ]);
  });

  it('leaves the steps of a run still going as the events tell them', () => {
    const run = folded(UNTIL_NAP_STARTED);
    expect(run.status).toBe(RunStatus.running);
    expect(settledSteps(run).find(s => s.key === 'nap')?.status).toBe(StepStatus.running);
  });

  it('shows a step still waiting for approval in a failed run as cancelled', () => {
    const run = runDoc('r2', {
      status: RunStatus.failed,
      steps: [{ ...cancelledMidStep().steps[1], key: 'apply', step_id: 'apply', status: StepStatus.waiting }]
    });
    expect(settledSteps(run)[0].status).toBe(StepStatus.cancelled);
  });
});
