/**
 * What a waiting step shows for review. A `file_write` preview is a unified diff per file
 * (create, modify or delete); anything else (a shell command, a resolved config) as JSON.
 */
import * as React from 'react';

import { Json } from './common';

export interface FileDiff {
  path: string;
  action: string;
  diff: string;
}

/** The per-file diffs in a preview, in whichever of the shapes it comes: none if it has none. */
export function fileDiffs(preview: any): FileDiff[] {
  if (typeof preview === 'string') {
    return looksLikeDiff(preview) ? splitUnified(preview) : [];
  }
  if (!preview || typeof preview !== 'object') {
    return [];
  }
  const list = Array.isArray(preview) ? preview : (preview.files ?? preview.changes ?? preview.diffs);
  if (Array.isArray(list)) {
    return list
      .filter(item => item && typeof item === 'object' && typeof (item.diff ?? item.patch) === 'string')
      .map(item => ({ path: String(item.path ?? ''), action: String(item.action ?? 'modify'), diff: item.diff ?? item.patch }));
  }
  if (typeof preview.diff === 'string') {
    return splitUnified(preview.diff);
  }
  return [];
}

function looksLikeDiff(text: string): boolean {
  return /^(---|\+\+\+|@@) /m.test(text);
}

/** One unified diff holding several files, split at its `--- ` / `+++ ` headers. */
export function splitUnified(text: string): FileDiff[] {
  const files: FileDiff[] = [];
  let current: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].startsWith('--- ') && lines[i + 1]?.startsWith('+++ ') && current.some(l => l.startsWith('@@'))) {
      files.push(fromLines(current));
      current = [];
    }
    current.push(lines[i]);
  }
  if (current.length) {
    files.push(fromLines(current));
  }
  return files;
}

function fromLines(lines: string[]): FileDiff {
  const old = lines.find(l => l.startsWith('--- '))?.slice(4).trim() ?? '';
  const now = lines.find(l => l.startsWith('+++ '))?.slice(4).trim() ?? '';
  const strip = (p: string): string => p.replace(/^[ab]\//, '').split('\t')[0];
  const action = old === '/dev/null' ? 'create' : now === '/dev/null' ? 'delete' : 'modify';
  return { path: strip(action === 'create' ? now : action === 'delete' ? old : now), action, diff: lines.join('\n') };
}

export function DiffView({ preview }: { preview: any }): JSX.Element {
  const files = fileDiffs(preview);
  if (files.length === 0) {
    return <Json value={preview} />;
  }
  return (
    <div className="clarion-Diff">
      {files.map((file, index) => (
        <div className="clarion-DiffFile" key={`${file.path}-${index}`}>
          <div className="clarion-DiffHeader">
            <span className={`clarion-DiffAction clarion-DiffAction-${file.action}`}>{file.action}</span>
            <span className="clarion-DiffPath">{file.path}</span>
          </div>
          <pre className="clarion-DiffBody">
            {file.diff.split('\n').map((line, i) => (
              <div key={i} className={lineClass(line)}>
                {line || ' '}
              </div>
            ))}
          </pre>
        </div>
      ))}
    </div>
  );
}

function lineClass(line: string): string {
  if (line.startsWith('+++') || line.startsWith('---')) {
    return 'clarion-DiffLine clarion-DiffMeta';
  }
  if (line.startsWith('@@')) {
    return 'clarion-DiffLine clarion-DiffHunk';
  }
  if (line.startsWith('+')) {
    return 'clarion-DiffLine clarion-DiffAdd';
  }
  if (line.startsWith('-')) {
    return 'clarion-DiffLine clarion-DiffDel';
  }
  return 'clarion-DiffLine';
}
