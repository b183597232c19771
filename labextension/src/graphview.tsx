/**
 * The step graph of a run: its stages as nodes coloured live by step status, and its
 * dependency edges as SVG paths under them, each coloured like the step it leads into
 * (dimmed into a skipped or cancelled step, dashed when the dependency is a template read).
 * A re-run's reused steps are dimmed, with a "reused" badge and a tooltip naming the parent run.
 */
import * as React from 'react';

import { formatDuration } from './common';
import { Edge, Lane, Stage, laneStatus } from './graph';
import { StepRun } from './protocol';
import { Box, Route, routeEdges } from './route';

export function StepGraph({
  stages,
  edges,
  selected,
  onSelect
}: {
  stages: Stage[];
  edges: Edge[];
  selected: string | null;
  onSelect: (key: string) => void;
}): JSX.Element {
  const graph = React.useRef<HTMLDivElement>(null);
  const routes = useRoutes(graph, edges);
  const status = new Map(stages.flatMap(stage => stage.lanes.map(lane => [lane.id, laneStatus(lane)])));
  const waitsFor = (id: string): string[] => edges.filter(e => e.to === id).map(e => e.from);
  return (
    <div className="clarion-Graph" ref={graph}>
      <svg className="clarion-Edges" aria-hidden="true" width={routes.width} height={routes.height}>
        {routes.routes.map(({ edge, line, head }) => (
          <g
            key={`${edge.from}>${edge.to}`}
            className={`clarion-Edge clarion-Edge-${status.get(edge.to)} clarion-Edge-${edge.kind}`}
            data-from={edge.from}
            data-to={edge.to}
            data-kind={edge.kind}
          >
            <title>{`${edge.to} waits for ${edge.from} (${edge.kind})`}</title>
            <path className="clarion-EdgeLine" d={line} />
            <path className="clarion-EdgeHead" d={head} />
          </g>
        ))}
      </svg>
      <div role="list" aria-label="Steps" className="clarion-Stages">
        {stages.map((stage, index) => (
          <div
            key={index}
            className={`clarion-Stage${stage.parallel ? ' clarion-Stage-parallel' : ''}`}
            data-stage={index}
            title={stage.parallel ? 'parallel group' : undefined}
          >
            {stage.lanes.map(lane => (
              <LaneNode key={lane.id} lane={lane} waitsFor={waitsFor(lane.id)} selected={selected} onSelect={onSelect} />
            ))}
          </div>
        ))}
      </div>
    </div>
  );
}

/** Room kept right of the rightmost channel. */
const CHANNEL_ROOM = 8;

interface Routes {
  routes: Route[];
  width: number;
  height: number;
}

/** The edges' routes, measured from the rendered nodes after every render and on resize. */
function useRoutes(graph: React.RefObject<HTMLDivElement>, edges: Edge[]): Routes {
  const [routes, setRoutes] = React.useState<Routes>({ routes: [], width: 0, height: 0 });
  const latest = React.useRef(edges);
  latest.current = edges;
  const measure = React.useCallback(() => {
    const root = graph.current;
    if (!root) {
      return;
    }
    const origin = root.getBoundingClientRect();
    const box = (element: Element): Box => {
      const r = element.getBoundingClientRect();
      return { left: r.left - origin.left, top: r.top - origin.top, right: r.right - origin.left, bottom: r.bottom - origin.top };
    };
    const stages = Array.from(root.querySelectorAll<HTMLElement>('[data-stage]'));
    const lanes = new Map<string, Box>();
    const stageOf = new Map<string, number>();
    stages.forEach((stage, index) =>
      stage.querySelectorAll<HTMLElement>(':scope > [data-lane]').forEach(lane => {
        lanes.set(lane.dataset.lane!, box(lane));
        stageOf.set(lane.dataset.lane!, index);
      })
    );
    const drawn = routeEdges(latest.current, lanes, stageOf, stages.map(box));
    // Channels may run past the stages' right edge: the SVG grows so the view scrolls to them.
    const next = {
      routes: drawn,
      width: Math.max(root.scrollWidth, ...drawn.map(route => Math.ceil(route.right) + CHANNEL_ROOM)),
      height: root.scrollHeight
    };
    setRoutes(previous => (JSON.stringify(previous) === JSON.stringify(next) ? previous : next));
  }, [graph]);
  React.useLayoutEffect(measure);
  React.useEffect(() => {
    const observer = new ResizeObserver(measure);
    if (graph.current) {
      observer.observe(graph.current);
    }
    return () => observer.disconnect();
  }, [measure]);
  return routes;
}

/** What a reused step's tooltip says: whose output it is, and that nothing ran. */
export function reusedTitle(reused: { run_id: string; attempt: number }): string {
  return `Reused from run ${reused.run_id} (attempt ${reused.attempt}): its output was copied, its task did not run again.`;
}

function LaneNode({
  lane,
  waitsFor,
  selected,
  onSelect
}: {
  lane: Lane;
  waitsFor: string[];
  selected: string | null;
  onSelect: (key: string) => void;
}): JSX.Element {
  const status = laneStatus(lane);
  const after = waitsFor.length > 0 ? `, after ${waitsFor.join(', ')}` : '';
  const node = (key: string, label: string, state: string, step: StepRun | null, extra = ''): JSX.Element => {
    const reused = step?.reused_from ?? null;
    return (
      <button
        className={`clarion-Node clarion-Node-${state}${reused ? ' clarion-Node-reused' : ''}${selected === key ? ' clarion-mod-selected' : ''}${extra}`}
        data-step={key}
        data-status={state}
        data-reused-from={reused?.run_id}
        role="listitem"
        aria-label={`${label}: ${state}${reused ? `, reused from run ${reused.run_id}` : ''}${key === lane.id ? after : ''}`}
        title={reused ? reusedTitle(reused) : undefined}
        onClick={() => onSelect(key)}
      >
        <span className="clarion-NodeName">
          {label}
          {reused && <span className="clarion-ReusedBadge">reused</span>}
        </span>
        <span className="clarion-NodeMeta">
          {state}
          {step && step.attempt > 1 ? ` · attempt ${step.attempt}` : ''}
          {step?.duration_ms !== null && step?.duration_ms !== undefined ? ` · ${formatDuration(step.duration_ms)}` : ''}
        </span>
      </button>
    );
  };
  if (!lane.mapped) {
    return (
      <div className="clarion-Lane" data-lane={lane.id}>
        {node(lane.id, lane.id, status, lane.step)}
      </div>
    );
  }
  return (
    <div className="clarion-Lane clarion-Lane-map" data-lane={lane.id} data-map={lane.id}>
      {node(lane.id, `${lane.id} (for each)`, status, lane.step)}
      <div className="clarion-Items">
        {lane.items.map(item => node(item.key, `[${item.item_index}]`, item.status, item, ' clarion-Node-item'))}
      </div>
    </div>
  );
}
