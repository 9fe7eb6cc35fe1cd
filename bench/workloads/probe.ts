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
    this.waiters = this.waiters.filter((w) => (this.handledCount >= w.target ? (w.resolve(), false) : true));
  }

  /** Resolves once `target` handlers have returned (no polling while jobs run). */
  whenHandled(target: number): Promise<void> {
    if (this.handledCount >= target) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ target, resolve }));
  }
}

/**
 * Waits until every job is recorded as finished in the database. The handler count
 * says when to start looking, so the DB is not polled while the system is busy
 * (polling would steal the CPU the systems compete for); a slow safety poll covers
 * systems whose handlers run more than once per job. Returns the monotonic finish time.
 */
export async function waitDrained(adapter: SystemAdapter, probe: CountingProbe, jobs: number, timeoutMs: number): Promise<number> {
  const deadline = nowMs() + timeoutMs;
  let safety = false;
  const safetyPoll = (async () => {
    let next = nowMs() + 1000;
    while (!safety && nowMs() < deadline) {
      await sleep(20); // short naps, so the loop ends promptly once the drain is seen
      if (!safety && nowMs() >= next) {
        next = nowMs() + 1000;
        if ((await adapter.unfinished()) === 0) safety = true;
      }
    }
  })();
  await Promise.race([probe.whenHandled(jobs), safetyPoll]);
  while (nowMs() < deadline) {
    // The snapshot is taken when the query starts, so that is when "all finished" held.
    const asOf = nowMs();
    if ((await adapter.unfinished()) === 0) {
      safety = true;
      await safetyPoll;
      return asOf;
    }
    await sleep(2);
  }
  safety = true;
  throw new Error(`${adapter.name}: not drained after ${timeoutMs} ms (handled ${probe.handledCount}/${jobs})`);
}
