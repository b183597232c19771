/**
 * What a run is called in tabs, rows and notifications: its workflow's name, except for agent
 * runs, whose workflow is the same built-in one for every agent ("Agent run"), and the runs
 * imported from Clarion v2: those are called by the agent's name, found from the agent id the
 * run's inputs hold (an imported run also keeps the name v2 knew the agent by).
 */
import { Agent, WorkflowRun } from './protocol';

/** The id of the built-in workflow behind `POST /api/v3/agents/{id}/run`. */
export const AGENT_RUN_WORKFLOW = 'agent-run';

/** The id of the built-in, read-only workflow of the runs imported from Clarion v2. */
export const V2_RUN_WORKFLOW = 'clarion-v2-agent-run';

export function runTitle(run: Pick<WorkflowRun, 'workflow_id' | 'workflow_name' | 'inputs'>, agents: Agent[] | null): string {
  if (run.workflow_id !== AGENT_RUN_WORKFLOW && run.workflow_id !== V2_RUN_WORKFLOW) {
    return run.workflow_name || run.workflow_id;
  }
  const text = (value: unknown): string => (typeof value === 'string' ? value : '');
  const id = text(run.inputs?.agent);
  const name = agents?.find(a => a.id === id)?.name || text(run.inputs?.agent_name) || id || 'agent';
  return run.workflow_id === AGENT_RUN_WORKFLOW ? `${name} (agent)` : `${name} (v2 agent run)`;
}
