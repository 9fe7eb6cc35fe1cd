import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../src/log.ts';
import { IdleTimeout, type IdleTimeoutHost } from '../../supervisor/idle-timeout.ts';

/** A supervisor as the idle timeout sees it, with every call it makes recorded. */
function fakeHost(over: Partial<IdleTimeoutHost> = {}) {
  const calls = { stops: [] as string[], logged: [] as string[], backlog: 0 };
  const host: IdleTimeoutHost = {
    logger: silentLogger(),
    log: { append: (event, detail) => void calls.logged.push(`${event} ${detail}`) },
    inFlight: () => 0,
    lastJobAt: () => 0,
    isPaused: () => false,
    hasDue: async () => false,
    markBacklog: () => void calls.backlog++,
    stop: (reason) => void calls.stops.push(reason),
    ...over,
  };
  return { host, calls };
}

describe('IdleTimeout', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('stops the supervisor once no job has run for the timeout, and logs why', async () => {
    const { host, calls } = fakeHost();
    const idle = new IdleTimeout(host, 5_000);
    idle.start();
    await vi.advanceTimersByTimeAsync(4_000);
    expect(calls.stops).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls.stops).toEqual(['idle timeout']);
    expect(calls.logged).toEqual(['TIMEOUT no job for 5.0 s (idle timeout 5 s)']);
  });

  it('never stops a busy supervisor, and reports the whole timeout as remaining', async () => {
    const { host, calls } = fakeHost({ inFlight: () => 1 });
    const idle = new IdleTimeout(host, 1_000);
    idle.start();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls.stops).toEqual([]);
    expect(idle.remainingMs()).toBe(1_000);
    idle.stop();
  });

  it('takes due work it was not told about instead of stopping', async () => {
    let due = true;
    const { host, calls } = fakeHost({ hasDue: async () => due });
    const idle = new IdleTimeout(host, 1_000);
    idle.start();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls.backlog).toBe(1);
    expect(calls.stops).toEqual([]);
    due = false;
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls.stops).toEqual(['idle timeout']);
  });

  it('has no timeout with null, takes a new one from set(), and does nothing once stopped (even twice)', async () => {
    const { host, calls } = fakeHost();
    const idle = new IdleTimeout(host, null);
    idle.start();
    expect(idle.remainingMs()).toBeNull();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls.stops).toEqual([]);
    idle.set(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(calls.stops).toEqual(['idle timeout']);

    const other = fakeHost();
    const stopped = new IdleTimeout(other.host, 1_000);
    stopped.stop();
    stopped.start();
    stopped.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(other.calls.stops).toEqual([]);
  });
});
