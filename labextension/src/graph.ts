/**
 * The step graph's layout: stages top to bottom in the workflow's order, a parallel group's
 * members side by side in one stage, a `for_each` step's items inside its node.
 */
import { StepDoc, StepRun, StepStatus, WorkflowDocument } from './protocol';

export interface Lane {
  id: string;
  task: string | null;
  /** The step execution itself (for a `for_each` step, the parent that gathers its items). */
  step: StepRun | null;
  /** A `for_each` step's item executions, by item index. */
  items: StepRun[];
  mapped: boolean;
  approval: boolean;
  needs: string[];
}

export interface Stage {
  parallel: boolean;
  lanes: Lane[];
}

export function layoutGraph(workflow: WorkflowDocument | null, steps: readonly StepRun[]): Stage[] {
  const parents = new Map<string, StepRun>();
  const items = new Map<string, StepRun[]>();
  const order: string[] = [];
  for (const step of steps) {
    if (!order.includes(step.step_id)) {
      order.push(step.step_id);
    }
    if (step.item_index === null || step.item_index === undefined) {
      parents.set(step.step_id, step);
    } else {
      const list = items.get(step.step_id) ?? [];
      list.push(step);
      items.set(step.step_id, list);
    }
  }
  const lane = (id: string, doc?: StepDoc): Lane => {
    const children = (items.get(id) ?? []).slice().sort((a, b) => (a.item_index ?? 0) - (b.item_index ?? 0));
    return {
      id,
      task: doc?.task ?? null,
      step: parents.get(id) ?? null,
      items: children,
      mapped: Boolean(doc?.for_each) || children.length > 0,
      approval: Boolean(doc?.approval),
      needs: doc?.needs ?? []
    };
  };
  const stages: Stage[] = [];
  const placed = new Set<string>();
  for (const entry of workflow?.steps ?? []) {
    const members = 'parallel' in entry ? entry.parallel : [entry];
    stages.push({ parallel: 'parallel' in entry, lanes: members.map(doc => lane(doc.id, doc)) });
    members.forEach(doc => placed.add(doc.id));
  }
  for (const id of order) {
    if (!placed.has(id)) {
      stages.push({ parallel: false, lanes: [lane(id)] });
    }
  }
  return stages;
}

/** A lane's status: its own step's, or for a mapped step still gathering, the items' state. */
export function laneStatus(lane: Lane): string {
  if (lane.step) {
    return lane.step.status;
  }
  if (lane.items.length === 0) {
    return StepStatus.pending;
  }
  const statuses = new Set(lane.items.map(item => item.status));
  for (const status of [StepStatus.failed, StepStatus.waiting, StepStatus.running, StepStatus.retrying]) {
    if (statuses.has(status)) {
      return status;
    }
  }
  return statuses.size === 1 ? lane.items[0].status : StepStatus.running;
}
