// The backlog protocol, shared by throughput, cpu and deep queue: jobs queued in bulk
// first, workers booted (as far as each system can without taking jobs), then the clock
// starts with startProcessing() and stops when the database records the last job as
// finished (or at the cap, for systems whose defaults would take hours).
import { nowMs } from '../lib/stats.ts';
import type { SystemAdapter, TaskName, WorkerOptions, BenchPayload } from '../systems/types.ts';
import { CountingProbe, waitDrained, type Drained } from './probe.ts';

export interface DrainParams {
  task: TaskName;
  jobs: number;
  payload: BenchPayload;
  /** Not-due jobs written first (deep queue). */
  filler: number;
  worker: WorkerOptions;
  timeoutMs: number;
  /** Stop measuring this long after the clock started, finished or not (Infinity: never). */
  capMs: number;
}

export interface DrainResult {
  jobsPerSec: number;
  drainMs: number;
  /** Worker boot before the clock starts (not counted). */
  bootMs: number;
  /** Time inside startProcessing() (counted). */
  startMs: number;
  enqueueMs: number;
  fillMs: number;
  /** The cap came before the last job finished: jobsPerSec counts handled jobs. */
  capped: boolean;
  extra: Record<string, number>;
}

/** jobs / (clock start → last job finished), or handled jobs / (clock start → cap). */
export function rateSince(
  t0: number,
  jobs: number,
  probe: CountingProbe,
  drained: Drained,
): { jobsPerSec: number; drainMs: number; capped: boolean } {
  const drainMs = drained.at - t0;
  const done = drained.complete ? jobs : Math.min(jobs, probe.handledCount);
  return { jobsPerSec: done / (drainMs / 1000), drainMs, capped: !drained.complete };
}

export async function runDrain(adapter: SystemAdapter, p: DrainParams): Promise<DrainResult> {
  await adapter.setup();
  let fillMs = 0;
  if (p.filler > 0) {
    const f0 = nowMs();
    await adapter.fillNotDue(p.filler);
    fillMs = nowMs() - f0;
  }
  const payloads = Array.from({ length: p.jobs }, () => ({ ...p.payload }));
  const e0 = nowMs();
  await adapter.enqueueBulk(p.task, payloads);
  const enqueueMs = nowMs() - e0;

  const probe = new CountingProbe();
  const b0 = nowMs();
  await adapter.bootWorkers(probe, p.worker);
  const bootMs = nowMs() - b0;
  const t0 = nowMs();
  await adapter.startProcessing();
  const startMs = nowMs() - t0;
  const drained = await waitDrained(adapter, probe, p.jobs, p.timeoutMs, t0 + p.capMs);
  const extra = (await adapter.extraStats?.()) ?? {};
  await adapter.stopWorkers();
  return { ...rateSince(t0, p.jobs, probe, drained), bootMs, startMs, enqueueMs, fillMs, extra };
}
