import { Agent } from '../protocol';
import { AGENT_RUN_WORKFLOW, V2_RUN_WORKFLOW, runTitle } from '../runtitle';
import { runDoc } from './builders';

const coder = { id: 'coder', name: 'Coder' } as Agent;

describe('runTitle', () => {
  it("calls a workflow's run by the workflow's name", () => {
    expect(runTitle(runDoc('r1'), [coder])).toBe('Tour');
  });

  it("calls an agent run by the agent's name, not the built-in workflow's", () => {
    const run = runDoc('r1', { workflow_id: AGENT_RUN_WORKFLOW, workflow_name: 'Agent run', inputs: { agent: 'coder' } });
    expect(runTitle(run, [coder])).toBe('Coder (agent)');
  });

  it('falls back to the agent id while the agents are not loaded (or it was deleted)', () => {
    const run = runDoc('r1', { workflow_id: AGENT_RUN_WORKFLOW, workflow_name: 'Agent run', inputs: { agent: 'gone' } });
    expect(runTitle(run, null)).toBe('gone (agent)');
  });
});

describe('runTitle of a run imported from Clarion v2', () => {
  const imported = runDoc('r2', {
    workflow_id: V2_RUN_WORKFLOW,
    workflow_name: 'Clarion v2 agent run (imported)',
    inputs: { agent: 'basic_editor', agent_name: 'Basic File Editor', prompt: 'Fix it' }
  });

  it("is the agent's name, as the agent is called now", () => {
    expect(runTitle(imported, [{ id: 'basic_editor', name: 'Editor (renamed)' } as Agent])).toBe(
      'Editor (renamed) (v2 agent run)'
    );
  });

  it('is the name v2 knew the agent by when the agent is not there', () => {
    expect(runTitle(imported, [])).toBe('Basic File Editor (v2 agent run)');
  });
});
