/**
 * The v3 protocol's fixed vocabulary, mirrored from `clarion_jupyter/core/protocol.py`
 * (tests/test_labextension_protocol.py keeps the two equal), and the API's documents.
 */

export enum RunStatus {
  queued = 'queued',
  running = 'running',
  waiting = 'waiting',
  succeeded = 'succeeded',
  failed = 'failed',
  cancelled = 'cancelled'
}

export enum StepStatus {
  pending = 'pending',
  waiting = 'waiting',
  running = 'running',
  retrying = 'retrying',
  succeeded = 'succeeded',
  failed = 'failed',
  skipped = 'skipped',
  cancelled = 'cancelled'
}

export enum EventType {
  run_queued = 'run_queued',
  run_started = 'run_started',
  step_started = 'step_started',
  step_retrying = 'step_retrying',
  step_completed = 'step_completed',
  step_failed = 'step_failed',
  step_skipped = 'step_skipped',
  step_cancelled = 'step_cancelled',
  llm_token = 'llm_token',
  approval_requested = 'approval_requested',
  approval_granted = 'approval_granted',
  approval_rejected = 'approval_rejected',
  workflow_succeeded = 'workflow_succeeded',
  workflow_failed = 'workflow_failed',
  workflow_cancelled = 'workflow_cancelled'
}

export enum CloseCode {
  done = 1000,
  going_away = 1001,
  internal_error = 1011,
  overflow = 4008,
  not_found = 4404
}

export const TERMINAL_RUN: ReadonlySet<string> = new Set([
  RunStatus.succeeded,
  RunStatus.failed,
  RunStatus.cancelled
]);

export const TERMINAL_EVENTS: Readonly<Record<string, RunStatus>> = {
  [EventType.workflow_succeeded]: RunStatus.succeeded,
  [EventType.workflow_failed]: RunStatus.failed,
  [EventType.workflow_cancelled]: RunStatus.cancelled
};

export type JSONValue = any;

export interface ClarionEvent {
  seq: number;
  type: EventType | string;
  run_id: string;
  step_id: string | null;
  ts: string;
  data: Record<string, any>;
}

export interface RunError {
  code: string;
  message: string;
  [key: string]: any;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number | null;
}

export interface StepRun {
  key: string;
  step_id: string;
  item_index: number | null;
  attempt: number;
  status: StepStatus | string;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  output: JSONValue;
  error: RunError | null;
  usage: Usage | null;
  /** A re-run copied this step's output from its parent run: no task was called. */
  reused_from?: { run_id: string; attempt: number } | null;
}

export interface Approval {
  step_key: string;
  preview: JSONValue;
  message: string | null;
  requested_at: string;
}

export interface WorkflowRun {
  run_id: string;
  workflow_id: string;
  workflow_name: string;
  status: RunStatus | string;
  inputs: Record<string, JSONValue>;
  outputs: Record<string, JSONValue> | null;
  error: RunError | null;
  idempotency_key?: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  usage: Usage;
  last_seq: number;
  /** The workflow as this run ran it: in the document of one run, not in lists. */
  workflow?: WorkflowDocument | null;
  steps: StepRun[];
  approvals?: Approval[];
  /** With a budget: its limits, what settled LLM calls spent and what calls in flight hold. */
  budget?: RunBudget | null;
  /** A re-run's: the run it was made from (`POST /api/v3/runs/{id}/rerun`). */
  parent_run_id?: string | null;
  /** A re-run's: what differs from its parent. */
  changes?: RunChanges | null;
}

/** A run's cost budget (`budget:` in the workflow or per run) and what it has spent. */
export interface RunBudget {
  usd: number | null;
  tokens: number | null;
  unpriced: 'refuse' | 'allow';
  spent_usd: number;
  spent_tokens: number;
  reserved_usd: number;
  reserved_tokens: number;
  unpriced_calls: number;
}

/** What a re-run changed from its parent, as the engine records it (keys only when set). */
export interface RunChanges {
  from_step?: string | null;
  inputs?: Record<string, { from: JSONValue; to: JSONValue }>;
  overrides?: RerunOverrides;
}

export interface AgentOverride {
  model?: string;
  system_prompt?: string;
  parameters?: Record<string, JSONValue>;
}

export interface RerunOverrides {
  agents?: Record<string, AgentOverride>;
  steps?: Record<string, { with: Record<string, JSONValue> }>;
}

/** The body of `POST /api/v3/runs/{id}/rerun`: inputs are those that differ from the parent's. */
export interface RerunRequest {
  from_step?: string;
  inputs?: Record<string, JSONValue>;
  overrides?: RerunOverrides;
}

/** One step of one run in a comparison; every field null where the run has no such step. */
export interface StepInRun {
  status: StepStatus | string | null;
  duration_ms: number | null;
  attempts: number | null;
  tokens: number | null;
  cost_usd: number | null;
  output: JSONValue;
  reused_from?: { run_id: string; attempt: number } | null;
}

export interface ComparedStep {
  key: string;
  differs: boolean;
  /** In the order of the comparison's `runs`. */
  per_run: StepInRun[];
}

export interface ComparedRun {
  run_id: string;
  workflow_id: string;
  status: RunStatus | string;
  inputs: Record<string, JSONValue>;
  parent_run_id: string | null;
  changes: RunChanges | null;
  totals: { duration_ms: number | null; steps: number; tokens: number; cost_usd: number | null };
}

/** `GET /api/v3/runs/compare?ids=A,B[,...]`. */
export interface RunComparison {
  runs: ComparedRun[];
  steps: ComparedStep[];
}

export interface InputSpec {
  type?: 'string' | 'number' | 'integer' | 'boolean' | 'array' | 'object';
  default?: JSONValue;
  description?: string | null;
}

export interface StepDoc {
  id: string;
  task: string;
  name?: string | null;
  with?: Record<string, JSONValue>;
  needs?: string[] | null;
  if?: string | boolean | null;
  for_each?: JSONValue;
  approval?: JSONValue;
}

export interface ParallelDoc {
  parallel: StepDoc[];
}

export interface WorkflowDocument {
  id: string;
  name: string;
  description?: string | null;
  inputs?: Record<string, InputSpec>;
  steps: (StepDoc | ParallelDoc)[];
  outputs?: Record<string, JSONValue>;
  source?: string;
  created_at?: string;
  updated_at?: string;
}

export interface UserVariable {
  name: string;
  description?: string | null;
  required?: boolean;
  default?: JSONValue;
}

export interface Agent {
  id: string;
  name: string;
  description: string | null;
  model: string;
  system_prompt: string;
  parameters: Record<string, JSONValue>;
  user_variables: UserVariable[];
  api_key_env: string | null;
  [key: string]: any;
}

export interface ImportProblem {
  source: string;
  message: string;
}

export interface ImportReport {
  agents: Agent[];
  errors: ImportProblem[];
  warnings: ImportProblem[];
  dry_run?: boolean;
  changes?: { id: string; action: string; model: string; fields: string[] }[];
  /** The environment variables the imported agents read their key from (keys are never imported). */
  api_keys?: { env: string; agents: string[]; set: boolean }[];
  /** v2's run history, when a clarion.db was imported. */
  runs?: { workflow_id: string; found: number; imported: number; already_imported: number };
}

export interface Problem {
  loc: string;
  message: string;
  step?: string;
  field?: string;
}

export type ApplyMode = 'review' | 'auto' | 'never';

/** `POST /api/v3/agents/{id}/prompt`: what an agent run would send, counted before it is sent. */
export interface PreparedPrompt {
  agent_id: string;
  model: string;
  tokens: number;
  context: {
    files: { path: string; bytes: number; tokens: number }[];
    skipped: { path: string; reason: string }[];
    tokens: number;
    max_tokens: number | null;
    problem: string | null;
  } | null;
}

export interface AgentRunRequest {
  prompt: string;
  variables: Record<string, string>;
  files: string[];
  apply: ApplyMode;
}
