/**
 * Where the step graph's edges run, from the boxes of its lanes and stages as laid out on
 * screen: an edge into the next stage is a curve from the bottom of one node to the top of the
 * other; any other edge (one that skips stages, goes back up the list, or joins two members
 * of one parallel group) leaves through the gap under its source, runs down a channel to the
 * right of the stages it passes, and enters its target from the gap above it, so no edge
 * crosses a node. Edges meeting at one node share its side evenly, ordered by where their
 * other ends are.
 */
import { Edge } from './graph';

export interface Box {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

export interface Route {
  edge: Edge;
  /** The SVG path of the line. */
  line: string;
  /** The SVG path of the arrowhead at the target's top. */
  head: string;
  /** The rightmost x the route reaches. */
  right: number;
}

/** How far right of the stages it passes the first channel runs, and how far apart channels are. */
const CHANNEL_MARGIN = 12;
const CHANNEL_SPACING = 8;
const CORNER = 6;
const HEAD = 4;

export function routeEdges(
  edges: readonly Edge[],
  lanes: ReadonlyMap<string, Box>,
  stageOf: ReadonlyMap<string, number>,
  stages: readonly Box[]
): Route[] {
  const drawn = edges.filter(e => lanes.has(e.from) && lanes.has(e.to) && stageOf.has(e.from) && stageOf.has(e.to));
  const adjacent = (e: Edge): boolean => stageOf.get(e.to)! === stageOf.get(e.from)! + 1;
  const centre = (id: string): number => (lanes.get(id)!.left + lanes.get(id)!.right) / 2;
  // An edge routed through a channel arrives from (and leaves towards) the right.
  const otherEnd = (e: Edge, id: string): number => (adjacent(e) ? centre(id) : Infinity);
  const starts = spread(drawn, lanes, e => e.from, e => otherEnd(e, e.to));
  const ends = spread(drawn, lanes, e => e.to, e => otherEnd(e, e.from));
  let channels = 0;
  return drawn.map((edge, i) => {
    const source = lanes.get(edge.from)!;
    const target = lanes.get(edge.to)!;
    const [sx, sy, tx, ty] = [starts[i], source.bottom, ends[i], target.top];
    const head = `M${tx - HEAD},${ty - HEAD * 1.5} L${tx},${ty} L${tx + HEAD},${ty - HEAD * 1.5} Z`;
    if (adjacent(edge)) {
      const bend = (ty - sy) / 2;
      const line = `M${sx},${sy} C${sx},${sy + bend} ${tx},${ty - bend} ${tx},${ty}`;
      return { edge, head, line, right: Math.max(sx, tx + HEAD) };
    }
    const from = stageOf.get(edge.from)!;
    const to = stageOf.get(edge.to)!;
    const passed = stages.slice(Math.min(from, to), Math.max(from, to) + 1);
    const x = Math.max(...passed.map(s => s.right)) + CHANNEL_MARGIN + CHANNEL_SPACING * channels++;
    const below = gapMiddle(stages, from, from + 1, sy);
    const above = gapMiddle(stages, to - 1, to, ty);
    const points: [number, number][] = [
      [sx, sy],
      [sx, below],
      [x, below],
      [x, above],
      [tx, above],
      [tx, ty]
    ];
    return { edge, head, line: rounded(points), right: x };
  });
}

/** For each edge, the x where it meets the node `end(edge)`: that node's width shared evenly. */
function spread(
  edges: readonly Edge[],
  lanes: ReadonlyMap<string, Box>,
  end: (e: Edge) => string,
  order: (e: Edge) => number
): number[] {
  const xs = new Array<number>(edges.length);
  const byNode = new Map<string, number[]>();
  edges.forEach((e, i) => byNode.set(end(e), [...(byNode.get(end(e)) ?? []), i]));
  byNode.forEach((indexes, id) => {
    const box = lanes.get(id)!;
    indexes
      .sort((a, b) => order(edges[a]) - order(edges[b]))
      .forEach((edgeIndex, k) => {
        xs[edgeIndex] = box.left + ((box.right - box.left) * (k + 1)) / (indexes.length + 1);
      });
  });
  return xs;
}

/** The middle of the gap between stages `upper` and `lower` (one may be off the graph: then
 * a corner's height past `y`, the node's edge). */
function gapMiddle(stages: readonly Box[], upper: number, lower: number, y: number): number {
  const top = stages[upper]?.bottom;
  const bottom = stages[lower]?.top;
  if (top === undefined || bottom === undefined) {
    return top === undefined ? y - 2 * CORNER : y + 2 * CORNER;
  }
  return (top + bottom) / 2;
}

/** An orthogonal polyline with rounded corners. */
function rounded(points: [number, number][]): string {
  const parts = [`M${points[0][0]},${points[0][1]}`];
  for (let i = 1; i < points.length - 1; i++) {
    const [px, py] = points[i - 1];
    const [x, y] = points[i];
    const [nx, ny] = points[i + 1];
    const r = Math.min(CORNER, Math.hypot(x - px, y - py) / 2, Math.hypot(nx - x, ny - y) / 2);
    const before = toward(x, y, px, py, r);
    const after = toward(x, y, nx, ny, r);
    parts.push(`L${before[0]},${before[1]}`, `Q${x},${y} ${after[0]},${after[1]}`);
  }
  const [lx, ly] = points[points.length - 1];
  parts.push(`L${lx},${ly}`);
  return parts.join(' ');
}

function toward(x: number, y: number, tx: number, ty: number, distance: number): [number, number] {
  const length = Math.hypot(tx - x, ty - y) || 1;
  return [x + ((tx - x) / length) * distance, y + ((ty - y) / length) * distance];
}
