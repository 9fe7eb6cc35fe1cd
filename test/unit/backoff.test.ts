import { describe, expect, it } from 'vitest';
import { backoffMs } from '../../src/backoff.ts';

describe('backoffMs', () => {
  it('starts at the base and doubles with each attempt until the cap', () => {
    const delays = Array.from({ length: 8 }, (_, attempt) => backoffMs({ attempt, baseMs: 50, maxMs: 2_000 }));
    expect(delays).toEqual([50, 100, 200, 400, 800, 1_600, 2_000, 2_000]);
  });

  it('stays at the cap for attempts far past any exponent a double can hold', () => {
    expect(backoffMs({ attempt: 1_023, baseMs: 1, maxMs: 500 })).toBe(500);
    expect(backoffMs({ attempt: 5_000, baseMs: 250, maxMs: 30_000 })).toBe(30_000);
    expect(backoffMs({ attempt: Number.MAX_SAFE_INTEGER, baseMs: 100, maxMs: 2_000 })).toBe(2_000);
  });

  it('treats a negative attempt as the first', () => {
    expect(backoffMs({ attempt: -3, baseMs: 500, maxMs: 30_000 })).toBe(500);
  });

  it('never answers more than the cap, even when the base is above it', () => {
    expect(backoffMs({ attempt: 0, baseMs: 5_000, maxMs: 1_000 })).toBe(1_000);
  });

  it('answers 0, not NaN, for a zero base or cap', () => {
    expect(backoffMs({ attempt: 2_000, baseMs: 0, maxMs: 1_000 })).toBe(0);
    expect(backoffMs({ attempt: 3, baseMs: 10, maxMs: 0 })).toBe(0);
  });

  it('with jitter, spreads the delay between half of it and all of it', () => {
    const at = (random: number) => backoffMs({ attempt: 3, baseMs: 100, maxMs: 30_000, jitter: true, random: () => random });
    expect(at(0)).toBe(400);
    expect(at(0.5)).toBe(600);
    expect(at(0.999)).toBeCloseTo(799.6);
    const capped = backoffMs({ attempt: 30, baseMs: 100, maxMs: 30_000, jitter: true, random: () => 0.25 });
    expect(capped).toBe(18_750);
  });

  it('with jitter and the default random source, stays inside its bounds', () => {
    for (let i = 0; i < 200; i++) {
      const d = backoffMs({ attempt: 2, baseMs: 100, maxMs: 30_000, jitter: true });
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(400);
    }
  });
});
