/**
 * How one run's step output differs from the base run's, as the notebook's compare widget
 * shows it (`clarion_jupyter/notebook/comparison.py`): text as a word-level diff, JSON as a
 * structural one (the paths added, removed or changed, equal subtrees left out; a changed
 * text by its words). An LLM
 * step's output (`{text, usage, model, ...}`) reads best as its text's words, with its other
 * fields' changes beside.
 */
import { JSONValue } from './protocol';

export type WordOp = 'equal' | 'insert' | 'delete';

export interface WordSpan {
  op: WordOp;
  text: string;
}

export type JsonPath = (string | number)[];

export interface JsonChange {
  kind: 'added' | 'removed' | 'changed';
  path: JsonPath;
  /** The value it had (removed, changed). */
  before?: JSONValue;
  /** The value it has (added, changed). */
  after?: JSONValue;
  /** A changed text (both values strings): its word diff. */
  words?: WordSpan[];
}

export interface OutputDiff {
  same: boolean;
  /** The word diff of the texts, when both outputs are (or hold) text; else null. */
  words: WordSpan[] | null;
  /** The other changes, by JSON path. */
  changes: JsonChange[];
}

/**
 * Above this many word pairs the words between the common start and end are shown as removed
 * and added whole: the table of a longest common subsequence grows with their product.
 */
const MAX_CELLS = 4_000_000;

/** `after` against `before`, word by word: the removed words of a change come before the added ones. */
export function wordDiff(before: string, after: string): WordSpan[] {
  const a = words(before);
  const b = words(after);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) {
    start++;
  }
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) {
    end++;
  }
  const ops: [WordOp, string][] = a.slice(0, start).map(w => ['equal', w] as [WordOp, string]);
  ops.push(...middle(a.slice(start, a.length - end), b.slice(start, b.length - end)));
  ops.push(...a.slice(a.length - end).map(w => ['equal', w] as [WordOp, string]));
  return spans(ops);
}

function words(text: string): string[] {
  return text.split(/\s+/).filter(word => word.length > 0);
}

/** The ops between the common start and end: a longest common subsequence when it is affordable. */
function middle(a: string[], b: string[]): [WordOp, string][] {
  const removed = a.map(w => ['delete', w] as [WordOp, string]);
  const added = b.map(w => ['insert', w] as [WordOp, string]);
  if (a.length === 0 || b.length === 0 || a.length * b.length > MAX_CELLS) {
    return [...removed, ...added];
  }
  const width = b.length + 1;
  const lcs = new Uint32Array((a.length + 1) * width);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i * width + j] =
        a[i] === b[j] ? lcs[(i + 1) * width + j + 1] + 1 : Math.max(lcs[(i + 1) * width + j], lcs[i * width + j + 1]);
    }
  }
  const ops: [WordOp, string][] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      ops.push(['equal', a[i++]]);
      j++;
    } else if (lcs[(i + 1) * width + j] >= lcs[i * width + j + 1]) {
      ops.push(['delete', a[i++]]);
    } else {
      ops.push(['insert', b[j++]]);
    }
  }
  return [...ops, ...removed.slice(i), ...added.slice(j)];
}

/** Runs of one op joined into spans; in each run of changes, what was removed, then what was added. */
function spans(ops: [WordOp, string][]): WordSpan[] {
  const result: WordSpan[] = [];
  const push = (op: WordOp, list: string[]): void => {
    if (list.length) {
      result.push({ op, text: list.join(' ') });
    }
  };
  let index = 0;
  while (index < ops.length) {
    const equal: string[] = [];
    while (index < ops.length && ops[index][0] === 'equal') {
      equal.push(ops[index++][1]);
    }
    push('equal', equal);
    const removed: string[] = [];
    const added: string[] = [];
    while (index < ops.length && ops[index][0] !== 'equal') {
      (ops[index][0] === 'delete' ? removed : added).push(ops[index++][1]);
    }
    push('delete', removed);
    push('insert', added);
  }
  return result;
}

function isObject(value: JSONValue): value is Record<string, JSONValue> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Equal as JSON: key order is no difference. */
export function sameJson(a: JSONValue, b: JSONValue): boolean {
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every(k => k in b && sameJson(a[k], b[k]));
  }
  return a === b || (a === undefined && b === null) || (a === null && b === undefined);
}

/** Each place two JSON values differ; objects by key, lists of one length by index, anything else whole. */
export function structuralDiff(before: JSONValue, after: JSONValue, path: JsonPath = []): JsonChange[] {
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    return keys.flatMap(key =>
      !(key in after)
        ? [{ kind: 'removed' as const, path: [...path, key], before: before[key] }]
        : !(key in before)
          ? [{ kind: 'added' as const, path: [...path, key], after: after[key] }]
          : structuralDiff(before[key], after[key], [...path, key])
    );
  }
  if (Array.isArray(before) && Array.isArray(after) && before.length === after.length) {
    return before.flatMap((item, index) => structuralDiff(item, after[index], [...path, index]));
  }
  if (sameJson(before, after)) {
    return [];
  }
  const change: JsonChange = { kind: 'changed', path, before, after };
  if (typeof before === 'string' && typeof after === 'string') {
    change.words = wordDiff(before, after);
  }
  return [change];
}

/** `a.b[0].c`; '' for the value itself. */
export function dottedPath(path: JsonPath): string {
  return path.map(p => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '');
}

/** The text of an output that is text, or an LLM step's (`{text: ...}`); else null. */
export function textOf(value: JSONValue): string | null {
  if (typeof value === 'string') {
    return value;
  }
  return isObject(value) && typeof value.text === 'string' ? value.text : null;
}

/** Output keys that measure a run rather than say what it produced (`shell` reports its time): no difference. */
const MEASURED: ReadonlySet<string> = new Set(['duration_ms']);

function produced(value: JSONValue): JSONValue {
  return isObject(value) ? Object.fromEntries(Object.entries(value).filter(([key]) => !MEASURED.has(key))) : value;
}

/** `other` against `base`, as the server marks a step that differs: what a task measured is left out. */
export function outputDiff(baseOutput: JSONValue, otherOutput: JSONValue): OutputDiff {
  const base = produced(baseOutput);
  const other = produced(otherOutput);
  if (sameJson(base, other)) {
    return { same: true, words: null, changes: [] };
  }
  const texts = [textOf(base), textOf(other)];
  if (texts[0] === null || texts[1] === null) {
    return { same: false, words: null, changes: structuralDiff(base, other) };
  }
  const rest = (value: JSONValue): JSONValue => {
    if (!isObject(value)) {
      return {};
    }
    const { text: _text, ...others } = value;
    return others;
  };
  return { same: false, words: wordDiff(texts[0], texts[1]), changes: structuralDiff(rest(base), rest(other)) };
}
