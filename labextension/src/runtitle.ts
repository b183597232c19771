/**
 * What a run is called in tabs, rows and notifications: its workflow's name, except for agent
 * runs, whose workflow is the same built-in one for every agent ("Agent run"): those are
 * called by the agent's name, found from the agent id the run's inputs hold.
 */
import { Agent, WorkflowRun } from './protocol';

/** The id of the built-in workflow behind `POST /api/v3/agents/{id}/run`. */
export const AGENT_RUN_WORKFLOW = 'agent-run';

export function runTitle(run: Pick<WorkflowRun, 'workflow_id' | 'workflow_name' | 'inputs'>, agents: Agent[] | null): string {
  if (run.workflow_id === AGENT_RUN_WORKFLOW) {
    const id = typeof run.inputs?.agent === 'string' ? run.inputs.agent : '';
    const agent = agents?.find(a => a.id === id);
    return `${agent?.name || id || 'agent'} (agent)`;
  }
  return run.workflow_name || run.workflow_id;
}
