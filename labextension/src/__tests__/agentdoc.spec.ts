import { load } from 'js-yaml';

import { EXTRA_NOTE, NEW_AGENT_YAML, agentYaml, importedFromV2 } from '../agentdoc';
import { ApiError } from '../api';
import { problemPlace, problemsOf } from '../diagnostics';
import { Agent } from '../protocol';

const CODER: Agent = {
  id: 'coder',
  name: 'Coder',
  description: null,
  model: 'openai/gpt-4o-mini',
  system_prompt: 'You improve {{ language }} code.\nKeep the style.',
  parameters: { temperature: 0.2 },
  output_schema: null,
  context: { include_globs: ['src/**'], exclude_globs: [], glob_syntax: 'gitignore', max_files: 50 },
  user_variables: [{ name: 'language', description: null, required: true, default: null }],
  api_base: 'http://127.0.0.1:9/v1',
  api_key_env: 'OPENAI_API_KEY',
  extra: {}
};

const IMPORTED: Agent = {
  ...CODER,
  id: 'basic_editor',
  name: 'Basic File Editor',
  context: { ...CODER.context, glob_syntax: 'v2' },
  extra: { Profile: { Version: '1.0.0', Icon: 'Bot' } }
};

describe('agentYaml', () => {
  it('reads back as the agent, but for the id, which is the tab’s', () => {
    const { id: _id, ...fields } = CODER;
    expect(load(agentYaml(CODER))).toEqual({ ...fields, extra: undefined });
  });

  it('puts who the agent is and how it reaches its model first', () => {
    const keys = agentYaml(CODER)
      .split('\n')
      .filter(line => /^[a-z_]+:/.test(line))
      .map(line => line.split(':')[0]);
    expect(keys.slice(0, 6)).toEqual(['name', 'description', 'model', 'api_base', 'api_key_env', 'system_prompt']);
  });

  it('shows every field, the empty ones as null, so that each can be filled in', () => {
    const text = agentYaml({ ...CODER, api_base: undefined, context: null } as unknown as Agent);
    expect(text).toContain('\napi_base: null\n');
    expect(text).toContain('\ncontext: null\n');
  });

  it('keeps a multi-line system prompt a literal block, and a long one on its line', () => {
    const long = 'word '.repeat(60).trim();
    expect(agentYaml(CODER)).toContain('system_prompt: |-\n  You improve {{ language }} code.\n  Keep the style.\n');
    expect(agentYaml({ ...CODER, system_prompt: long })).toContain(`system_prompt: ${long}\n`);
  });

  it('says that api_key_env names a variable, and holds no key', () => {
    const text = agentYaml(CODER);
    expect(text).toMatch(/^# .*api_key_env is the NAME of the environment variable/m);
    expect(text).toContain('api_key_env: OPENAI_API_KEY');
  });

  it('keeps what a v2 import kept last, under a comment, and saves it back unchanged', () => {
    const text = agentYaml(IMPORTED);
    expect(text.indexOf(EXTRA_NOTE)).toBeGreaterThan(text.indexOf('user_variables:'));
    expect((load(text) as Agent).extra).toEqual(IMPORTED.extra);
    expect(agentYaml(CODER)).not.toContain('extra');
  });
});

describe('a new agent', () => {
  it('starts from an agent the server accepts as it is: a name, a model and a key variable', () => {
    const doc = load(NEW_AGENT_YAML) as Agent;
    expect(doc.name).toBeTruthy();
    expect(doc.model).toMatch(/^[a-z]+\/.+/);
    expect(doc.api_key_env).toMatch(/^[A-Z_]+$/);
    expect(doc.id).toBeUndefined();
  });
});

describe('importedFromV2', () => {
  it('knows an imported agent by its v2 globs or the fields it kept', () => {
    expect(importedFromV2(IMPORTED)).toBe(true);
    expect(importedFromV2({ ...IMPORTED, context: null })).toBe(true);
    expect(importedFromV2({ ...IMPORTED, extra: {} })).toBe(true);
    expect(importedFromV2(CODER)).toBe(false);
    expect(importedFromV2({ ...CODER, context: null, extra: undefined })).toBe(false);
  });
});

describe("the server's refusals of an agent, in its text", () => {
  const text = agentYaml(CODER);
  const lines = text.split('\n');
  const lineOf = (start: string): number => lines.findIndex(line => line.startsWith(start)) + 1;

  it('marks a 422 field at its key, nested ones included', () => {
    const refusal = new ApiError(422, 'validation_failed', 'the agent is not valid', [
      { loc: 'api_key_env', message: 'not a secret variable', field: 'api_key_env' },
      { loc: 'context.max_files', message: 'must be at most 10000', field: 'context.max_files' }
    ]);
    const [key, nested] = problemsOf(refusal).map(p => problemPlace(p, lines).line);
    expect(key).toBe(lineOf('api_key_env:'));
    expect(nested).toBe(lineOf('  max_files:'));
  });

  it('marks text that is not YAML at the line the server names', () => {
    const refusal = new ApiError(400, 'bad_request', 'the request body is not valid YAML/JSON: mapping values are not allowed here at line 4, column 9', {
      where: 'line 4, column 9'
    });
    const [problem] = problemsOf(refusal);
    expect(problem.loc).toBe('line 4, column 9');
    expect(problemPlace(problem, lines)).toEqual({ line: 4, from: 8, to: lines[3].length });
  });

  it('has no place for a refusal that names none (its message is shown alone)', () => {
    expect(problemsOf(new ApiError(409, 'conflict', "agent 'coder' already exists", { id: 'coder' }))).toEqual([]);
  });
});
