/**
 * An agent edited as YAML in a main-area tab, like a workflow: `PUT /api/v3/agents/{id}` saves
 * it (`POST /api/v3/agents` for a new one, which then becomes that agent's editor).
 */
import { IEditorServices } from '@jupyterlab/codeeditor';

import { NEW_AGENT_YAML, V2_NOTICE, agentYaml, importedFromV2 } from './agentdoc';
import { ClarionApi } from './api';
import { NO_WRITE_PERMISSION, YamlEditor } from './editor';
import { Agent } from './protocol';

let unsaved = 0;

export class AgentEditor extends YamlEditor {
  private _agentId: string | null;

  /** `agent` null: a new agent, created by its first save. */
  constructor(
    readonly api: ClarionApi,
    agent: Agent | null,
    services: IEditorServices,
    canWrite = true
  ) {
    super({
      id: agent ? `clarion-agent-${agent.id}` : `clarion-agent-new-${++unsaved}`,
      label: agent ? `${agent.id}.agent.yaml` : 'new.agent.yaml',
      caption: agent ? `Agent ${agent.name} (saved through the Clarion API)` : 'A new agent (not saved yet)',
      className: 'clarion-AgentEditor',
      text: agent ? agentYaml(agent) : NEW_AGENT_YAML,
      services,
      readOnly: canWrite ? null : NO_WRITE_PERMISSION,
      notice: agent && importedFromV2(agent) ? V2_NOTICE : null
    });
    this._agentId = agent?.id ?? null;
  }

  /** The agent's id; null until a new agent is first saved. */
  get agentId(): string | null {
    return this._agentId;
  }

  protected async store(text: string): Promise<void> {
    if (this._agentId !== null) {
      await this.api.saveAgentYaml(this._agentId, text);
      return;
    }
    const created = await this.api.createAgentYaml(text);
    this._agentId = created.id;
    this.title.label = `${created.id}.agent.yaml`;
    this.title.caption = `Agent ${created.name} (saved through the Clarion API)`;
  }
}
