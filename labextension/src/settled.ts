/**
 * What a step of a finished run is shown as. The engine may end a run (a cancel, a failure
 * elsewhere) without a step event for each step it stopped, so the events leave those steps
 * `running`, `retrying` or `waiting`: in a run that has ended nothing is live any more, and
 * those steps show `cancelled`, in every view and after a reload alike.
 */
import { StepRun, StepStatus, TERMINAL_RUN, WorkflowRun } from './protocol';

const LIVE: ReadonlySet<string> = new Set([StepStatus.running, StepStatus.retrying, StepStatus.waiting]);

export function settledStatus(run: Pick<WorkflowRun, 'status'>, status: string): string {
  return TERMINAL_RUN.has(run.status) && LIVE.has(status) ? StepStatus.cancelled : status;
}

/** The run's steps as they are shown: the live ones of a finished run as `cancelled`. */
export function settledSteps(run: WorkflowRun): StepRun[] {
  if (!TERMINAL_RUN.has(run.status)) {
    return run.steps;
  }
  return run.steps.map(step => {
    const status = settledStatus(run, step.status);
    return status === step.status ? step : { ...step, status };
  });
}
