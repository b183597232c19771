import { ApiError, ClarionApi } from '../api';
import { FakeServer } from './fake';

describe('ClarionApi', () => {
  let server: FakeServer;
  let api: ClarionApi;

  beforeEach(() => {
    server = new FakeServer();
    api = new ClarionApi(server.settings());
  });

  it('puts every path below the base URL and /api/v3', async () => {
    server.on('GET', /\/api\/v3\/runs$/, () => ({ json: { runs: [], next_cursor: null } }));
    await api.listRuns({ status: 'waiting', workflow_id: 'triage', limit: 100, cursor: 'abc=' });
    const url = new URL(server.requests[0].url);
    expect(url.pathname).toBe('/user/test/api/v3/runs');
    expect(url.searchParams.get('status')).toBe('waiting');
    expect(url.searchParams.get('workflow_id')).toBe('triage');
    expect(url.searchParams.get('limit')).toBe('100');
    expect(url.searchParams.get('cursor')).toBe('abc=');
  });

  it('leaves out filters that are not set', async () => {
    server.on('GET', /\/runs$/, () => ({ json: { runs: [], next_cursor: null } }));
    await api.listRuns({ status: undefined, workflow_id: '' });
    const query = new URL(server.requests[0].url).searchParams;
    expect(query.has('status') || query.has('workflow_id')).toBe(false);
  });

  it('deletes the finished runs a filter selects, and asks for all=true only without one', async () => {
    server.on('DELETE', /\/api\/v3\/runs$/, () => ({ json: { deleted: 2 } }));
    expect(await api.deleteRuns({ workflow_id: 'tour', status: undefined })).toBe(2);
    await api.deleteRuns({});
    const [filtered, all] = server.requests.map(r => new URL(r.url).searchParams);
    expect(filtered.get('workflow_id')).toBe('tour');
    expect(filtered.has('all') || filtered.has('status')).toBe(false);
    expect(all.get('all')).toBe('true');
  });

  it('sends the token and the XSRF cookie the way Lab does', async () => {
    document.cookie = '_xsrf=xsrf-value';
    server.on('POST', /\/runs\/r1\/cancel$/, () => ({ status: 202, json: { run_id: 'r1' } }));
    await api.cancel('r1');
    const { headers } = server.requests[0];
    expect(headers.get('Authorization')).toBe('token secret');
    expect(headers.get('X-XSRFToken')).toBe('xsrf-value');
  });

  it('saves YAML as YAML text with PUT', async () => {
    server.on('PUT', /\/workflows\/tour$/, () => ({ json: { id: 'tour', name: 'Tour', steps: [] } }));
    await api.saveWorkflowYaml('tour', 'id: tour\nname: Tour\n');
    const request = server.requests[0];
    expect(request.method).toBe('PUT');
    expect(request.headers.get('Content-Type')).toBe('application/yaml');
    expect(request.body).toBe('id: tour\nname: Tour\n');
  });

  it('turns a 422 into an error that lists every problem', async () => {
    const details = [{ loc: "step 'each' field 'task'", message: 'unknown task type', step: 'each', field: 'task' }];
    server.on('PUT', /\/workflows\/tour$/, () => ({
      status: 422,
      json: { error: { code: 'invalid', message: 'invalid workflow: 1 problem', details } }
    }));
    const error: ApiError = await api.saveWorkflowYaml('tour', 'x').catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(422);
    expect(error.code).toBe('invalid');
    expect(error.problems).toEqual(details);
  });

  it("says the server extension is missing when Jupyter itself answers 404", async () => {
    const error: ApiError = await api.health().catch(e => e);
    expect(error.extensionMissing).toBe(true);
    expect(error.message).toMatch(/server extension is not enabled/);
  });

  it('keeps the API’s own 404 message for an unknown run', async () => {
    server.on('GET', /\/runs\/nope$/, () => ({
      status: 404,
      json: { error: { code: 'not_found', message: "run 'nope' not found", details: null } }
    }));
    const error: ApiError = await api.getRun('nope').catch(e => e);
    expect(error.extensionMissing).toBe(false);
    expect(error.message).toBe("run 'nope' not found");
  });

  it('reports an unreachable server as a network error', async () => {
    const settings = { ...server.settings(), fetch: () => Promise.reject(new TypeError('Failed to fetch')) };
    const error: ApiError = await new ClarionApi(settings as any).health().catch(e => e);
    expect(error.code).toBe('network');
    expect(error.message).toMatch(/cannot reach the Jupyter server/);
  });

  it('uploads a clarion.db as application/octet-stream and YAML files as YAML', async () => {
    server.on('POST', /\/agents\/import$/, () => ({ status: 201, json: { agents: [], errors: [], warnings: [] } }));
    const sqlite = new Blob([new Uint8Array([0x53, 0x51, 0x4c, 0x69, 0x74, 0x65, 0x00, 0xff])]);
    await api.importAgents(sqlite, 'clarion.db');
    await api.importAgents(new Blob(['type: Agent\n']), 'triager.yml');
    expect(server.requests.map(r => r.headers.get('Content-Type'))).toEqual(['application/octet-stream', 'application/yaml']);
    expect(server.requests[0].body.length).toBeGreaterThan(0);
  });

  it('posts a decision with its comment to the step’s approval', async () => {
    server.on('POST', /\/runs\/r1\/approvals\/apply$/, () => ({ json: { ok: true } }));
    await api.decide('r1', 'apply', 'reject', 'not this way');
    expect(JSON.parse(server.requests[0].body)).toEqual({ decision: 'reject', comment: 'not this way' });
  });

  it('starts an agent run with prompt, variables, files and apply mode', async () => {
    server.on('POST', /\/agents\/coder\/run$/, () => ({ status: 202, json: { run_id: 'r2' } }));
    const answer = await api.runAgent('coder', { prompt: 'fix it', variables: { lang: 'py' }, files: ['a.py'], apply: 'review' });
    expect(answer.run_id).toBe('r2');
    expect(JSON.parse(server.requests[0].body)).toEqual({
      prompt: 'fix it',
      variables: { lang: 'py' },
      files: ['a.py'],
      apply: 'review'
    });
  });

  it('saves an agent as YAML text, and creates one the same way', async () => {
    server.on('PUT', /\/api\/v3\/agents\/coder$/, () => ({ json: { id: 'coder', name: 'Coder' } }));
    server.on('POST', /\/api\/v3\/agents$/, () => ({ status: 201, json: { id: 'helper', name: 'Helper' } }));
    await api.saveAgentYaml('coder', 'name: Coder\nmodel: openai/gpt-4o\n');
    expect((await api.createAgentYaml('name: Helper\nmodel: openai/gpt-4o\n')).id).toBe('helper');
    const [put, post] = server.requests;
    expect(put.headers.get('Content-Type')).toBe('application/yaml');
    expect(put.body).toBe('name: Coder\nmodel: openai/gpt-4o\n');
    expect(post.headers.get('Content-Type')).toBe('application/yaml');
  });

  it("asks Jupyter's /api/me whether the user may change Clarion's documents", async () => {
    let granted: string[] = [];
    server.on('GET', /\/api\/me$/, () => ({ json: { identity: { username: 'me' }, permissions: { clarion: granted } } }));
    expect(await api.canWrite()).toBe(false);
    granted = ['write'];
    expect(await api.canWrite()).toBe(true);
    const url = new URL(server.requests[0].url);
    expect(url.pathname).toBe('/user/test/api/me');
    expect(JSON.parse(url.searchParams.get('permissions')!)).toEqual({ clarion: ['write'] });
  });

  it('lets a save answer for itself when Jupyter cannot say', async () => {
    expect(await api.canWrite()).toBe(true); // /api/me answers 404 here
  });
});
