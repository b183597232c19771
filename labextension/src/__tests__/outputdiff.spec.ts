import { dottedPath, outputDiff, sameJson, structuralDiff, wordDiff } from '../outputdiff';

describe('wordDiff', () => {
  it('marks the words removed and added, keeping the equal ones', () => {
    expect(wordDiff('the quick brown fox', 'the slow brown dog jumps')).toEqual([
      { op: 'equal', text: 'the' },
      { op: 'delete', text: 'quick' },
      { op: 'insert', text: 'slow' },
      { op: 'equal', text: 'brown' },
      { op: 'delete', text: 'fox' },
      { op: 'insert', text: 'dog jumps' }
    ]);
  });

  it('finds the common words in the middle, not only at the ends', () => {
    const spans = wordDiff('a b c d e', 'x b c y');
    expect(spans.filter(s => s.op === 'equal').map(s => s.text)).toEqual(['b c']);
    expect(spans.filter(s => s.op === 'delete').map(s => s.text)).toEqual(['a', 'd e']);
    expect(spans.filter(s => s.op === 'insert').map(s => s.text)).toEqual(['x', 'y']);
  });

  it('treats any whitespace as one word break, so a re-wrapped text is equal', () => {
    expect(wordDiff('one  two\nthree', 'one two three')).toEqual([{ op: 'equal', text: 'one two three' }]);
  });

  it('handles an empty side', () => {
    expect(wordDiff('', 'new text')).toEqual([{ op: 'insert', text: 'new text' }]);
    expect(wordDiff('old', '')).toEqual([{ op: 'delete', text: 'old' }]);
  });

  it('shows long texts that share nothing as removed and added whole, without a huge table', () => {
    const a = Array.from({ length: 3000 }, (_, i) => `a${i}`).join(' ');
    const b = Array.from({ length: 3000 }, (_, i) => `b${i}`).join(' ');
    const spans = wordDiff(`same ${a} end`, `same ${b} end`);
    expect(spans.map(s => s.op)).toEqual(['equal', 'delete', 'insert', 'equal']);
  });
});

describe('structuralDiff', () => {
  it('lists the paths added, removed and changed, leaving equal subtrees out', () => {
    const before = { label: 'bug', scores: [1, 2], meta: { by: 'a', old: true } };
    const after = { label: 'feature', scores: [1, 3], meta: { by: 'a' }, extra: null };
    expect(structuralDiff(before, after)).toEqual([
      {
        kind: 'changed',
        path: ['label'],
        before: 'bug',
        after: 'feature',
        words: [
          { op: 'delete', text: 'bug' },
          { op: 'insert', text: 'feature' }
        ]
      },
      { kind: 'changed', path: ['scores', 1], before: 2, after: 3 },
      { kind: 'removed', path: ['meta', 'old'], before: true },
      { kind: 'added', path: ['extra'], after: null }
    ]);
  });

  it('diffs a changed text inside JSON by its words', () => {
    const [change] = structuralDiff({ value: 'hello dear Ada, welcome' }, { value: 'hello dear Grace, welcome' });
    expect(change.words).toEqual([
      { op: 'equal', text: 'hello dear' },
      { op: 'delete', text: 'Ada,' },
      { op: 'insert', text: 'Grace,' },
      { op: 'equal', text: 'welcome' }
    ]);
  });

  it('compares lists of other lengths whole', () => {
    expect(structuralDiff({ a: [1] }, { a: [1, 2] })).toEqual([{ kind: 'changed', path: ['a'], before: [1], after: [1, 2] }]);
  });

  it('names paths as the notebook widget does', () => {
    expect(dottedPath(['steps', 0, 'output'])).toBe('steps[0].output');
    expect(dottedPath([])).toBe('');
  });

  it('finds no difference in key order', () => {
    expect(sameJson({ a: 1, b: [{ c: 2, d: 3 }] }, { b: [{ d: 3, c: 2 }], a: 1 })).toBe(true);
    expect(structuralDiff({ a: 1, b: 2 }, { b: 2, a: 1 })).toEqual([]);
  });
});

describe('outputDiff', () => {
  it('diffs an LLM output by the words of its text, and its other fields by path', () => {
    const base = { text: 'The answer is bug.', model: 'openai/a', usage: { prompt_tokens: 5 } };
    const other = { text: 'The answer is feature.', model: 'openai/b', usage: { prompt_tokens: 5 } };
    const diff = outputDiff(base, other);
    expect(diff.same).toBe(false);
    expect(diff.words).toEqual([
      { op: 'equal', text: 'The answer is' },
      { op: 'delete', text: 'bug.' },
      { op: 'insert', text: 'feature.' }
    ]);
    expect(diff.changes.map(c => [c.kind, c.path, c.before, c.after])).toEqual([['changed', ['model'], 'openai/a', 'openai/b']]);
  });

  it('diffs plain strings by their words', () => {
    expect(outputDiff('a b', 'a c').words).toEqual([
      { op: 'equal', text: 'a' },
      { op: 'delete', text: 'b' },
      { op: 'insert', text: 'c' }
    ]);
  });

  it('diffs any other JSON structurally', () => {
    const diff = outputDiff({ value: { n: 1 } }, { value: { n: 2 } });
    expect(diff.words).toBeNull();
    expect(diff.changes).toEqual([{ kind: 'changed', path: ['value', 'n'], before: 1, after: 2 }]);
  });

  it("leaves out the time a task measured itself (a shell step's duration_ms)", () => {
    const diff = outputDiff({ stdout: 'a\n', duration_ms: 4 }, { stdout: 'b\n', duration_ms: 9 });
    expect(diff.changes.map(c => [c.path, c.before, c.after])).toEqual([[['stdout'], 'a\n', 'b\n']]);
    expect(outputDiff({ stdout: 'a', duration_ms: 4 }, { stdout: 'a', duration_ms: 9 }).same).toBe(true);
  });

  it('says when the outputs are the same', () => {
    expect(outputDiff({ value: 1 }, { value: 1 })).toEqual({ same: true, words: null, changes: [] });
  });
});
