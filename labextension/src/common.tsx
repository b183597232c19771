/** Small pieces every view shares: status badges, a ticking clock, formatting. */
import { LabIcon, checkIcon, closeIcon, runningIcon, stopIcon, userIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

/**
 * The statuses drawn with an icon of Lab's own set beside their name (a font glyph such as
 * an hourglass is an empty box where the font lacks it, as Chromium's default fonts do).
 */
const STATUS_ICONS: Record<string, LabIcon> = {
  waiting: userIcon,
  running: runningIcon,
  retrying: runningIcon,
  succeeded: checkIcon,
  failed: closeIcon,
  cancelled: stopIcon
};

export function StatusBadge({ status }: { status: string }): JSX.Element {
  const icon = STATUS_ICONS[status];
  return (
    <span className={`clarion-Status clarion-Status-${status}`} data-status={status}>
      {icon && <icon.react className="clarion-StatusIcon" tag="span" height="12px" width="12px" />}
      {status}
    </span>
  );
}

/** Now, re-read every second while `live` (a run going on), so durations count up as it runs. */
export function useNow(live: boolean): number {
  const [now, setNow] = React.useState(() => Date.now());
  React.useEffect(() => {
    if (!live) {
      return;
    }
    setNow(Date.now());
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [live]);
  return now;
}

export function ErrorMessage({ message, onRetry }: { message: string; onRetry?: () => void }): JSX.Element {
  return (
    <div className="clarion-Error" role="alert">
      <span>{message}</span>
      {onRetry && (
        <button className="jp-mod-styled jp-mod-reject clarion-Small" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || Number.isNaN(ms)) {
    return '';
  }
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  if (ms < 60_000) {
    return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  }
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function runDuration(start: string | null, end: string | null, now = Date.now()): number | null {
  if (!start) {
    return null;
  }
  return (end ? Date.parse(end) : now) - Date.parse(start);
}

export function formatTime(ts: string | null | undefined): string {
  if (!ts) {
    return '';
  }
  const date = new Date(ts);
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return date.toDateString() === today.toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

export function formatCost(cost: number | null | undefined): string {
  if (cost === null || cost === undefined || cost === 0) {
    return '';
  }
  return cost < 0.01 ? `$${cost.toFixed(4)}` : `$${cost.toFixed(2)}`;
}

export function Json({ value }: { value: unknown }): JSX.Element {
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  return <pre className="clarion-Json">{text}</pre>;
}
