/**
 * An agent as the YAML a person edits: its fields in the order people think of them (who it
 * is, which model and where the key comes from, what it is told, what it sees, what it
 * answers), every field shown even when empty so that each one can be filled in, and what a
 * Clarion v2 import kept verbatim (`extra`) last, under a comment saying what it is. The id
 * is the tab's, not the text's: a save replaces the agent it was opened from.
 */
import { dump } from 'js-yaml';

import { Agent } from './protocol';

/** The fields in the order the text shows them; any the model gains later follow them. */
const ORDER = [
  'name',
  'description',
  'model',
  'api_base',
  'api_key_env',
  'system_prompt',
  'parameters',
  'context',
  'output_schema',
  'user_variables'
];

/** Never folded: a long system prompt stays one line as it was written. */
const DUMP = { lineWidth: -1, noRefs: true };

const KEY_NOTE =
  '# api_key_env is the NAME of the environment variable that holds the key where the Jupyter\n' +
  '# server runs (e.g. OPENAI_API_KEY); a key itself is never stored, and is refused here.\n';

export const EXTRA_NOTE = '# Kept as Clarion v2 wrote it: fields v3 does not use, saved back unchanged.\n';

export const V2_NOTICE =
  'Imported from Clarion v2: its globs keep the meaning they had in v2 (context.glob_syntax: v2) and ' +
  'extra keeps the v2 fields v3 does not use. Importing this agent from v2 again replaces what you save here.';

/** The agent as the editor's text. */
export function agentYaml(agent: Agent): string {
  const { id, extra, ...fields } = agent;
  const ordered: Record<string, unknown> = {};
  for (const key of ORDER) {
    ordered[key] = fields[key] ?? null;
  }
  for (const [key, value] of Object.entries(fields)) {
    if (!(key in ordered)) {
      ordered[key] = value;
    }
  }
  const head = `# Agent "${agent.name}" (${id}). Save (Ctrl+S) has the server check it, then stores it.\n`;
  const text = head + KEY_NOTE + dump(ordered, DUMP);
  const kept = extra && typeof extra === 'object' && Object.keys(extra).length > 0;
  return kept ? `${text}\n${EXTRA_NOTE}${dump({ extra }, DUMP)}` : text;
}

/** The text a new agent starts from: what every agent needs, with the usual choices. */
export const NEW_AGENT_YAML = `# A new agent: fill it in, then save (Ctrl+S). Its id is made from the name unless you add one (id: my-agent).
${KEY_NOTE}name: New agent
description: null
model: openai/gpt-4o-mini
api_base: null
api_key_env: OPENAI_API_KEY
system_prompt: |
  You are a careful assistant.
parameters:
  temperature: 0.2
context: null
output_schema: null
user_variables: []
`;

/** An agent imported from Clarion v2: it reads its globs as v2 did, or kept fields v3 does not use. */
export function importedFromV2(agent: Agent): boolean {
  const extra = agent.extra;
  return agent.context?.glob_syntax === 'v2' || (!!extra && typeof extra === 'object' && Object.keys(extra).length > 0);
}
