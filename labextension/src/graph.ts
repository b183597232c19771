/**
 * The step graph's layout: stages top to bottom in the workflow's order, a parallel group's
 * members side by side in one stage, a `for_each` step's items inside its node; and its
 * edges, the dependencies the engine orders steps by (`clarion_jupyter/workflow/compiler.py`).
 */
import { JSONValue, ParallelDoc, StepDoc, StepRun, StepStatus, WorkflowDocument } from './protocol';

export interface Lane {
  id: string;
  task: string | null;
  /** The step execution itself (for a `for_each` step, the parent that gathers its items). */
  step: StepRun | null;
  /** A `for_each` step's item executions, by item index. */
  items: StepRun[];
  mapped: boolean;
  approval: boolean;
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
      approval: Boolean(doc?.approval)
    };
  };
  const stages: Stage[] = [];
  const placed = new Set<string>();
  for (const entry of workflow?.steps ?? []) {
    const members = membersOf(entry);
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
  for (const status of [StepStatus.failed, StepStatus.waiting, StepStatus.running, StepStatus.retrying, StepStatus.cancelled]) {
    if (statuses.has(status)) {
      return status;
    }
  }
  return statuses.size === 1 ? lane.items[0].status : StepStatus.running;
}

/**
 * Why a step waits for another: its explicit `needs`, list order (the list entry before it,
 * every member when that entry is a parallel group), or a template that reads the other's
 * `steps.<id>`.
 */
export type EdgeKind = 'needs' | 'order' | 'reads';

export interface Edge {
  from: string;
  to: string;
  kind: EdgeKind;
}

function membersOf(entry: StepDoc | ParallelDoc): StepDoc[] {
  return 'parallel' in entry ? entry.parallel : [entry];
}

/**
 * The steps a step waits for, as the compiler computes `waits_for`: its `needs` when it has
 * any (even `needs: []`), else the previous list entry's steps; plus the steps its templates
 * read (`with`, `if`, `for_each`, `approval.if`). Unknown ids and the step itself are left out,
 * as the compiler rejects them.
 */
export function graphEdges(workflow: WorkflowDocument | null): Edge[] {
  const entries = workflow?.steps ?? [];
  const ids = new Set(entries.flatMap(entry => membersOf(entry).map(doc => doc.id)));
  const edges: Edge[] = [];
  let previous: string[] = [];
  for (const entry of entries) {
    const members = membersOf(entry);
    for (const doc of members) {
      const declared = doc.needs ?? previous;
      const kind: EdgeKind = doc.needs ? 'needs' : 'order';
      const reads = templateSteps([doc.with, doc.if, doc.for_each, doc.approval?.if]);
      const from = new Map<string, EdgeKind>(declared.map(id => [id, kind]));
      reads.forEach(id => from.has(id) || from.set(id, 'reads'));
      from.forEach((k, id) => {
        if (id !== doc.id && ids.has(id)) {
          edges.push({ from: id, to: doc.id, kind: k });
        }
      });
    }
    previous = members.map(doc => doc.id);
  }
  return edges;
}

const TEMPLATE = /{{([\s\S]*?)}}|{%([\s\S]*?)%}/g;
const STEP_REF = /(?<![\w.])steps\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(['"])([A-Za-z_]\w*)\2\s*\])/g;

/** The step ids that the Jinja templates inside a JSON value read as `steps.<id>` or `steps['<id>']`. */
export function templateSteps(value: JSONValue): Set<string> {
  const found = new Set<string>();
  const visit = (v: JSONValue): void => {
    if (typeof v === 'string') {
      for (const block of v.matchAll(TEMPLATE)) {
        for (const ref of (block[1] ?? block[2]).matchAll(STEP_REF)) {
          found.add(ref[1] ?? ref[3]);
        }
      }
    } else if (Array.isArray(v)) {
      v.forEach(visit);
    } else if (v && typeof v === 'object') {
      Object.values(v).forEach(visit);
    }
  };
  visit(value);
  return found;
}
