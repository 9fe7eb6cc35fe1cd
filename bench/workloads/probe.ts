// Collects what handlers report and tells a workload when the DB says it is done.
import { nowMs, sleep } from '../lib/stats.ts';
import type { BenchPayload, Probe, SystemAdapter } from '../systems/types.ts';

export class CountingProbe implements Probe {
  handledCount = 0;
  readonly latencies: number[] = [];
  private waiters: { target: number; resolve: () => void }[] = [];

  latencyStart(payload: BenchPayload, atMs: number): void {
    if (typeof payload.sentAt === 'number' && (payload.seq ?? 0) >= 0) this.latencies.push(atMs - payload.sentAt);
  }

  handled(count: number): void {
    this.handledCount += count;
    this.waiters = this.waiters.filter((w) => {
      if (this.handledCount < w.target) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `target` handlers have returned (no polling while jobs run). */
  whenHandled(target: number): Promise<void> {
    if (this.handledCount >= target) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ target, resolve }));
  }
}

export interface Drained {
  /** Monotonic time the database first said every job had finished, or the cap's time. */
  at: number;
  /** False when the cap came first: the workload reports handled jobs / elapsed then. */
  complete: boolean;
}

/**
 * Waits until every job is recorded as finished in the database, or until the
 * monotonic time `capAt`. The handler count says when to start looking, so the DB is
 * not polled while the system is busy (polling would steal the CPU the systems
 * compete for); a slow safety poll covers systems whose handlers run more than once
 * per job.
 */
export async function waitDrained(
  adapter: SystemAdapter,
  probe: CountingProbe,
  jobs: number,
  timeoutMs: number,
  capAt = Infinity,
): Promise<Drained> {
  const deadline = nowMs() + timeoutMs;
  let safety = false;
  const safetyPoll = (async () => {
    let next = nowMs() + 1000;
    while (!safety && nowMs() < deadline && nowMs() < capAt) {
      await sleep(20); // short naps, so the loop ends promptly once the drain is seen
      if (!safety && nowMs() >= next) {
        next = nowMs() + 1000;
        if ((await adapter.unfinished()) === 0) safety = true;
      }
    }
  })();
  await Promise.race([probe.whenHandled(jobs), safetyPoll]);
  while (nowMs() < deadline && nowMs() < capAt) {
    // The snapshot is taken when the query starts, so that is when "all finished" held.
    const asOf = nowMs();
    if ((await adapter.unfinished()) === 0) {
      safety = true;
      await safetyPoll;
      return { at: asOf, complete: true };
    }
    await sleep(2);
  }
  safety = true;
  if (nowMs() >= capAt) return { at: nowMs(), complete: false };
  throw new Error(`${adapter.name}: not drained after ${timeoutMs} ms (handled ${probe.handledCount}/${jobs})`);
}
