import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { OPTION_RANGES, startSupervisor } from '../../supervisor/index.ts';

// Refused before any connection is made: the address below is never dialled.
const base = { connectionString: 'postgres://nobody@127.0.0.1:1/none', tasks: '/nonexistent' };

describe('startSupervisor options', () => {
  it('refuses every numeric option outside its range, naming the option, the value and the range', async () => {
    for (const [name, range] of Object.entries(OPTION_RANGES)) {
      for (const bad of [range.min - 1, range.max + 1, 1.5, '10']) {
        const err = await startSupervisor({ ...base, [name]: bad }).catch((e) => e);
        expect(err, `${name}: ${String(bad)}`).toMatchObject({ code: 'GRAPEVINE_CONFIG_INVALID' });
        expect(err.message).toBe(`${name} must be an integer from ${range.min} to ${range.max}, got ${JSON.stringify(bad)}`);
      }
    }
  });

  it('keeps every numeric default inside its own range', () => {
    const defaults: Record<string, unknown> = { ...DEFAULTS };
    for (const [name, range] of Object.entries(OPTION_RANGES)) {
      const value = defaults[name];
      if (value === undefined) continue; // computed (threads) or off (idleTimeoutMs)
      expect(value, name).toBeGreaterThanOrEqual(range.min);
      expect(value, name).toBeLessThanOrEqual(range.max);
    }
  });

  it('refuses a lease shorter than two heartbeats', async () => {
    await expect(startSupervisor({ ...base, heartbeatIntervalMs: 1_000, leaseMs: 1_500 })).rejects.toThrow(
      'leaseMs (1500) must be at least twice heartbeatIntervalMs (1000), or live jobs would be reaped',
    );
  });
});
