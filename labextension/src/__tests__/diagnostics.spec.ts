import { Text } from '@codemirror/state';

import { problemDiagnostics, problemPlace } from '../diagnostics';
import { Problem } from '../protocol';

const YAML = `id: tour
name: Tour
inputs:
  words: {type: arrray, default: [a]}
steps:
  - id: start
    task: shell
    with: {command: "sleep 1"}
  - parallel:
      - id: left
        task: shell
        with:
          command: "echo {{ steps.nope.output }}"
        retry:
          max_attempts: 0
  - task: echo
    with: {value: 1}
  - id: each
    task: teleport
    for_each: "{{ inputs.words }}"
`;
const LINES = YAML.split('\n');

/** The line a problem is marked on, and the text the mark underlines. */
function marked(problem: Problem): [number, string] {
  const place = problemPlace(problem, LINES);
  return [place.line, LINES[place.line - 1].slice(place.from, place.to)];
}

const step = (id: string, field: string, message = 'wrong'): Problem => ({
  loc: `step '${id}' field '${field}'`,
  message,
  step: id,
  field
});

describe('problemPlace', () => {
  it('marks a step’s field at its key', () => {
    expect(marked(step('each', 'task'))).toEqual([19, 'task: teleport']);
    expect(marked(step('left', 'retry.max_attempts'))).toEqual([15, 'max_attempts: 0']);
    expect(marked(step('left', 'with.command'))).toEqual([13, 'command: "echo {{ steps.nope.output }}"']);
  });

  it('marks a key inside a flow mapping on its line', () => {
    expect(marked(step('start', 'with.command'))).toEqual([8, 'command: "sleep 1"}']);
    expect(marked({ loc: 'inputs.words.type', message: 'bad type', field: 'inputs.words.type' })).toEqual([
      4,
      'type: arrray, default: [a]}'
    ]);
  });

  it('marks a step without an id by its place in the list, and a field it lacks at its first line', () => {
    expect(marked(step('#3', 'id', 'Field required'))).toEqual([16, 'task: echo']);
    expect(marked(step('each', 'approval.if'))).toEqual([18, 'id: each']);
  });

  it('marks the line and column of a text that does not parse', () => {
    expect(problemPlace({ loc: 'line 7, column 5', message: 'mapping values are not allowed here' }, LINES)).toEqual({
      line: 7,
      from: 4,
      to: 15
    });
  });

  it('marks what it cannot find on the document’s first line', () => {
    expect(marked({ loc: 'description', message: 'too long', field: 'description' })).toEqual([1, 'id: tour']);
    expect(marked(step('gone', 'task'))).toEqual([1, 'id: tour']);
  });

  it('finds the entries of a list written at the key’s own indentation', () => {
    const flat = ['name: Flat', 'steps:', '- id: a', '  task: echo', '- task: echo', 'outputs: {}'];
    expect(problemPlace(step('#2', 'id'), flat).line).toBe(5);
    expect(problemPlace(step('a', 'task'), flat)).toEqual({ line: 4, from: 2, to: 12 });
  });
});

describe('problemDiagnostics', () => {
  it('turns each problem into an error diagnostic at its place in the document', () => {
    const doc = Text.of(LINES);
    const problems = [step('each', 'task', "unknown task type 'teleport'"), { loc: 'line 2, column 1', message: 'bad' }];
    const [task, parse] = problemDiagnostics(problems, doc);
    expect(task).toEqual({
      from: doc.line(19).from + 4,
      to: doc.line(19).to,
      severity: 'error',
      source: "step 'each' field 'task'",
      message: "unknown task type 'teleport'"
    });
    expect(doc.sliceString(parse.from, parse.to)).toBe('name: Tour');
  });

  it('has nothing to mark for a valid document', () => {
    expect(problemDiagnostics([], Text.of(LINES))).toEqual([]);
  });
});
