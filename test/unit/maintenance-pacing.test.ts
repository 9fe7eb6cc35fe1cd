import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { chorePaceMs, choresDueLocally, leaderIdleTimeoutMs, reapPaceMs } from '../../supervisor/maintenance/pacing.ts';
import { Periodic } from '../../supervisor/periodic.ts';

describe('maintenance pacing', () => {
  it('paces a timed reap at half an interval and a forced one not at all', () => {
    expect(reapPaceMs(500, false)).toBe(250);
    expect(reapPaceMs(501, false)).toBe(250);
    expect(reapPaceMs(500, true)).toBeNull();
  });

  it('asks for the periodic chores only once their period has passed on the local clock', () => {
    expect(choresDueLocally(60_000, 0, 60_000)).toBe(false);
    expect(choresDueLocally(60_001, 0, 60_000)).toBe(true);
    // A supervisor that never asked asks on its first tick.
    expect(choresDueLocally(Date.now(), 0, 60_000)).toBe(true);
  });

  it('lets the fleet run the chores at most once per half period', () => {
    expect(chorePaceMs(60_000)).toBe(30_000);
  });

  it('gives a frozen leader half a lease, never less than a second, before the server ends its transaction', () => {
    expect(leaderIdleTimeoutMs(10_000)).toBe(5_000);
    expect(leaderIdleTimeoutMs(1_500)).toBe(1_000);
  });
});

describe('Periodic', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs on every interval, never two runs at once', async () => {
    let runs = 0;
    let finish: () => void = () => {};
    const periodic = new Periodic(100, () => {
      runs++;
      return new Promise<void>((resolve) => (finish = resolve));
    });
    periodic.start();
    await vi.advanceTimersByTimeAsync(350);
    expect(runs).toBe(1); // the first run is still going
    finish();
    await vi.advanceTimersByTimeAsync(100);
    expect(runs).toBe(2);
    periodic.stop();
  });

  it('tolerates stop before start and a double stop, and a stopped one stays stopped', async () => {
    let runs = 0;
    const periodic = new Periodic(100, async () => {
      runs++;
    });
    periodic.stop();
    periodic.start();
    periodic.stop();
    await vi.advanceTimersByTimeAsync(500);
    expect(runs).toBe(0);

    const other = new Periodic(100, async () => {
      runs++;
    });
    other.start();
    other.start();
    await vi.advanceTimersByTimeAsync(100);
    expect(runs).toBe(1); // started once, however often start() was called
    other.stop();
    other.stop();
    await vi.advanceTimersByTimeAsync(500);
    expect(runs).toBe(1);
  });
});
