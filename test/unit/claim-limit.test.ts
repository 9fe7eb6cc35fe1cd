import { describe, expect, it } from 'vitest';
import {
  BLOCKING_BUDGET_MS,
  effectiveClaimLimit,
  FIRST_CLAIM_LIMIT,
  firstClaimLimit,
  maxClaimLimit,
  nextClaimLimit,
  PREFETCH_FACTOR,
} from '../../supervisor/claim-limit.ts';

describe('claim limit', () => {
  it('starts small, and never above the concurrency', () => {
    expect(firstClaimLimit(256)).toBe(FIRST_CLAIM_LIMIT);
    expect(firstClaimLimit(3)).toBe(3);
  });

  it('doubles while handlers yield at once, up to twice the concurrency', () => {
    let limit = 8;
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) {
      limit = nextClaimLimit(limit, 256, limit, 0.01 * limit);
      seen.push(limit);
    }
    expect(PREFETCH_FACTOR).toBe(2);
    expect(seen).toEqual([16, 32, 64, 128, 256, 512, 512, 512]);
    expect(maxClaimLimit(256)).toBe(512);
  });

  it('gives handlers that block the event loop as many jobs as fit in the budget', () => {
    // 25 ms of computation per job: four of them fill the budget.
    expect(nextClaimLimit(8, 256, 8, 8 * (BLOCKING_BUDGET_MS / 4))).toBe(4);
    // One job longer than the budget: one at a time, never none.
    expect(nextClaimLimit(4, 256, 1, 5 * BLOCKING_BUDGET_MS)).toBe(1);
    // Blocking handlers never prefetch, however high their concurrency.
    expect(nextClaimLimit(512, 256, 512, 512 * (BLOCKING_BUDGET_MS / 4))).toBe(4);
    // 0.25 ms each: 400 fit, more than the concurrency of 256 but not twice it.
    expect(nextClaimLimit(256, 256, 256, 256 * (BLOCKING_BUDGET_MS / 400))).toBe(256);
    // 20 ms each with a concurrency of 4: five fit, yet the thread holds no more than its 4.
    expect(nextClaimLimit(4, 4, 4, 4 * 20)).toBe(4);
  });

  it('holds no more than the concurrency while handlers are slow or not yet known to be quick', () => {
    expect(effectiveClaimLimit(512, 256, false)).toBe(256);
    expect(effectiveClaimLimit(512, 256, true)).toBe(512);
    expect(effectiveClaimLimit(16, 256, false)).toBe(16);
  });

  it('recovers once the handlers turn quick again', () => {
    expect(nextClaimLimit(1, 256, 1, 0)).toBe(2);
  });

  it('keeps its limit after a batch that claimed nothing', () => {
    expect(nextClaimLimit(64, 256, 0, 0)).toBe(64);
  });
});
