/**
 * A Compare tab's model: `GET /api/v3/runs/compare` for its runs, and the table it shows.
 * The first run is the base: each other run's outputs are diffed against its. The steps that
 * differ come first, in the server's order; the equal ones after, collapsed in the view.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ClarionApi } from './api';
import { OutputDiff, outputDiff } from './outputdiff';
import { ComparedRun, RunComparison, StepInRun } from './protocol';

export interface CompareCell extends StepInRun {
  /** This run has no step of that key. */
  missing: boolean;
  /** Its status is not the base run's. */
  statusDiffers: boolean;
  /** Its output against the base run's; null for the base itself and in equal rows. */
  diff: OutputDiff | null;
}

export interface CompareRow {
  key: string;
  differs: boolean;
  /** In the order of the runs. */
  cells: CompareCell[];
}

export interface CompareTable {
  runs: ComparedRun[];
  differing: CompareRow[];
  equal: CompareRow[];
}

export function compareTable(comparison: RunComparison): CompareTable {
  const rows = comparison.steps.map(step => {
    const base = step.per_run[0];
    const cells = step.per_run.map((cell, index) => ({
      ...cell,
      missing: cell.status === null,
      statusDiffers: index > 0 && cell.status !== base?.status,
      diff: index > 0 && step.differs ? outputDiff(base?.output ?? null, cell.output) : null
    }));
    return { key: step.key, differs: step.differs, cells };
  });
  return { runs: comparison.runs, differing: rows.filter(r => r.differs), equal: rows.filter(r => !r.differs) };
}

/** The runs of a Compare tab, loaded once (they have all finished or keep their last state). */
export class CompareModel {
  private _table: CompareTable | null = null;
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);

  constructor(
    readonly api: ClarionApi,
    readonly runIds: readonly string[]
  ) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get table(): CompareTable | null {
    return this._table;
  }

  get error(): string | null {
    return this._error;
  }

  async load(): Promise<void> {
    try {
      this._table = compareTable(await this.api.compare(this.runIds));
      this._error = null;
    } catch (error) {
      this._error = (error as Error).message;
    }
    this._changed.emit();
  }

  dispose(): void {
    Signal.clearData(this);
  }
}
