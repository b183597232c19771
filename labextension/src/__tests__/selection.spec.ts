import { RunSelection, gestureOf } from '../selection';

/** The Runs list shows the newest run first; ids sort by time. */
const ORDER = ['r5', 'r4', 'r3', 'r2', 'r1'];

describe('RunSelection', () => {
  let selection: RunSelection;
  let changes: number;

  beforeEach(() => {
    selection = new RunSelection();
    changes = 0;
    selection.changed.connect(() => changes++);
  });

  it('selects one run with a plain click, replacing what was selected', () => {
    selection.select('r4', 'only', ORDER);
    selection.select('r2', 'only', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r2']);
    expect(selection.anchor).toBe('r2');
    expect(changes).toBe(2);
  });

  it('adds and removes runs with Ctrl-click', () => {
    selection.select('r4', 'only', ORDER);
    selection.select('r2', 'toggle', ORDER);
    selection.select('r1', 'toggle', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r1', 'r2', 'r4']);
    selection.select('r2', 'toggle', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r1', 'r4']);
    expect(selection.has('r2')).toBe(false);
  });

  it('selects the range from the anchor with Shift-click, either way, keeping the anchor', () => {
    selection.select('r4', 'only', ORDER);
    selection.select('r2', 'range', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r2', 'r3', 'r4']);
    selection.select('r5', 'range', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r4', 'r5']);
    expect(selection.anchor).toBe('r4');
  });

  it('starts a range at the clicked run when there is no anchor, or the anchor is no longer listed', () => {
    selection.select('r3', 'range', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r3']);
    selection.select('r4', 'only', ORDER);
    selection.select('r1', 'range', ['r3', 'r2', 'r1']);
    expect(selection.chosen(ORDER)).toEqual(['r1']);
  });

  it('gives the selected runs the list still shows, oldest first (the comparison base)', () => {
    selection.select('r5', 'only', ORDER);
    selection.select('r2', 'toggle', ORDER);
    expect(selection.chosen(ORDER)).toEqual(['r2', 'r5']);
    expect(selection.chosen(['r5', 'r4'])).toEqual(['r5']); // r2 was deleted or filtered out
  });

  it('clears, and says so only when something was selected', () => {
    selection.clear();
    expect(changes).toBe(0);
    selection.select('r1', 'only', ORDER);
    selection.clear();
    expect(selection.chosen(ORDER)).toEqual([]);
    expect(selection.anchor).toBeNull();
    expect(changes).toBe(2);
  });
});

describe('gestureOf', () => {
  const click = (keys: Partial<Record<'shiftKey' | 'ctrlKey' | 'metaKey', boolean>>) =>
    gestureOf({ shiftKey: false, ctrlKey: false, metaKey: false, ...keys });

  it('reads Shift as a range, Ctrl or Cmd as a toggle, else one run', () => {
    expect(click({})).toBe('only');
    expect(click({ ctrlKey: true })).toBe('toggle');
    expect(click({ metaKey: true })).toBe('toggle');
    expect(click({ shiftKey: true, ctrlKey: true })).toBe('range');
  });
});
