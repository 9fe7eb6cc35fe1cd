import { describe, expect, it } from 'vitest';
import { BLOCKING_BUDGET_MS, FIRST_CLAIM_LIMIT, firstClaimLimit, nextClaimLimit } from '../../supervisor/claim-limit.ts';

describe('claim limit', () => {
  it('starts small, and never above the concurrency', () => {
    expect(firstClaimLimit(256)).toBe(FIRST_CLAIM_LIMIT);
    expect(firstClaimLimit(3)).toBe(3);
  });

  it('doubles while handlers yield at once, up to the concurrency', () => {
    let limit = firstClaimLimit(256);
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) {
      limit = nextClaimLimit(limit, 256, limit, 0.01 * limit);
      seen.push(limit);
    }
    expect(seen).toEqual([16, 32, 64, 128, 256, 256, 256, 256]);
  });

  it('gives handlers that block the event loop as many jobs as fit in the budget', () => {
    // 25 ms of computation per job: four of them fill the budget.
    expect(nextClaimLimit(8, 256, 8, 8 * (BLOCKING_BUDGET_MS / 4))).toBe(4);
    // One job longer than the budget: one at a time, never none.
    expect(nextClaimLimit(4, 256, 1, 5 * BLOCKING_BUDGET_MS)).toBe(1);
  });

  it('recovers once the handlers turn quick again', () => {
    expect(nextClaimLimit(1, 256, 1, 0)).toBe(2);
  });

  it('keeps its limit after a batch that claimed nothing', () => {
    expect(nextClaimLimit(64, 256, 0, 0)).toBe(64);
  });
});
