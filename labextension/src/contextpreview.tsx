/**
 * What an agent run is about to send, shown before anything is sent: the codebase context's
 * files with their tokens (largest first), the prompt's total, the cap, and what was left out.
 * Paths and reasons are server data: they are rendered as text only.
 */
import * as React from 'react';

import { PreparedPrompt } from './protocol';

const LARGEST = 10;

export function ContextPreview({ prepared }: { prepared: PreparedPrompt }): JSX.Element {
  const context = prepared.context;
  const files = [...(context?.files ?? [])].sort((a, b) => b.tokens - a.tokens);
  const cap = context?.max_tokens ? ` of ${context.max_tokens.toLocaleString()} allowed` : '';
  return (
    <div className="clarion-ContextPreview" aria-label="What is sent">
      <div>
        {files.length} file{files.length === 1 ? '' : 's'}, {(context?.tokens ?? 0).toLocaleString()} tokens{cap};
        the whole prompt is {prepared.tokens.toLocaleString()} tokens for <code>{prepared.model}</code>
      </div>
      {files.length > 0 && (
        <ul className="clarion-Files" aria-label="Context files">
          {files.slice(0, LARGEST).map(f => (
            <li key={f.path}>
              <code>{f.path}</code> <span className="clarion-Muted">{f.tokens.toLocaleString()} tokens</span>
            </li>
          ))}
          {files.length > LARGEST && <li className="clarion-Muted">… and {files.length - LARGEST} more</li>}
        </ul>
      )}
      {(context?.skipped ?? []).slice(0, LARGEST).map(s => (
        <div key={s.path} className="clarion-Muted">
          left out: <code>{s.path}</code> ({s.reason})
        </div>
      ))}
    </div>
  );
}
