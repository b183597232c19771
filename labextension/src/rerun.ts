/**
 * Re-running a finished run with changes, as the sidebar offers it: which agents a run's
 * steps use (each gets a model field), the Re-run with… form's state and the request it makes
 * (only what differs from the parent: the server reuses every step no change reaches), and a
 * re-run's recorded changes in words.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { sameJson } from './outputdiff';
import { Agent, InputSpec, JSONValue, RerunRequest, RunChanges, StepDoc, WorkflowRun } from './protocol';
import { inputText, parseInput } from './inputvalue';

const INPUT_TEMPLATE = /^\s*{{\s*inputs\.([A-Za-z_]\w*)\s*}}\s*$/;

function stepsOf(run: WorkflowRun): StepDoc[] {
  return (run.workflow?.steps ?? []).flatMap(entry => ('parallel' in entry ? entry.parallel : [entry]));
}

/**
 * The agents this run's steps asked for, in the workflow's order: a step's `with.agent`, or the
 * input it names as `{{ inputs.x }}` (as an agent run names its agent), as the engine reads them
 * to accept an override. Agents chosen by another step's output are known only as the run goes.
 */
export function agentsOf(run: WorkflowRun): string[] {
  const found: string[] = [];
  for (const step of stepsOf(run)) {
    const agent = step.with?.agent;
    if (typeof agent !== 'string') {
      continue;
    }
    const named = INPUT_TEMPLATE.exec(agent);
    const id = named ? run.inputs[named[1]] : agent.includes('{') ? null : agent;
    if (typeof id === 'string' && id && !found.includes(id)) {
      found.push(id);
    }
  }
  return found;
}

/** The model `agentId` ran with in `run`: its override there, else the saved agent's ('' when unknown). */
export function modelOf(run: WorkflowRun, agentId: string, agents: readonly Agent[] | null): string {
  return run.changes?.overrides?.agents?.[agentId]?.model ?? agents?.find(a => a.id === agentId)?.model ?? '';
}

/** The inputs a run's workflow declares (a run imported from v2 may hold more; only these carry over). */
function declaredInputs(run: WorkflowRun): [string, InputSpec][] {
  const declared = run.workflow?.inputs;
  if (declared) {
    return Object.entries(declared);
  }
  return Object.entries(run.inputs).map(([name, value]) => [name, { type: jsonType(value) }]);
}

function jsonType(value: JSONValue): InputSpec['type'] {
  if (Array.isArray(value)) {
    return 'array';
  }
  const type = typeof value;
  return type === 'number' || type === 'boolean' || type === 'object' ? (type as InputSpec['type']) : 'string';
}

/** The Re-run with… dialog's state: the run's inputs and its agents' models, as edited. */
export class RerunForm {
  readonly inputs: [string, InputSpec][];
  readonly agents: string[];
  texts: Record<string, string>;
  checks: Record<string, boolean>;
  models: Record<string, string>;
  private readonly _savedModels: Record<string, string>;
  private _changed = new Signal<this, void>(this);

  constructor(
    readonly run: WorkflowRun,
    agents: readonly Agent[] | null
  ) {
    this.inputs = declaredInputs(run);
    const value = (name: string, spec: InputSpec): JSONValue => run.inputs[name] ?? spec.default;
    this.texts = Object.fromEntries(this.inputs.map(([name, spec]) => [name, inputText(value(name, spec))]));
    this.checks = Object.fromEntries(this.inputs.map(([name, spec]) => [name, value(name, spec) === true]));
    this.agents = agentsOf(run);
    this.models = Object.fromEntries(this.agents.map(id => [id, modelOf(run, id, agents)]));
    this._savedModels = Object.fromEntries(this.agents.map(id => [id, agents?.find(a => a.id === id)?.model ?? '']));
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  setText(name: string, text: string): void {
    this.texts = { ...this.texts, [name]: text };
    this._changed.emit();
  }

  setCheck(name: string, checked: boolean): void {
    this.checks = { ...this.checks, [name]: checked };
    this._changed.emit();
  }

  setModel(agentId: string, model: string): void {
    this.models = { ...this.models, [agentId]: model };
    this._changed.emit();
  }

  /** Why `text` is no value of input `name` (null when it is one). */
  inputProblem(name: string, text: string = this.texts[name]): string | null {
    const spec = this.inputs.find(([n]) => n === name)?.[1] ?? {};
    try {
      parseInput(name, spec, text, this.checks[name]);
      return null;
    } catch (error) {
      return (error as Error).message;
    }
  }

  modelProblem(agentId: string, model: string = this.models[agentId]): string | null {
    return model.trim() ? null : `the model of agent '${agentId}' must not be empty`;
  }

  /**
   * The re-run request: the inputs whose value changed, and a model override for each agent
   * whose field is not its saved model (an override lasts one run: a parent's is given again
   * when it is kept). Throws an error naming the first field that holds no value.
   */
  request(): RerunRequest {
    const inputs: Record<string, JSONValue> = {};
    for (const [name, spec] of this.inputs) {
      const value = parseInput(name, spec, this.texts[name], this.checks[name]);
      if (!sameJson(value, this.run.inputs[name] ?? spec.default)) {
        inputs[name] = value;
      }
    }
    const agents: Record<string, { model: string }> = {};
    for (const id of this.agents) {
      const problem = this.modelProblem(id);
      if (problem) {
        throw new Error(problem);
      }
      const model = this.models[id].trim();
      if (model !== this._savedModels[id]) {
        agents[id] = { model };
      }
    }
    const request: RerunRequest = {};
    if (Object.keys(inputs).length) {
      request.inputs = inputs;
    }
    if (Object.keys(agents).length) {
      request.overrides = { agents };
    }
    return request;
  }
}

function short(value: JSONValue): string {
  const text = JSON.stringify(value) ?? 'null';
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

/** A re-run's recorded changes, one line each: where it started, each input's old and new value, each override. */
export function changeLines(changes: RunChanges | null | undefined): string[] {
  if (!changes) {
    return [];
  }
  const lines: string[] = [];
  if (changes.from_step) {
    lines.push(`re-run from step ${changes.from_step}`);
  }
  for (const [name, { from, to }] of Object.entries(changes.inputs ?? {})) {
    lines.push(`input ${name}: ${short(from)} → ${short(to)}`);
  }
  for (const [id, override] of Object.entries(changes.overrides?.agents ?? {})) {
    const parts = [
      override.model !== undefined ? `model ${override.model}` : null,
      override.system_prompt !== undefined ? 'another system prompt' : null,
      override.parameters !== undefined ? `parameters ${short(override.parameters)}` : null
    ].filter(Boolean);
    lines.push(`agent ${id}: ${parts.join(', ')}`);
  }
  for (const [id, override] of Object.entries(changes.overrides?.steps ?? {})) {
    lines.push(`step ${id}: with ${short(override.with)}`);
  }
  return lines;
}
