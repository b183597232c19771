import { ClarionApi } from '../api';
import { EventType, RunStatus, StepStatus } from '../protocol';
import { emptyExtras, reduceRun } from '../fold';
import { RunModel } from '../liverun';
import { event, runDoc } from './builders';
import { FakeServer, FakeSocket } from './fake';

const R = 'r1';

function replay(...events: ReturnType<typeof event>[]) {
  const extras = emptyExtras();
  let run = runDoc(R);
  for (const e of events) {
    run = reduceRun(run, e, extras);
  }
  return { run, extras };
}

describe('reduceRun', () => {
  it('follows a step from started to completed with its output and duration', () => {
    const { run } = replay(
      event(R, 1, EventType.run_queued),
      event(R, 2, EventType.run_started),
      event(R, 3, EventType.step_started, 'read', { attempt: 1, task: 'file_read' }),
      event(R, 4, EventType.step_completed, 'read', { attempt: 1, duration_ms: 12.5, output: { bytes: 3 } })
    );
    expect(run.status).toBe(RunStatus.running);
    expect(run.steps).toHaveLength(1);
    expect(run.steps[0]).toMatchObject({ key: 'read', status: StepStatus.succeeded, output: { bytes: 3 }, duration_ms: 12.5 });
    expect(run.last_seq).toBe(4);
  });

  it('keeps each attempt of a retried step', () => {
    const error = { code: 'task_failed', message: 'exit 1' };
    const { run, extras } = replay(
      event(R, 1, EventType.step_started, 'flaky', { attempt: 1 }),
      event(R, 2, EventType.step_retrying, 'flaky', { attempt: 1, error, delay_s: 0.1 }),
      event(R, 3, EventType.step_started, 'flaky', { attempt: 2 }),
      event(R, 4, EventType.step_completed, 'flaky', { attempt: 2, output: 'ok' })
    );
    expect(run.steps[0]).toMatchObject({ status: StepStatus.succeeded, attempt: 2, error: null });
    expect(extras.attempts.flaky.map(a => [a.attempt, a.status, a.error?.message ?? null])).toEqual([
      [1, StepStatus.failed, 'exit 1'],
      [2, StepStatus.succeeded, null]
    ]);
  });

  it('places for_each items under their step with their index', () => {
    const { run } = replay(
      event(R, 1, EventType.step_started, 'each', { items: 2 }),
      event(R, 2, EventType.step_started, 'each[1]', { attempt: 1, item_index: 1 }),
      event(R, 3, EventType.step_started, 'each[0]', { attempt: 1, item_index: 0 })
    );
    expect(run.steps.map(s => [s.key, s.step_id, s.item_index])).toEqual([
      ['each', 'each', null],
      ['each[1]', 'each', 1],
      ['each[0]', 'each', 0]
    ]);
  });

  it('gathers streamed LLM text per step', () => {
    const { extras } = replay(
      event(R, 1, EventType.step_started, 'reply', { attempt: 1 }),
      event(R, 2, EventType.llm_token, 'reply', { text: 'Hel' }),
      event(R, 3, EventType.llm_token, 'reply', { text: 'lo' })
    );
    expect(extras.text.reply).toBe('Hello');
  });

  it('a requested approval makes the step and the run wait, with the preview; granting resumes', () => {
    const waiting = replay(
      event(R, 1, EventType.run_started),
      event(R, 2, EventType.approval_requested, 'apply', { preview: '--- a/x\n+++ b/x\n', message: 'Apply?' })
    );
    expect(waiting.run.status).toBe(RunStatus.waiting);
    expect(waiting.run.steps[0].status).toBe(StepStatus.waiting);
    expect(waiting.run.approvals).toEqual([
      expect.objectContaining({ step_key: 'apply', preview: '--- a/x\n+++ b/x\n', message: 'Apply?' })
    ]);
    const extras = waiting.extras;
    const granted = reduceRun(waiting.run, event(R, 3, EventType.approval_granted, 'apply', { by: 'ada' }), extras);
    expect(granted.status).toBe(RunStatus.running);
    expect(granted.approvals).toEqual([]);
    expect(extras.decisions.apply).toEqual({ decision: 'approved', by: 'ada', comment: undefined });
  });

  it('a rejection is kept with its comment', () => {
    const { run, extras } = replay(
      event(R, 1, EventType.approval_requested, 'apply', { preview: {} }),
      event(R, 2, EventType.approval_rejected, 'apply', { by: 'ada', comment: 'too broad' })
    );
    expect(run.approvals).toEqual([]);
    expect(extras.decisions.apply).toEqual({ decision: 'rejected', by: 'ada', comment: 'too broad' });
  });

  it('a terminal event ends the run with its outputs or error', () => {
    const ok = replay(event(R, 1, EventType.workflow_succeeded, null, { outputs: { n: 1 } })).run;
    expect(ok).toMatchObject({ status: RunStatus.succeeded, outputs: { n: 1 } });
    expect(ok.finished_at).not.toBeNull();
    const failed = replay(event(R, 1, EventType.workflow_failed, null, { error: { code: 'step_failed', message: 'x' } })).run;
    expect(failed).toMatchObject({ status: RunStatus.failed, error: { code: 'step_failed', message: 'x' } });
  });

  it('ignores events it has seen and events of other runs', () => {
    const { run } = replay(event(R, 1, EventType.run_started), event(R, 2, EventType.step_started, 'a'));
    expect(reduceRun(run, event(R, 2, EventType.step_failed, 'a'))).toBe(run);
    expect(reduceRun(run, event('other', 9, EventType.workflow_failed))).toBe(run);
  });
});

describe('RunModel', () => {
  beforeEach(() => (FakeSocket.all = []));

  it('loads the run, then builds its state from the run’s socket from seq 0', async () => {
    const server = new FakeServer().on('GET', /\/runs\/r1$/, () => ({
      json: runDoc(R, { status: RunStatus.running, inputs: { topic: 'x' }, last_seq: 7 })
    }));
    const model = new RunModel(new ClarionApi(server.settings()), R);
    let changes = 0;
    model.changed.connect(() => changes++);
    await model.start();
    expect(model.run?.inputs).toEqual({ topic: 'x' });
    expect(FakeSocket.last.url).toContain('/ws/runs/r1/subscribe?since=0');
    FakeSocket.last.open();
    FakeSocket.last.receive(event(R, 1, EventType.run_started));
    FakeSocket.last.receive(event(R, 2, EventType.step_started, 'a', { attempt: 1 }));
    expect(model.run?.steps[0].status).toBe(StepStatus.running);
    expect(changes).toBeGreaterThanOrEqual(3);
    model.dispose();
  });

  it('shows the API’s error when the run cannot be loaded', async () => {
    const server = new FakeServer().on('GET', /\/runs\/r1$/, () => ({
      status: 404,
      json: { error: { code: 'not_found', message: "run 'r1' not found", details: null } }
    }));
    const model = new RunModel(new ClarionApi(server.settings()), R);
    await model.start();
    expect(model.error).toBe("run 'r1' not found");
    expect(FakeSocket.all).toHaveLength(0);
  });
});
