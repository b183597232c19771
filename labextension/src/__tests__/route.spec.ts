import { Edge } from '../graph';
import { Box, routeEdges } from '../route';

const box = (left: number, top: number, width = 100, height = 40): Box => ({ left, top, right: left + width, bottom: top + height });

// Three stages 20 px apart: a; then b and c side by side; then d.
const STAGES = [box(0, 0), box(0, 60, 220), box(0, 120)];
const LANES = new Map([
  ['a', box(0, 0)],
  ['b', box(0, 60)],
  ['c', box(120, 60)],
  ['d', box(0, 120)]
]);
const STAGE_OF = new Map([
  ['a', 0],
  ['b', 1],
  ['c', 1],
  ['d', 2]
]);
const edge = (from: string, to: string): Edge => ({ from, to, kind: 'order' });
/** The corners of a routed line (the control points of its rounded bends). */
const corners = (line: string): number[][] => [...line.matchAll(/Q(\S+),(\S+)/g)].map(m => [Number(m[1]), Number(m[2])]);

describe('routeEdges', () => {
  it('curves an edge into the next stage from the bottom of its source to the top of its target', () => {
    const [route] = routeEdges([edge('a', 'b')], LANES, STAGE_OF, STAGES);
    expect(route.line).toBe('M50,40 C50,50 50,50 50,60');
    expect(route.head).toBe('M46,54 L50,60 L54,54 Z');
  });

  it('shares a node’s side between the edges that meet there, in the order of their other ends', () => {
    const routes = routeEdges([edge('a', 'c'), edge('a', 'b')], LANES, STAGE_OF, STAGES);
    const starts = routes.map(r => r.line.split(' ')[0]);
    expect(starts).toEqual([`M${200 / 3},40`, `M${100 / 3},40`]);
  });

  it('sends an edge that skips a stage down a channel right of the stages it passes, through the gaps', () => {
    const [route] = routeEdges([edge('a', 'd')], LANES, STAGE_OF, STAGES);
    // Below a (the gap 40..60), right of the widest passed stage (220 + 12), above d (100..120).
    expect(corners(route.line)).toEqual([
      [50, 50],
      [232, 50],
      [232, 110],
      [50, 110]
    ]);
    expect(route.line.endsWith('L50,120')).toBe(true);
  });

  it('routes an edge back up the list or within one group through channels side by side', () => {
    const routes = routeEdges([edge('d', 'a'), edge('b', 'c')], LANES, STAGE_OF, STAGES);
    expect(routes.map(r => corners(r.line)[1][0])).toEqual([232, 240]);
    // Up from d's bottom: below the last stage, then into a's top from above the graph.
    expect(routes[0].line.startsWith('M50,160 L50,166')).toBe(true);
    expect(routes[0].line.endsWith('L50,0')).toBe(true);
  });

  it('leaves out edges whose nodes are not on screen', () => {
    expect(routeEdges([edge('a', 'ghost')], LANES, STAGE_OF, STAGES)).toEqual([]);
  });
});
