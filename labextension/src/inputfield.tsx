/**
 * One workflow input as a form field, by its declared type: a checkbox for a boolean, a
 * number field, YAML text for an array or an object, a text field otherwise. The run form and
 * the Re-run with… dialog both use it.
 */
import * as React from 'react';

import { InputSpec } from './protocol';

export function InputField({
  id,
  name,
  spec,
  text,
  checked,
  problem = null,
  onText,
  onCheck,
  validate
}: {
  id: string;
  name: string;
  spec: InputSpec;
  text: string;
  checked: boolean;
  /** Why the text is not a value of the input's type, shown under the field. */
  problem?: string | null;
  onText: (text: string) => void;
  onCheck: (checked: boolean) => void;
  /**
   * Why a text is no value (null when it is one). Set on the field as its validity while the
   * change event is handled, so that a Lab dialog holding the field, which looks for `:invalid`
   * fields, disables its accept button.
   */
  validate?: (text: string) => string | null;
}): JSX.Element {
  const type = spec.type ?? 'string';
  const change = (event: React.ChangeEvent<HTMLInputElement | HTMLTextAreaElement>): void => {
    event.currentTarget.setCustomValidity(validate?.(event.currentTarget.value) ?? '');
    onText(event.currentTarget.value);
  };
  return (
    <div className="clarion-Field">
      <label htmlFor={id}>
        {name} <span className="clarion-Muted">{type}{spec.default === undefined ? ', required' : ''}</span>
      </label>
      {type === 'boolean' ? (
        <input id={id} type="checkbox" checked={checked} onChange={e => onCheck(e.target.checked)} />
      ) : type === 'array' || type === 'object' ? (
        <textarea
          id={id}
          className="jp-mod-styled"
          rows={3}
          placeholder={type === 'array' ? '[a, b] or one "- item" a line' : '{key: value} or one "key: value" a line'}
          value={text}
          aria-invalid={problem !== null}
          onChange={change}
        />
      ) : (
        <input
          id={id}
          className="jp-mod-styled"
          type={type === 'string' ? 'text' : 'number'}
          step={type === 'integer' ? 1 : 'any'}
          value={text}
          required={spec.default === undefined}
          aria-invalid={problem !== null}
          onChange={change}
        />
      )}
      {problem && (
        <div className="clarion-FieldProblem" role="alert">
          {problem}
        </div>
      )}
      {spec.description && <div className="clarion-Muted">{spec.description}</div>}
    </div>
  );
}
