import { agentTask } from '../agenttask';
import { Agent } from '../protocol';
import { AGENT_RUN_WORKFLOW, V2_RUN_WORKFLOW } from '../runtitle';
import { runDoc } from './builders';

describe('agentTask', () => {
  const editor = { id: 'basic_editor', name: 'Basic File Editor' } as Agent;

  it("is an imported v2 run's agent, prompt and files", () => {
    const run = runDoc('r1', {
      workflow_id: V2_RUN_WORKFLOW,
      inputs: { agent: 'basic_editor', agent_name: 'Basic File Editor', prompt: 'Fix the typo', files: ['a.go'] }
    });
    expect(agentTask(run, null)).toEqual({
      agentId: 'basic_editor',
      agentName: 'Basic File Editor',
      prompt: 'Fix the typo',
      files: ['a.go'],
      imported: true
    });
  });

  it("names an agent run's agent as it is called now", () => {
    const run = runDoc('r2', { workflow_id: AGENT_RUN_WORKFLOW, inputs: { agent: 'basic_editor', prompt: 'Go' } });
    expect(agentTask(run, [editor])).toMatchObject({ agentName: 'Basic File Editor', files: [], imported: false });
  });

  it('is nothing for the run of a workflow', () => {
    expect(agentTask(runDoc('r3', { inputs: { prompt: 'not an agent run' } }), [editor])).toBeNull();
  });
});
