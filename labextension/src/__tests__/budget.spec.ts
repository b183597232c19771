/** How the Run detail says a run's budget: spent against each limit, and the bar's shares. */
import { describeBudget, formatUsd, usedShare } from '../budget';
import { RunBudget } from '../protocol';

function budget(fields: Partial<RunBudget>): RunBudget {
  return {
    usd: null, tokens: null, unpriced: 'refuse', spent_usd: 0, spent_tokens: 0,
    reserved_usd: 0, reserved_tokens: 0, unpriced_calls: 0, ...fields
  };
}

describe('the run budget', () => {
  it('writes small amounts with the digits they need', () => {
    expect([formatUsd(0.000063), formatUsd(0.5), formatUsd(0), formatUsd(12.5)]).toEqual(['$0.000063', '$0.5', '$0', '$12.50']);
  });

  it('says spent against each limit, and what calls in flight hold', () => {
    const b = budget({ usd: 0.0001, tokens: 2000, spent_usd: 0.0000084, spent_tokens: 1044, reserved_tokens: 66 });
    expect(describeBudget(b)).toBe('$0.000008 of $0.0001 · 1,044 of 2,000 tokens spent (66 tokens held by calls in flight)');
    expect(describeBudget(budget({ tokens: 200, spent_tokens: 44, unpriced_calls: 2 }))).toBe(
      '44 of 200 tokens spent · 2 calls of unpriced models'
    );
  });

  it('fills the bar by the tightest limit, the held part after the spent one, never past the end', () => {
    expect(usedShare(budget({ usd: 1, tokens: 100, spent_usd: 0.1, spent_tokens: 50, reserved_tokens: 20 }))).toEqual({
      spent: 0.5,
      held: 0.2
    });
    const nearlyFull = usedShare(budget({ tokens: 100, spent_tokens: 90, reserved_tokens: 30 }));
    expect(nearlyFull.spent).toBeCloseTo(0.9);
    expect(nearlyFull.held).toBeCloseTo(0.1);
    expect(usedShare(budget({ tokens: 100, spent_tokens: 130 }))).toEqual({ spent: 1, held: 0 });
  });
});
