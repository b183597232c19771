/**
 * A run's budget in the Run detail: spent against each limit, with a bar of the tightest
 * one (calls in flight hold the lighter part), as `clarion_jupyter/workflow/budget.py`'s
 * `describe` says it in a cell and a terminal. It follows the run's events (`data.budget`).
 */
import * as React from 'react';

import { RunBudget } from './protocol';

/** Dollars with the digits small amounts need ($0.000063, $1.25). */
export function formatUsd(value: number): string {
  return value < 1 ? `$${value.toFixed(6).replace(/0+$/, '').replace(/\.$/, '')}` : `$${value.toFixed(2)}`;
}

/** The shares of the tightest limit spent and held by calls in flight (each 0..1). */
export function usedShare(budget: RunBudget): { spent: number; held: number } {
  const shares: [number, number][] = [];
  if (budget.usd) {
    shares.push([budget.spent_usd / budget.usd, budget.reserved_usd / budget.usd]);
  }
  if (budget.tokens) {
    shares.push([budget.spent_tokens / budget.tokens, budget.reserved_tokens / budget.tokens]);
  }
  const [spent, held] = shares.reduce((a, b) => (b[0] + b[1] > a[0] + a[1] ? b : a), [0, 0]);
  const used = Math.min(spent, 1);
  return { spent: used, held: Math.min(held, 1 - used) };
}

export function describeBudget(budget: RunBudget): string {
  const parts: string[] = [];
  if (budget.usd) {
    parts.push(`${formatUsd(budget.spent_usd)} of ${formatUsd(budget.usd)}`);
  }
  const limit = budget.tokens ? ` of ${budget.tokens.toLocaleString('en-US')}` : '';
  parts.push(`${budget.spent_tokens.toLocaleString('en-US')}${limit} tokens`);
  let line = `${parts.join(' · ')} spent`;
  if (budget.reserved_tokens) {
    line += ` (${budget.reserved_tokens.toLocaleString('en-US')} tokens held by calls in flight)`;
  }
  if (budget.unpriced_calls) {
    line += ` · ${budget.unpriced_calls} call${budget.unpriced_calls === 1 ? '' : 's'} of unpriced models`;
  }
  return line;
}

/** The Budget row of a run's facts (nothing for a run without a budget). */
export function BudgetFact({ budget }: { budget: RunBudget | null | undefined }): JSX.Element | null {
  if (!budget) {
    return null;
  }
  const { spent, held } = usedShare(budget);
  const level = spent >= 0.9 ? 'high' : spent >= 0.7 ? 'medium' : 'low';
  return (
    <>
      <dt>Budget</dt>
      <dd className="clarion-Budget" data-budget-level={level}>
        <span
          className="clarion-BudgetBar"
          role="meter"
          aria-label="Budget used"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={Math.round(spent * 100)}
        >
          <span className="clarion-BudgetSpent" style={{ width: `${spent * 100}%` }} />
          <span className="clarion-BudgetHeld" style={{ width: `${held * 100}%` }} />
        </span>
        <span className="clarion-BudgetText">{describeBudget(budget)}</span>
      </dd>
    </>
  );
}
