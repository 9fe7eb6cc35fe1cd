// throughput, cpu and deep queue share one shape: jobs queued in bulk first, workers
// booted (as far as each system can without taking jobs), then the clock starts with
// startProcessing() and stops when the database records the last job as finished.
import { nowMs } from '../lib/stats.ts';
import type { SystemAdapter, TaskName, WorkerOptions, BenchPayload } from '../systems/types.ts';
import { CountingProbe, waitDrained } from './probe.ts';

export interface DrainParams {
  task: TaskName;
  jobs: number;
  payload: BenchPayload;
  /** Not-due jobs written first (deep queue). */
  filler: number;
  worker: WorkerOptions;
  timeoutMs: number;
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
  extra: Record<string, number>;
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
  const t1 = await waitDrained(adapter, probe, p.jobs, p.timeoutMs);
  const extra = (await adapter.extraStats?.()) ?? {};
  await adapter.stopWorkers();
  const drainMs = t1 - t0;
  return { jobsPerSec: p.jobs / (drainMs / 1000), drainMs, bootMs, startMs, enqueueMs, fillMs, extra };
}
