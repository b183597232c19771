/**
 * The v3 REST API, through JupyterLab's own `ServerConnection`: the token, the XSRF cookie
 * and the base URL are handled exactly as Lab handles them for its own requests.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  Agent,
  AgentRunRequest,
  PreparedPrompt,
  ClarionEvent,
  ImportReport,
  Problem,
  RerunRequest,
  RunComparison,
  RunStatus,
  WorkflowDocument,
  WorkflowRun
} from './protocol';

/** An answer of the API that is not a success, with the API's own error document. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: any = null
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The validation problems of a 422 (each with `loc` and `message`). */
  get problems(): Problem[] {
    return Array.isArray(this.details) ? this.details : [];
  }

  /** Jupyter answers unknown paths itself: the Clarion server extension is not enabled. */
  get extensionMissing(): boolean {
    return this.status === 404 && this.code === 'jupyter_404';
  }
}

export interface RunsQuery {
  status?: RunStatus | string;
  workflow_id?: string;
  limit?: number;
  cursor?: string | null;
}

export interface RunsPage {
  runs: WorkflowRun[];
  next_cursor: string | null;
}

export interface Health {
  status: string;
  version: string;
  [key: string]: any;
}

type Body = { json: unknown } | { text: string; type: string } | { blob: Blob; type: string };

export class ClarionApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** `path` below `/api/v3/`; the answer as JSON (null for 204). */
  async request<T>(method: string, path: string, body?: Body): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'api/v3', path);
    const init: RequestInit = { method };
    if (body !== undefined) {
      if ('json' in body) {
        init.body = JSON.stringify(body.json);
        init.headers = { 'Content-Type': 'application/json' };
      } else {
        init.body = 'text' in body ? body.text : body.blob;
        init.headers = { 'Content-Type': body.type };
      }
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ApiError(0, 'network', `cannot reach the Jupyter server: ${(error as Error).message}`);
    }
    if (response.status === 204) {
      return null as T;
    }
    const text = await response.text();
    let doc: any = null;
    try {
      doc = text ? JSON.parse(text) : null;
    } catch {
      doc = null;
    }
    if (!response.ok) {
      throw errorOf(response.status, doc);
    }
    return doc as T;
  }

  health(): Promise<Health> {
    return this.request('GET', 'health');
  }

  async listWorkflows(): Promise<WorkflowDocument[]> {
    return (await this.request<{ workflows: WorkflowDocument[] }>('GET', 'workflows')).workflows;
  }

  getWorkflow(id: string): Promise<WorkflowDocument> {
    return this.request('GET', `workflows/${encodeURIComponent(id)}`);
  }

  /** Replaces a workflow with YAML text; a 422 carries every problem in `ApiError.problems`. */
  saveWorkflowYaml(id: string, yaml: string): Promise<WorkflowDocument> {
    return this.request('PUT', `workflows/${encodeURIComponent(id)}`, { text: yaml, type: 'application/yaml' });
  }

  /** Creates a workflow from YAML text (409 when the id is taken); a 422 carries every problem. */
  createWorkflowYaml(yaml: string): Promise<WorkflowDocument> {
    return this.request('POST', 'workflows', { text: yaml, type: 'application/yaml' });
  }

  deleteWorkflow(id: string): Promise<null> {
    return this.request('DELETE', `workflows/${encodeURIComponent(id)}`);
  }

  runWorkflow(id: string, inputs: Record<string, unknown>): Promise<{ run_id: string; status: string }> {
    return this.request('POST', `workflows/${encodeURIComponent(id)}/run`, { json: { inputs } });
  }

  listRuns(query: RunsQuery = {}): Promise<RunsPage> {
    return this.request('GET', `runs${queryString(query)}`);
  }

  getRun(runId: string): Promise<WorkflowRun> {
    return this.request('GET', `runs/${encodeURIComponent(runId)}`);
  }

  /** A finished run, with its steps and events (409 while it has not finished). */
  deleteRun(runId: string): Promise<null> {
    return this.request('DELETE', `runs/${encodeURIComponent(runId)}`);
  }

  /** The finished runs `filter` selects; every finished run only with an empty filter. */
  async deleteRuns(filter: { workflow_id?: string; status?: string }): Promise<number> {
    const query = queryString({ ...filter, all: filter.workflow_id || filter.status ? undefined : 'true' });
    return (await this.request<{ deleted: number }>('DELETE', `runs${query}`)).deleted;
  }

  async events(runId: string, since: number): Promise<ClarionEvent[]> {
    return (await this.request<{ events: ClarionEvent[] }>('GET', `runs/${encodeURIComponent(runId)}/events?since=${since}`))
      .events;
  }

  cancel(runId: string): Promise<{ run_id: string }> {
    return this.request('POST', `runs/${encodeURIComponent(runId)}/cancel`);
  }

  /** A new run of a finished one with changes; the steps no change reaches are copied (202, the new run). */
  rerun(runId: string, request: RerunRequest = {}): Promise<WorkflowRun> {
    return this.request('POST', `runs/${encodeURIComponent(runId)}/rerun`, { json: request });
  }

  /** Two or more runs side by side, step by step. */
  compare(runIds: readonly string[]): Promise<RunComparison> {
    return this.request('GET', `runs/compare${queryString({ ids: runIds.join(',') })}`);
  }

  decide(runId: string, stepKey: string, decision: 'approve' | 'reject', comment?: string): Promise<unknown> {
    const body: Record<string, string> = { decision };
    if (comment) {
      body.comment = comment;
    }
    return this.request('POST', `runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(stepKey)}`, {
      json: body
    });
  }

  async listAgents(): Promise<Agent[]> {
    return (await this.request<{ agents: Agent[] }>('GET', 'agents')).agents;
  }

  getAgent(id: string): Promise<Agent> {
    return this.request('GET', `agents/${encodeURIComponent(id)}`);
  }

  /** Replaces an agent with YAML text (its id is the path's); a 422 carries every problem. */
  saveAgentYaml(id: string, yaml: string): Promise<Agent> {
    return this.request('PUT', `agents/${encodeURIComponent(id)}`, { text: yaml, type: 'application/yaml' });
  }

  /** Creates an agent from YAML text (409 when its id is taken); a 422 carries every problem. */
  createAgentYaml(yaml: string): Promise<Agent> {
    return this.request('POST', 'agents', { text: yaml, type: 'application/yaml' });
  }

  /**
   * May this user change Clarion's agents and workflows? Jupyter's `GET /api/me` answers for
   * the server's authorizer; true when it cannot say (a save then answers for itself).
   */
  async canWrite(): Promise<boolean> {
    const query = encodeURIComponent(JSON.stringify({ clarion: ['write'] }));
    const url = URLExt.join(this.settings.baseUrl, 'api/me') + `?permissions=${query}`;
    try {
      const response = await ServerConnection.makeRequest(url, {}, this.settings);
      const granted = (await response.json())?.permissions?.clarion;
      return !response.ok || !Array.isArray(granted) || granted.includes('write');
    } catch {
      return true;
    }
  }

  /**
   * Clarion v2 agent files: YAML and JSON documents go as text, a `clarion.db` (SQLite)
   * as `application/octet-stream`.
   */
  importAgents(file: Blob, name: string): Promise<ImportReport> {
    return this.request('POST', 'agents/import', { blob: file, type: importType(name) });
  }

  /** The exact prompt an agent run would send, its files and tokens; no model is called. */
  promptAgent(agentId: string, request: Omit<AgentRunRequest, 'apply'>): Promise<PreparedPrompt> {
    return this.request('POST', `agents/${encodeURIComponent(agentId)}/prompt`, { json: request });
  }

  runAgent(agentId: string, request: AgentRunRequest): Promise<{ run_id: string }> {
    return this.request('POST', `agents/${encodeURIComponent(agentId)}/run`, { json: request });
  }
}

/** `?a=1&b=2` of the parameters that have a value ('' when none has). */
function queryString(query: object): string {
  const params: string[] = [];
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') {
      params.push(`${name}=${encodeURIComponent(String(value))}`);
    }
  }
  return params.length ? `?${params.join('&')}` : '';
}

export function importType(name: string): string {
  const lower = name.toLowerCase();
  if (lower.endsWith('.json')) {
    return 'application/json';
  }
  if (lower.endsWith('.yml') || lower.endsWith('.yaml')) {
    return 'application/yaml';
  }
  return 'application/octet-stream';
}

function errorOf(status: number, doc: any): ApiError {
  const error = doc?.error;
  if (error && typeof error.message === 'string') {
    return new ApiError(status, String(error.code ?? 'error'), error.message, error.details ?? null);
  }
  if (status === 404) {
    return new ApiError(
      404,
      'jupyter_404',
      'The Clarion server extension is not enabled on this Jupyter server (the v3 API answers 404): ' +
        'install clarion_jupyter in the environment that runs the server, then restart it.'
    );
  }
  const message = typeof doc?.message === 'string' ? doc.message : `the server answered ${status}`;
  return new ApiError(status, status === 403 ? 'forbidden' : 'http_error', message);
}
