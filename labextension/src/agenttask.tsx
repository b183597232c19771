/**
 * What an agent was asked, at the top of its run's detail: the agent, the prompt and the
 * files picked by hand. For the agent runs started here and for the runs imported from
 * Clarion v2, whose inputs keep the same three (and the name v2 knew the agent by).
 */
import * as React from 'react';

import { Agent, WorkflowRun } from './protocol';
import { AGENT_RUN_WORKFLOW, V2_RUN_WORKFLOW } from './runtitle';

export interface IAgentTask {
  agentId: string;
  /** The agent's name now, else the one v2 knew it by, else its id. */
  agentName: string;
  prompt: string;
  files: string[];
  /** Run in Clarion v2, imported since. */
  imported: boolean;
}

/** The task of an agent run or an imported v2 run; null for other runs. */
export function agentTask(run: Pick<WorkflowRun, 'workflow_id' | 'inputs'>, agents: Agent[] | null): IAgentTask | null {
  if (run.workflow_id !== AGENT_RUN_WORKFLOW && run.workflow_id !== V2_RUN_WORKFLOW) {
    return null;
  }
  const inputs = run.inputs ?? {};
  const text = (value: unknown): string => (typeof value === 'string' ? value : '');
  const agentId = text(inputs.agent);
  return {
    agentId,
    agentName: agents?.find(a => a.id === agentId)?.name || text(inputs.agent_name) || agentId,
    prompt: text(inputs.prompt),
    files: Array.isArray(inputs.files) ? inputs.files.map(String) : [],
    imported: run.workflow_id === V2_RUN_WORKFLOW
  };
}

export function AgentTask({ run, agents }: { run: WorkflowRun; agents: Agent[] | null }): JSX.Element | null {
  const task = agentTask(run, agents);
  if (!task) {
    return null;
  }
  return (
    <section className="clarion-AgentTask" aria-label="What the agent was asked">
      <dl className="clarion-Facts">
        <dt>Agent</dt>
        <dd>
          {task.agentName} {task.agentName !== task.agentId && <code>{task.agentId}</code>}
          {task.imported && <span className="clarion-Muted"> · run in Clarion v2, imported</span>}
        </dd>
        {task.files.length > 0 && (
          <>
            <dt>Files</dt>
            <dd>
              {task.files.map(f => (
                <code key={f} className="clarion-FileName">
                  {f}
                </code>
              ))}
            </dd>
          </>
        )}
      </dl>
      <div className="clarion-Label">Prompt</div>
      <pre className="clarion-Stream clarion-Prompt">{task.prompt || '(none)'}</pre>
    </section>
  );
}
