import { describe, expect, it } from 'vitest';
import { parseRate, rateText, settingsPatch } from '../../src/queues.ts';

describe('queue settings', () => {
  it('reads rates as N/INTERVAL text or { limit, intervalMs }, and prints them back', () => {
    expect(parseRate('rate', '10/s')).toEqual({ limit: 10, intervalMs: 1_000 });
    expect(parseRate('rate', '100/m')).toEqual({ limit: 100, intervalMs: 60_000 });
    expect(parseRate('rate', '5/500ms')).toEqual({ limit: 5, intervalMs: 500 });
    expect(parseRate('rate', '2 / 10s')).toEqual({ limit: 2, intervalMs: 10_000 });
    expect(parseRate('rate', '1/H')).toEqual({ limit: 1, intervalMs: 3_600_000 });
    expect(parseRate('rate', { limit: 3, intervalMs: 250 })).toEqual({ limit: 3, intervalMs: 250 });
    expect(parseRate('rate', null)).toBeNull();
    for (const [rate, text] of [
      [{ limit: 10, intervalMs: 1_000 }, '10/s'],
      [{ limit: 2, intervalMs: 10_000 }, '2/10s'],
      [{ limit: 100, intervalMs: 60_000 }, '100/m'],
      [{ limit: 5, intervalMs: 500 }, '5/500ms'],
    ] as const) {
      expect(rateText(rate)).toBe(text);
      expect(parseRate('rate', text)).toEqual(rate);
    }
    expect(rateText(null)).toBe('-');
  });

  it('refuses what is not a rate or a limit with GRAPEVINE_QUEUE_LIMIT_INVALID', () => {
    for (const bad of ['10', '10/', '/s', '0/s', '-1/s', '10/0s', '1.5/s', '10/week', 10]) {
      expect(() => parseRate('rate', bad)).toThrow(expect.objectContaining({ code: 'GRAPEVINE_QUEUE_LIMIT_INVALID' }));
    }
    expect(() => settingsPatch({ concurrency: 2_000_000 })).toThrow(/from 1 to 1000000/);
    expect(() => settingsPatch({ groupRate: { limit: 1, intervalMs: 0 } })).toThrow(/interval/);
  });

  it('maps settings to the stored fields, null clearing one and a missing one left alone', () => {
    expect(settingsPatch({ concurrency: 5, rate: null })).toEqual({ concurrency: 5, rate_limit: null, rate_interval_ms: null });
    expect(settingsPatch({ groupConcurrency: 1, groupRate: '3/m' })).toEqual({
      group_concurrency: 1,
      group_rate_limit: 3,
      group_rate_interval_ms: 60_000,
    });
  });
});
