import { ClarionApi } from '../api';
import { Agent, WorkflowRun } from '../protocol';
import { RerunForm, agentsOf, changeLines, modelOf } from '../rerun';
import { runDoc } from './builders';
import { FakeServer } from './fake';

function agent(id: string, model: string): Agent {
  return { id, name: id, description: null, model, system_prompt: '', parameters: {}, user_variables: [], api_key_env: null };
}

const AGENTS = [agent('writer', 'openai/small'), agent('critic', 'openai/large'), agent('coder', 'openai/code')];

function run(fields: Partial<WorkflowRun> = {}): WorkflowRun {
  return runDoc('r1', {
    status: 'succeeded',
    inputs: { topic: 'cats', words: ['a', 'b'], rounds: 2, loud: false, who: 'critic' },
    workflow: {
      id: 'essay',
      name: 'Essay',
      inputs: {
        topic: { type: 'string' },
        words: { type: 'array', default: [] },
        rounds: { type: 'integer', default: 1 },
        loud: { type: 'boolean', default: false },
        who: { type: 'string', default: 'critic' }
      },
      steps: [
        { id: 'draft', task: 'llm_call', with: { agent: 'writer', prompt: '{{ inputs.topic }}' } },
        { parallel: [{ id: 'review', task: 'llm_call', with: { agent: '{{ inputs.who }}', prompt: 'x' } }, { id: 'count', task: 'shell', with: { command: 'wc' } }] },
        { id: 'again', task: 'llm_call', with: { agent: 'writer', prompt: 'y' } },
        { id: 'later', task: 'llm_call', with: { agent: "{{ steps.draft.output.text }}", prompt: 'z' } }
      ]
    },
    ...fields
  });
}

describe('agentsOf', () => {
  it('names each agent the steps ask for once, an input template resolved from the run, in order', () => {
    expect(agentsOf(run())).toEqual(['writer', 'critic']);
  });

  it('finds the agent of an agent run, which names it as an input', () => {
    const agentRun = runDoc('r2', {
      inputs: { agent: 'coder', prompt: 'fix it' },
      workflow: { id: 'agent-run', name: 'Agent run', steps: [{ id: 'reply', task: 'llm_call', with: { agent: '{{ inputs.agent }}' } }] }
    });
    expect(agentsOf(agentRun)).toEqual(['coder']);
  });
});

describe('modelOf', () => {
  it("is the run's override, else the saved agent's model", () => {
    const overridden = run({ changes: { overrides: { agents: { writer: { model: 'openai/tried' } } } } });
    expect(modelOf(overridden, 'writer', AGENTS)).toBe('openai/tried');
    expect(modelOf(overridden, 'critic', AGENTS)).toBe('openai/large');
    expect(modelOf(run(), 'ghost', AGENTS)).toBe('');
  });
});

describe('RerunForm', () => {
  it("starts with the run's inputs as text (arrays and objects as YAML that JSON is) and its models", () => {
    const form = new RerunForm(run(), AGENTS);
    expect(form.texts).toMatchObject({ topic: 'cats', words: '["a","b"]', rounds: '2', who: 'critic' });
    expect(form.checks.loud).toBe(false);
    expect(form.models).toEqual({ writer: 'openai/small', critic: 'openai/large' });
  });

  it('asks for nothing when nothing was changed: every finished step would be reused', () => {
    expect(new RerunForm(run(), AGENTS).request()).toEqual({});
  });

  it('sends only the inputs whose value changed, parsed as their type', () => {
    const form = new RerunForm(run(), AGENTS);
    form.setText('topic', 'dogs');
    form.setText('words', '- a\n- b\n'); // the same list, in block YAML
    form.setText('rounds', '3');
    form.setCheck('loud', true);
    expect(form.request()).toEqual({ inputs: { topic: 'dogs', rounds: 3, loud: true } });
  });

  it('overrides the model of each agent whose field is not its saved model', () => {
    const form = new RerunForm(run(), AGENTS);
    form.setModel('critic', '  openai/other ');
    expect(form.request()).toEqual({ overrides: { agents: { critic: { model: 'openai/other' } } } });
  });

  it("gives a parent's override again when it is kept (an override lasts one run)", () => {
    const form = new RerunForm(run({ changes: { overrides: { agents: { writer: { model: 'openai/tried' } } } } }), AGENTS);
    expect(form.request()).toEqual({ overrides: { agents: { writer: { model: 'openai/tried' } } } });
  });

  it('names the field that holds no value, live and when asked for the request', () => {
    const form = new RerunForm(run(), AGENTS);
    expect(form.inputProblem('rounds', '2.5')).toBe("input 'rounds' must be an integer");
    expect(form.inputProblem('words', '[a, b')).toMatch(/^input 'words' must be an array/);
    form.setText('rounds', 'many');
    expect(() => form.request()).toThrow("input 'rounds' must be an integer");
    form.setText('rounds', '2');
    form.setModel('writer', ' ');
    expect(form.modelProblem('writer')).toBe("the model of agent 'writer' must not be empty");
    expect(() => form.request()).toThrow("the model of agent 'writer' must not be empty");
  });

  it('posts what it asks for to POST /api/v3/runs/{id}/rerun', async () => {
    const server = new FakeServer().on('POST', /\/api\/v3\/runs\/r1\/rerun$/, () => ({ status: 202, json: runDoc('r9') }));
    const form = new RerunForm(run(), AGENTS);
    form.setText('topic', 'dogs');
    const answer = await new ClarionApi(server.settings()).rerun('r1', form.request());
    expect(answer.run_id).toBe('r9');
    expect(JSON.parse(server.requests[0].body)).toEqual({ inputs: { topic: 'dogs' } });
  });
});

describe('changeLines', () => {
  it('says where a re-run started, what each input was and became, and each override', () => {
    expect(
      changeLines({
        from_step: 'review',
        inputs: { topic: { from: 'cats', to: 'dogs' } },
        overrides: { agents: { critic: { model: 'openai/other' } }, steps: { count: { with: { command: 'wc -l' } } } }
      })
    ).toEqual([
      're-run from step review',
      'input topic: "cats" → "dogs"',
      'agent critic: model openai/other',
      'step count: with {"command":"wc -l"}'
    ]);
    expect(changeLines(null)).toEqual([]);
  });
});
