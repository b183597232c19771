/**
 * Which runs of the Runs list are selected, to compare them: a click selects one run,
 * Ctrl/Cmd-click adds or removes one, Shift-click selects the range from the last run clicked
 * (the anchor); the keyboard does the same (Space, Shift+arrows, Escape). The list's order is
 * given with each gesture, so the model holds nothing but ids and stays a pure model.
 */
import { ISignal, Signal } from '@lumino/signaling';

/** How a click or a key press changes the selection. */
export type SelectGesture = 'only' | 'toggle' | 'range';

/** The gesture of a click: Shift is a range, Ctrl (Cmd on a Mac) a toggle, else one run only. */
export function gestureOf(event: { shiftKey: boolean; ctrlKey: boolean; metaKey: boolean }): SelectGesture {
  return event.shiftKey ? 'range' : event.ctrlKey || event.metaKey ? 'toggle' : 'only';
}

export class RunSelection {
  private _ids = new Set<string>();
  private _anchor: string | null = null;
  private _changed = new Signal<this, void>(this);

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  has(runId: string): boolean {
    return this._ids.has(runId);
  }

  /** The run a range starts from: the last one clicked alone or toggled. */
  get anchor(): string | null {
    return this._anchor;
  }

  /** The selected runs that `order` lists, oldest first (run ids sort by time): a comparison's base comes first. */
  chosen(order: readonly string[]): string[] {
    return order.filter(id => this._ids.has(id)).sort();
  }

  /** `runId` clicked (or its row's key pressed) with `gesture`, in a list showing `order`. */
  select(runId: string, gesture: SelectGesture, order: readonly string[]): void {
    if (gesture === 'range' && this._anchor !== null && order.includes(this._anchor) && order.includes(runId)) {
      const [from, to] = [order.indexOf(this._anchor), order.indexOf(runId)].sort((a, b) => a - b);
      this._ids = new Set(order.slice(from, to + 1));
    } else if (gesture === 'toggle') {
      if (!this._ids.delete(runId)) {
        this._ids.add(runId);
      }
      this._anchor = runId;
    } else {
      this._ids = new Set([runId]);
      this._anchor = runId;
    }
    this._changed.emit();
  }

  clear(): void {
    if (this._ids.size === 0 && this._anchor === null) {
      return;
    }
    this._ids.clear();
    this._anchor = null;
    this._changed.emit();
  }
}
