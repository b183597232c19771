/**
 * The Runs view: a virtualised list (only the rows in sight are in the DOM, so 10,000 runs
 * scroll as fast as 10), with status and workflow filters and the deletion of the finished
 * runs they select; the next page is fetched as the end comes into sight. Runs are selected
 * to compare them (Ctrl/Shift-click, or Space and Shift+arrows; see `selection.ts`).
 */
import { UseSignal, deleteIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ErrorMessage, StatusBadge, formatCost, formatDuration, formatTime, runDuration, useNow } from './common';
import { RunHistory } from './history';
import { Agent, RunStatus, StepStatus, TERMINAL_RUN, WorkflowDocument, WorkflowRun } from './protocol';
import { runTitle } from './runtitle';
import { RunSelection, SelectGesture, gestureOf } from './selection';

export const ROW_HEIGHT = 48;
const OVERSCAN = 8;

export interface IHistoryActions {
  open(runId: string): void;
  /** Deletes the finished runs the list's filter selects, after a confirmation. */
  deleteFinished(): void;
  /** Opens a Compare tab of the selected runs (oldest first). */
  compare(runIds: string[]): void;
}

interface IHistoryProps {
  model: RunHistory;
  selection: RunSelection;
  workflows: WorkflowDocument[];
  agents: Agent[] | null;
  actions: IHistoryActions;
}

export function HistoryView(props: IHistoryProps): JSX.Element {
  return (
    <UseSignal signal={props.model.changed}>
      {() => <UseSignal signal={props.selection.changed}>{() => <HistoryBody {...props} />}</UseSignal>}
    </UseSignal>
  );
}

function HistoryBody({ model, selection, workflows, agents, actions }: IHistoryProps): JSX.Element {
  const filter = model.filter;
  const chosen = selection.chosen(model.runs.map(run => run.run_id));
  return (
    <div className="clarion-RunsView">
      <div className="clarion-Filters">
        <FilterSelect
          label="Status"
          value={filter.status}
          options={Object.values(RunStatus).map(status => [status, status])}
          onChange={status => void model.setFilter({ ...filter, status })}
        />
        <FilterSelect
          label="Workflow"
          value={filter.workflow_id}
          options={workflows.map(w => [w.id, w.name])}
          onChange={workflow_id => void model.setFilter({ ...filter, workflow_id })}
        />
        <button
          className="jp-Button jp-mod-minimal clarion-DeleteFinished"
          title="Delete the finished runs these filters select…"
          aria-label="Delete the finished runs these filters select"
          disabled={!model.runs.some(run => TERMINAL_RUN.has(run.status))}
          onClick={actions.deleteFinished}
        >
          <deleteIcon.react tag="span" height="16px" width="16px" />
        </button>
      </div>
      <SelectionBar chosen={chosen} onCompare={() => actions.compare(chosen)} onClear={() => selection.clear()} />
      {model.error && <ErrorMessage message={model.error} onRetry={() => void model.reload()} />}
      <VirtualRuns model={model} selection={selection} agents={agents} onOpen={actions.open} />
    </div>
  );
}

/** The list's toolbar for its selection: how many runs are selected, Compare and Clear. */
function SelectionBar({
  chosen,
  onCompare,
  onClear
}: {
  chosen: string[];
  onCompare: () => void;
  onClear: () => void;
}): JSX.Element {
  const count = chosen.length;
  const hint = count === 0 ? 'Ctrl/Shift-click to select' : `${count} selected`;
  return (
    <div className="clarion-SelectionBar" role="toolbar" aria-label="Selected runs">
      <span
        className={`clarion-SelectionCount${count < 2 ? ' clarion-Muted' : ''}`}
        title="Ctrl-click (Cmd-click) adds or removes a run, Shift-click selects a range; Space and Shift+arrows do the same"
      >
        {hint}
      </span>
      {count > 0 && (
        <button className="jp-Button jp-mod-minimal clarion-Small" title="Select no run (Escape)" onClick={onClear}>
          Clear
        </button>
      )}
      <button
        className="jp-mod-styled jp-mod-accept clarion-Small clarion-CompareButton"
        title={
          count >= 2
            ? `Compare the ${count} selected runs side by side`
            : 'Select two or more runs to compare (Ctrl-click or Shift-click them, or Space and Shift+arrows)'
        }
        disabled={count < 2}
        onClick={onCompare}
      >
        Compare
      </button>
    </div>
  );
}

/** One filter of the list: "all", or one of `options` ([value, label]). */
function FilterSelect({
  label,
  value,
  options,
  onChange
}: {
  label: string;
  value: string | undefined;
  options: [string, string][];
  onChange: (value: string | undefined) => void;
}): JSX.Element {
  return (
    <label>
      <span className="clarion-Label">{label}</span>
      <select
        className="jp-mod-styled"
        aria-label={`Filter by ${label.toLowerCase()}`}
        value={value ?? ''}
        onChange={e => onChange(e.target.value || undefined)}
      >
        <option value="">all</option>
        {options.map(([id, text]) => (
          <option key={id} value={id}>
            {text}
          </option>
        ))}
      </select>
    </label>
  );
}

function VirtualRuns({
  model,
  selection,
  agents,
  onOpen
}: {
  model: RunHistory;
  selection: RunSelection;
  agents: Agent[] | null;
  onOpen: (runId: string) => void;
}): JSX.Element {
  const runs = model.runs;
  const box = React.useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = React.useState(0);
  const [height, setHeight] = React.useState(600);
  const [focused, setFocused] = React.useState(0);
  React.useEffect(() => {
    const element = box.current;
    if (!element) {
      return;
    }
    const observer = new ResizeObserver(() => setHeight(element.clientHeight || 600));
    observer.observe(element);
    return () => observer.disconnect();
  }, []);
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(runs.length, Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
  // One clock for the rows in sight: an active run's duration counts up (finished rows keep `now` 0 and stay memoised).
  const now = useNow(runs.slice(first, last).some(run => !TERMINAL_RUN.has(run.status)));
  React.useEffect(() => {
    if (last >= runs.length - OVERSCAN && model.hasMore && !model.loading) {
      void model.loadMore();
    }
  }, [last, runs.length, model.hasMore, model.loading]);

  const focusRow = (index: number): void => {
    const clamped = Math.max(0, Math.min(runs.length - 1, index));
    setFocused(clamped);
    const element = box.current;
    if (!element) {
      return;
    }
    const top = clamped * ROW_HEIGHT;
    if (top < element.scrollTop) {
      element.scrollTop = top;
    } else if (top + ROW_HEIGHT > element.scrollTop + element.clientHeight) {
      element.scrollTop = top + ROW_HEIGHT - element.clientHeight;
    }
    requestAnimationFrame(() => element.querySelector<HTMLElement>(`[data-index="${clamped}"]`)?.focus());
  };
  const order = runs.map(run => run.run_id);
  const latest = React.useRef({ order, onOpen });
  latest.current = { order, onOpen };
  /** A click: a plain one selects the run alone and opens it; with Ctrl or Shift it only selects. (Stable, so rows stay memoised.) */
  const onClick = React.useCallback(
    (runId: string, gesture: SelectGesture): void => {
      selection.select(runId, gesture, latest.current.order);
      if (gesture === 'only') {
        latest.current.onOpen(runId);
      }
    },
    [selection]
  );
  const onKeyDown = (event: React.KeyboardEvent): void => {
    const moves: Record<string, number> = {
      ArrowDown: focused + 1,
      ArrowUp: focused - 1,
      PageDown: focused + Math.floor(height / ROW_HEIGHT),
      PageUp: focused - Math.floor(height / ROW_HEIGHT),
      Home: 0,
      End: runs.length - 1
    };
    if (event.key in moves) {
      event.preventDefault();
      const target = Math.max(0, Math.min(runs.length - 1, moves[event.key]));
      if (event.shiftKey && runs[target]) {
        // Shift+arrows extend the selection from the anchor (the focused run when there is none yet).
        if (selection.anchor === null && runs[focused]) {
          selection.select(runs[focused].run_id, 'only', order);
        }
        selection.select(runs[target].run_id, 'range', order);
      }
      focusRow(target);
    } else if (event.key === 'Enter' && runs[focused]) {
      event.preventDefault();
      onOpen(runs[focused].run_id);
    } else if (event.key === ' ' && runs[focused]) {
      event.preventDefault();
      selection.select(runs[focused].run_id, 'toggle', order);
    } else if (event.key === 'Escape') {
      selection.clear();
    }
  };

  if (runs.length === 0) {
    return (
      <div className="clarion-Empty" ref={box}>
        {model.loading ? 'Loading runs…' : 'No runs yet. Start one from the Workflows or Agents tab.'}
      </div>
    );
  }
  const rows: JSX.Element[] = [];
  for (let index = first; index < last; index++) {
    const run = runs[index];
    const active = !TERMINAL_RUN.has(run.status);
    rows.push(
      <RunRow
        key={run.run_id}
        run={run}
        title={runTitle(run, agents)}
        now={active ? now : 0}
        index={index}
        tabIndex={index === Math.min(focused, runs.length - 1) ? 0 : -1}
        selected={selection.has(run.run_id)}
        onClick={onClick}
        onFocus={() => setFocused(index)}
      />
    );
  }
  return (
    <div
      className="clarion-RunList"
      ref={box}
      role="listbox"
      aria-label="Runs"
      aria-multiselectable={true}
      onScroll={e => setScrollTop((e.target as HTMLDivElement).scrollTop)}
      onKeyDown={onKeyDown}
    >
      <div style={{ height: runs.length * ROW_HEIGHT + (model.hasMore ? ROW_HEIGHT : 0), position: 'relative' }}>
        {rows}
        {model.hasMore && (
          <div className="clarion-MoreRow clarion-Muted" style={{ top: runs.length * ROW_HEIGHT }}>
            Loading more…
          </div>
        )}
      </div>
    </div>
  );
}

const RunRow = React.memo(function RunRow({
  run,
  title,
  now,
  index,
  tabIndex,
  selected,
  onClick,
  onFocus
}: {
  run: WorkflowRun;
  title: string;
  /** The clock, for an active run's duration (0 for a finished one). */
  now: number;
  index: number;
  tabIndex: number;
  selected: boolean;
  onClick: (runId: string, gesture: SelectGesture) => void;
  onFocus: () => void;
}): JSX.Element {
  // Steps seen live (a run loaded from a page has none): what an active run is doing now.
  const done = run.steps.filter(s => s.status === StepStatus.succeeded).length;
  const current = run.steps.filter(s => s.status === StepStatus.running || s.status === StepStatus.waiting).pop();
  const active = !TERMINAL_RUN.has(run.status);
  return (
    <div
      className={`clarion-RunRow${selected ? ' clarion-mod-selected' : ''}`}
      data-steps-done={done}
      role="option"
      aria-selected={selected}
      tabIndex={tabIndex}
      data-index={index}
      data-run-id={run.run_id}
      data-status={run.status}
      style={{ top: index * ROW_HEIGHT }}
      onClick={event => onClick(run.run_id, gestureOf(event))}
      onMouseDown={event => event.shiftKey && event.preventDefault()}
      onFocus={onFocus}
    >
      <div className="clarion-RunRowMain">
        <StatusBadge status={run.status} />
        <span className="clarion-RunName" title={title}>
          {title}
        </span>
        {active && (current || done > 0) && (
          <span className="clarion-RunProgress clarion-Muted">
            {current ? `${current.key} ${current.status}` : ''}
            {current && done ? ' · ' : ''}
            {done ? `${done} done` : ''}
          </span>
        )}
      </div>
      <div className="clarion-RunRowMeta">
        <span className="clarion-RunTime">{formatTime(run.started_at ?? run.created_at)}</span>
        <span className="clarion-RunTime">{formatDuration(runDuration(run.started_at, run.finished_at, now || undefined))}</span>
        <span>{formatCost(run.usage?.cost_usd)}</span>
        <code className="clarion-Muted">{run.run_id.slice(-8)}</code>
      </div>
    </div>
  );
});
