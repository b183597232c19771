import { ClarionApi } from '../api';
import { EventType, RunStatus, WorkflowRun } from '../protocol';
import { PAGE_SIZE, RunHistory, WaitingModel } from '../history';
import { event, runDoc } from './builders';
import { FakeServer } from './fake';

/** Time-ordered ids, as the server makes them: a greater id is a newer run. */
const id = (n: number): string => n.toString(16).padStart(26, '0');

/** A server holding `count` runs, paged newest first like `GET /api/v3/runs`. */
function serverWith(runs: WorkflowRun[]): FakeServer {
  const server = new FakeServer();
  server.on('GET', /\/api\/v3\/runs$/, request => {
    const query = new URL(request.url).searchParams;
    const status = query.get('status');
    const matching = runs.filter(r => !status || r.status === status).sort((a, b) => (a.run_id < b.run_id ? 1 : -1));
    const start = Number(query.get('cursor') ?? 0);
    const limit = Number(query.get('limit') ?? 50);
    const page = matching.slice(start, start + limit);
    const next = start + limit < matching.length ? String(start + limit) : null;
    return { json: { runs: page, next_cursor: next } };
  });
  server.on('GET', /\/api\/v3\/runs\/[0-9a-f]+\/events$/, () => ({ json: { events: [] } }));
  server.on('GET', /\/api\/v3\/runs\/[0-9a-f]+$/, request => {
    const runId = new URL(request.url).pathname.split('/').pop();
    const run = runs.find(r => r.run_id === runId);
    return run ? { json: run } : undefined;
  });
  return server;
}

const flush = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 0));

describe('RunHistory', () => {
  it('pages through runs newest first with the cursor', async () => {
    const runs = Array.from({ length: 250 }, (_, i) => runDoc(id(i + 1), { status: RunStatus.succeeded }));
    const model = new RunHistory(new ClarionApi(serverWith(runs).settings()));
    await model.reload();
    expect(model.runs).toHaveLength(PAGE_SIZE);
    expect(model.runs[0].run_id).toBe(id(250));
    await model.loadMore();
    await model.loadMore();
    expect(model.runs).toHaveLength(250);
    expect(model.hasMore).toBe(false);
    expect(model.runs[249].run_id).toBe(id(1));
  });

  it('drops deleted runs from the list (no event tells of a deletion)', async () => {
    const runs = [1, 2, 3].map(n => runDoc(id(n), { status: RunStatus.succeeded }));
    const model = new RunHistory(new ClarionApi(serverWith(runs).settings()));
    await model.reload();
    let changes = 0;
    model.changed.connect(() => changes++);
    model.remove([id(2), 'unknown']);
    expect(model.runs.map(r => r.run_id)).toEqual([id(3), id(1)]);
    expect(model.get(id(2))).toBeUndefined();
    model.remove(['unknown']);
    expect(changes).toBe(1);
  });

  it('a new run announced on the socket is fetched once and placed first', async () => {
    const runs = [runDoc(id(1)), runDoc(id(2))];
    const server = serverWith(runs);
    const model = new RunHistory(new ClarionApi(server.settings()));
    await model.reload();
    runs.push(runDoc(id(3), { workflow_name: 'Fresh' }));
    model.apply(event(id(3), 1, EventType.run_queued));
    model.apply(event(id(3), 2, EventType.run_started));
    await flush();
    await flush();
    expect(model.runs.map(r => r.run_id)).toEqual([id(3), id(2), id(1)]);
    expect(model.runs[0].workflow_name).toBe('Fresh');
    expect(server.requests.filter(r => new URL(r.url).pathname.endsWith(`/runs/${id(3)}`))).toHaveLength(1);
  });

  it('a new run’s state comes from its stored events, and events during the fetch are not lost', async () => {
    const runs = [runDoc(id(1))];
    const server = serverWith(runs);
    const model = new RunHistory(new ClarionApi(server.settings()));
    await model.reload();
    runs.push(runDoc(id(2), { status: RunStatus.queued }));
    const stored = [event(id(2), 1, EventType.run_queued), event(id(2), 2, EventType.run_started)];
    server.on('GET', /\/runs\/0+2\/events$/, () => ({ json: { events: stored } }));
    model.apply(stored[0]);
    model.apply(stored[1]);
    model.apply(event(id(2), 3, EventType.step_started, 'a', { attempt: 1 }));
    await flush();
    await flush();
    expect(model.runs[0]).toMatchObject({ run_id: id(2), status: RunStatus.running, last_seq: 3 });
  });

  it('updates a shown run’s status as its events arrive', async () => {
    const model = new RunHistory(new ClarionApi(serverWith([runDoc(id(1), { status: RunStatus.running })]).settings()));
    await model.reload();
    model.apply(event(id(1), 5, EventType.workflow_succeeded, null, { usage: { prompt_tokens: 3, completion_tokens: 4, cost_usd: 0.01 } }));
    expect(model.runs[0]).toMatchObject({ status: RunStatus.succeeded, usage: { cost_usd: 0.01 } });
  });

  it('with a status filter, a run that leaves the status leaves the list', async () => {
    const runs = [runDoc(id(1), { status: RunStatus.waiting }), runDoc(id(2), { status: RunStatus.running })];
    const model = new RunHistory(new ClarionApi(serverWith(runs).settings()));
    await model.setFilter({ status: RunStatus.waiting });
    expect(model.runs.map(r => r.run_id)).toEqual([id(1)]);
    model.apply(event(id(1), 9, EventType.approval_granted, 'apply'));
    expect(model.runs).toEqual([]);
  });

  it('catches up after a reconnect: the first page again, then missed events of active runs', async () => {
    const runs = [runDoc(id(1), { status: RunStatus.running })];
    const server = serverWith(runs);
    const model = new RunHistory(new ClarionApi(server.settings()));
    await model.reload();
    runs[0] = runDoc(id(1), { status: RunStatus.succeeded });
    server.on('GET', /\/events$/, () => ({ json: { events: [] } }));
    await model.catchUp();
    expect(model.runs[0].status).toBe(RunStatus.succeeded);
  });
});

describe('WaitingModel', () => {
  it('counts the runs waiting for approval, live', async () => {
    const runs = [
      runDoc(id(1), { status: RunStatus.waiting, approvals: [{ step_key: 'apply', preview: '', message: null, requested_at: '' }] })
    ];
    const model = new WaitingModel(new ClarionApi(serverWith(runs).settings()));
    const counts: number[] = [];
    model.changed.connect((_, n) => counts.push(n));
    await model.reload();
    model.apply(event(id(2), 4, EventType.approval_requested, 'deploy', { preview: {} }));
    model.apply(event(id(2), 5, EventType.approval_requested, 'notify', { preview: {} }));
    model.apply(event(id(1), 6, EventType.approval_granted, 'apply'));
    model.apply(event(id(2), 7, EventType.workflow_cancelled));
    expect(counts).toEqual([1, 2, 1, 0]);
  });
});
