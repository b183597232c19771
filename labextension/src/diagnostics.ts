/**
 * Where in the YAML text a server validation problem points, and the CodeMirror lint
 * diagnostics that mark it. A problem names a `line L, column C` (the text does not parse),
 * or a step (its id, or `#N` for the N-th list entry when it has none) and a field path
 * (`with.command`, `retry.max_attempts`), or a top-level field path (`inputs.x.type`). The
 * mark goes on the innermost part that the text has: the field's key, else the step's
 * declaration, else the document's first line. A body that does not parse is refused
 * before validation (400, `where` in its details): that is a problem at its line too.
 */
import type { Diagnostic } from '@codemirror/lint';
import type { Text } from '@codemirror/state';

import type { ApiError } from './api';
import { Problem } from './protocol';

/** A 1-based line and the 0-based columns the mark covers on it. */
export interface Place {
  line: number;
  from: number;
  to: number;
}

/** Lines [start, end) whose keys at `column` are one mapping's. */
interface Scope {
  start: number;
  end: number;
  column: number;
}

const KEY = /^(\s*(?:-\s+)*)(['"]?)([^\s'"#:{}[\],-][^'"#:{}[\],]*?)\2\s*:(?=\s|$)/;

/** The key a line starts (after any `- ` list markers) and its column. */
function keyOf(line: string): { key: string; column: number } | null {
  const match = KEY.exec(line);
  return match ? { key: match[3], column: match[1].length } : null;
}

/** Where the line's content starts; null for blank and comment-only lines. */
function indent(line: string): number | null {
  const column = line.search(/\S/);
  return column < 0 || line[column] === '#' ? null : column;
}

/** The first line at or after `start` whose content starts at or left of `column`. */
function blockEnd(lines: readonly string[], start: number, column: number): number {
  for (let i = start; i < lines.length; i++) {
    const at = indent(lines[i]);
    if (at !== null && at <= column) {
      return i;
    }
  }
  return lines.length;
}

/** The mapping nested under the key on line `at` (at column `column`), if it has lines of its own. */
function childScope(lines: readonly string[], at: number, column: number): Scope | null {
  const end = blockEnd(lines, at + 1, column);
  for (let i = at + 1; i < end; i++) {
    const key = keyOf(lines[i]);
    if (key) {
      return { start: at + 1, end, column: key.column };
    }
  }
  return null;
}

function findKey(lines: readonly string[], scope: Scope, name: string): number | null {
  for (let i = scope.start; i < scope.end; i++) {
    const key = keyOf(lines[i]);
    if (key && key.column === scope.column && key.key === name) {
      return i;
    }
  }
  return null;
}

/** The line of a step's declaration: `id: <step>`, or for `#N` the N-th entry of `steps:`. */
function stepLine(lines: readonly string[], step: string): number | null {
  const entry = /^#(\d+)$/.exec(step);
  if (!entry) {
    const declaration = new RegExp(`^\\s*(-\\s+)?id:\\s*['"]?${escape(step.replace(/\[\d+\]$/, ''))}['"]?\\s*(#.*)?$`);
    const index = lines.findIndex(line => declaration.test(line));
    return index < 0 ? null : index;
  }
  const entries: number[] = [];
  let column: number | null = null;
  for (let i = lines.findIndex(line => /^steps\s*:/.test(line)) + 1; i > 0 && i < lines.length; i++) {
    const at = indent(lines[i]);
    const item = /^\s*-(\s|$)/.test(lines[i]);
    if (at === 0 && !item) {
      break;
    }
    column = column ?? (item ? at : null);
    if (item && at === column) {
      entries.push(i);
    }
  }
  return entries[Number(entry[1]) - 1] ?? null;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The place a problem points at in `lines` (the text split at line breaks). */
export function problemPlace(problem: Problem, lines: readonly string[]): Place {
  const end = (line: number): number => lines[line - 1]?.trimEnd().length ?? 0;
  const explicit = /line (\d+)(?:, column (\d+))?/.exec(problem.loc);
  if (explicit) {
    const line = Math.min(Number(explicit[1]), lines.length);
    const from = Math.min(Number(explicit[2] ?? 1) - 1, end(line));
    return { line, from, to: Math.max(from, end(line)) };
  }
  let scope: Scope | null = { start: 0, end: lines.length, column: 0 };
  let found: { line: number; column: number } | null = null;
  if (problem.step) {
    const at = stepLine(lines, problem.step);
    if (at === null) {
      return { line: 1, from: 0, to: end(1) };
    }
    const column = keyOf(lines[at])?.column ?? indent(lines[at]) ?? 0;
    found = { line: at, column };
    scope = { start: at, end: blockEnd(lines, at + 1, column - 1), column };
  }
  for (const name of (problem.field ?? (problem.step ? '' : problem.loc)).split('.')) {
    if (!name || /^\d+$/.test(name)) {
      continue;
    }
    const at = scope ? findKey(lines, scope, name) : null;
    if (at !== null) {
      found = { line: at, column: keyOf(lines[at])!.column };
      scope = childScope(lines, at, found.column);
      continue;
    }
    // A key in a flow mapping on the line found so far: `with: {command: ...}`.
    const flow = new RegExp(`[{,]\\s*['"]?${escape(name)}['"]?\\s*:`);
    const inline = found ? flow.exec(lines[found.line].slice(found.column)) : null;
    if (!found || !inline) {
      break;
    }
    found = { line: found.line, column: found.column + inline.index + inline[0].search(/[^{,\s]/) };
    scope = null;
  }
  if (!found) {
    return { line: 1, from: 0, to: end(1) };
  }
  return { line: found.line + 1, from: found.column, to: Math.max(found.column, end(found.line + 1)) };
}

/** The lint diagnostics of the server's problems, for the document `doc` they were found in. */
export function problemDiagnostics(problems: readonly Problem[], doc: Text): Diagnostic[] {
  const lines = doc.toJSON();
  return problems.map(problem => {
    const place = problemPlace(problem, lines);
    const line = doc.line(place.line);
    return {
      from: line.from + place.from,
      to: line.from + place.to,
      severity: 'error',
      source: problem.loc,
      message: problem.message
    };
  });
}

/**
 * The problems a refused save reports: a 422's list, or a body that is not YAML at all (a
 * 400 whose details say `where`: `line L, column C`) as one problem at that place.
 */
export function problemsOf(error: ApiError): Problem[] {
  if (error.problems.length) {
    return error.problems;
  }
  const where = error.details?.where;
  return typeof where === 'string' && /^line \d+/.test(where) ? [{ loc: where, message: error.message }] : [];
}
