import { parseInput } from '../inputvalue';

describe('parseInput', () => {
  it('reads an array in YAML flow style, as a %%clarion cell would', () => {
    expect(parseInput('words', { type: 'array' }, '[a, b, "c d"]', false)).toEqual(['a', 'b', 'c d']);
  });

  it('reads an array in YAML block style', () => {
    expect(parseInput('words', { type: 'array' }, '- a\n- 2\n', false)).toEqual(['a', 2]);
  });

  it('still reads JSON, which is YAML', () => {
    expect(parseInput('limits', { type: 'object' }, '{"cpu": 2}', false)).toEqual({ cpu: 2 });
  });

  it('reads an object in YAML block style, keeping a date a string', () => {
    expect(parseInput('meta', { type: 'object' }, 'owner: ada\nsince: 2026-01-02\n', false)).toEqual({
      owner: 'ada',
      since: '2026-01-02'
    });
  });

  it('names the input and the shape it wants when the text is not one', () => {
    expect(() => parseInput('words', { type: 'array' }, 'owner: ada', false)).toThrow(/input 'words' must be an array/);
    expect(() => parseInput('words', { type: 'array' }, '[a, b', false)).toThrow(/input 'words' must be an array/);
  });
});
