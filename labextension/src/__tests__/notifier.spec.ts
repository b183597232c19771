import { Notification } from '@jupyterlab/apputils';
import { Signal } from '@lumino/signaling';

import { RunNotifier } from '../notifier';
import { ClarionEvent, EventType } from '../protocol';
import { event } from './builders';

const flush = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 0));

function setUp(notifications = true) {
  const events = new Signal<object, ClarionEvent>({});
  const opened: string[] = [];
  const settings = { notifications };
  const notifier = new RunNotifier(events, async id => `Nightly ${id}`, settings, id => opened.push(id));
  // Lab's manager lists the newest first: oldest first here, as they were told.
  const told = (): Notification.INotification[] =>
    Notification.manager.notifications.filter(n => n.message.startsWith('Clarion')).reverse();
  return { events, opened, settings, notifier, told };
}

describe('RunNotifier', () => {
  beforeEach(() => Notification.dismiss());

  it('tells when a run started here ends, with an action that opens it', async () => {
    const { events, opened, notifier, told } = setUp();
    notifier.watch('r1');
    events.emit(event('r1', 9, EventType.workflow_failed));
    await flush();
    expect(told().map(n => [n.message, n.type])).toEqual([['Clarion: Nightly r1 failed', 'error']]);
    const action = told()[0].options.actions![0];
    expect(action.label).toBe('Open');
    action.callback(new MouseEvent('click'));
    expect(opened).toEqual(['r1']);
  });

  it('tells each approval a run started here waits for, then its end', async () => {
    const { events, notifier, told } = setUp();
    notifier.watch('r1');
    events.emit(event('r1', 3, EventType.approval_requested, 'apply'));
    events.emit(event('r1', 5, EventType.workflow_succeeded));
    await flush();
    expect(told().map(n => n.message)).toEqual([
      'Clarion: Nightly r1 waits for your approval (step apply)',
      'Clarion: Nightly r1 succeeded'
    ]);
  });

  it('says nothing of runs started elsewhere, nor of step events', async () => {
    const { events, notifier, told } = setUp();
    notifier.watch('r1');
    events.emit(event('r2', 4, EventType.workflow_succeeded));
    events.emit(event('r1', 2, EventType.step_completed, 'hello'));
    await flush();
    expect(told()).toEqual([]);
  });

  it('says nothing while the notifications setting is off', async () => {
    const { events, notifier, told } = setUp(false);
    notifier.watch('r1');
    events.emit(event('r1', 4, EventType.workflow_cancelled));
    await flush();
    expect(told()).toEqual([]);
  });

  it('tells the end of a run that ended before the request that started it answered', async () => {
    const { events, notifier, told } = setUp();
    events.emit(event('r1', 3, EventType.approval_requested, 'apply'));
    events.emit(event('r1', 5, EventType.workflow_succeeded));
    await flush();
    expect(told()).toEqual([]);
    notifier.watch('r1');
    await flush();
    expect(told().map(n => n.message)).toEqual([
      'Clarion: Nightly r1 waits for your approval (step apply)',
      'Clarion: Nightly r1 succeeded'
    ]);
  });

  it('forgets the early ends of runs long past, so a later watch of one says nothing', async () => {
    const { events, notifier, told } = setUp();
    for (let i = 0; i < 65; i++) {
      events.emit(event(`r${i}`, 4, EventType.workflow_succeeded));
    }
    notifier.watch('r0');
    notifier.watch('r64');
    await flush();
    expect(told().map(n => n.message)).toEqual(['Clarion: Nightly r64 succeeded']);
  });
});
