/**
 * A workflow input's value and its text in a form field: arrays and objects are YAML, as in a
 * `%%clarion` cell, and a value is shown as JSON (which YAML reads too).
 */
import { CORE_SCHEMA, load } from 'js-yaml';

import { InputSpec } from './protocol';

/** The text a field shows for a value: a string as it is, anything else as JSON (which YAML reads too). */
export function inputText(value: unknown): string {
  if (value === undefined || value === null) {
    return '';
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * A field's value as its declared type, or an error naming the input. Arrays and objects
 * are YAML, as in a `%%clarion` cell: flow (`[a, b]`, `{k: v}`, so JSON too) or block
 * (`- a` a line); YAML's core schema, so a date stays a string.
 */
export function parseInput(name: string, spec: InputSpec, text: string, checked: boolean): unknown {
  switch (spec.type ?? 'string') {
    case 'boolean':
      return checked;
    case 'integer':
    case 'number': {
      const value = Number(text);
      if (text.trim() === '' || Number.isNaN(value) || (spec.type === 'integer' && !Number.isInteger(value))) {
        throw new Error(`input '${name}' must be ${spec.type === 'integer' ? 'an integer' : 'a number'}`);
      }
      return value;
    }
    case 'array':
    case 'object': {
      const shape = spec.type === 'array' ? 'an array ([a, b], or one "- item" a line)' : 'an object ({key: value}, or one "key: value" a line)';
      let value: unknown;
      try {
        value = load(text, { schema: CORE_SCHEMA });
      } catch (error) {
        throw new Error(`input '${name}' must be ${shape}: ${(error as Error).message.split('\n')[0]}`);
      }
      if (spec.type === 'array' ? !Array.isArray(value) : typeof value !== 'object' || Array.isArray(value) || !value) {
        throw new Error(`input '${name}' must be ${shape}`);
      }
      return value;
    }
    default:
      return text;
  }
}
