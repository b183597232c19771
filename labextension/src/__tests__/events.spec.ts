import { EventStream, socketUrl } from '../events';
import { CloseCode, EventType } from '../protocol';
import { event } from './builders';
import { FakeServer, FakeSocket } from './fake';

describe('EventStream', () => {
  const settings = new FakeServer().settings();

  beforeEach(() => {
    FakeSocket.all = [];
    jest.useFakeTimers();
  });

  afterEach(() => jest.useRealTimers());

  it('opens the socket below the base URL with the token', () => {
    expect(socketUrl(settings, 'ws/runs/r1/subscribe', { since: '4' })).toBe(
      'ws://127.0.0.1:8888/user/test/ws/runs/r1/subscribe?since=4&token=secret'
    );
  });

  it('resumes a run’s stream after a drop from the last seq it received, without repeats', () => {
    const stream = new EventStream('ws/runs/r1/subscribe', 0, { settings, backoff: [10] });
    const seen: number[] = [];
    let reconnects = 0;
    stream.event.connect((_, e) => seen.push(e.seq));
    stream.reconnected.connect(() => reconnects++);
    stream.connect();
    FakeSocket.last.open();
    FakeSocket.last.receive(event('r1', 1, EventType.run_started));
    FakeSocket.last.receive(event('r1', 2, EventType.step_started, 'a'));
    FakeSocket.last.drop(CloseCode.going_away);
    expect(stream.state).toBe('reconnecting');

    jest.advanceTimersByTime(10);
    expect(FakeSocket.last.url).toContain('since=2');
    FakeSocket.last.open();
    FakeSocket.last.receive(event('r1', 2, EventType.step_started, 'a'));
    FakeSocket.last.receive(event('r1', 3, EventType.step_completed, 'a'));
    expect(seen).toEqual([1, 2, 3]);
    expect(reconnects).toBe(1);
    expect(stream.state).toBe('open');
  });

  it('backs off between failed attempts and stops after the run finished', () => {
    const stream = new EventStream('ws/runs/r1/subscribe', 0, { settings, backoff: [10, 100] });
    let finished: number | null = null;
    stream.finished.connect((_, code) => (finished = code));
    stream.connect();
    FakeSocket.last.drop();
    jest.advanceTimersByTime(10);
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last.drop();
    jest.advanceTimersByTime(50);
    expect(FakeSocket.all).toHaveLength(2);
    jest.advanceTimersByTime(50);
    expect(FakeSocket.all).toHaveLength(3);
    FakeSocket.last.open();
    FakeSocket.last.drop(CloseCode.done);
    jest.advanceTimersByTime(1000);
    expect(FakeSocket.all).toHaveLength(3);
    expect(finished).toBe(CloseCode.done);
    expect(stream.state).toBe('closed');
  });

  it('the all-runs stream has no since and forwards every event', () => {
    const stream = new EventStream('ws/runs', null, { settings });
    const seen: string[] = [];
    stream.event.connect((_, e) => seen.push(`${e.run_id}:${e.seq}`));
    stream.connect();
    expect(FakeSocket.last.url).toBe('ws://127.0.0.1:8888/user/test/ws/runs?token=secret');
    FakeSocket.last.open();
    FakeSocket.last.receive(event('a', 1, EventType.run_queued));
    FakeSocket.last.receive(event('b', 1, EventType.run_queued));
    expect(seen).toEqual(['a:1', 'b:1']);
  });

  it('a disposed stream closes its socket and never reconnects', () => {
    const stream = new EventStream('ws/runs', null, { settings, backoff: [10] });
    stream.connect();
    const socket = FakeSocket.last;
    stream.dispose();
    expect(socket.closed).toBe(true);
    jest.advanceTimersByTime(100);
    expect(FakeSocket.all).toHaveLength(1);
  });
});
