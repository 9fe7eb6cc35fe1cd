// One job every `intervalMs` into an idle worker, enqueued one at a time with the
// system's single-job API; latency = handler start - moment the enqueue was sent,
// both read from the machine-wide monotonic clock.
import { nowMs, percentiles, sleep, type Percentiles } from '../lib/stats.ts';
import type { SystemAdapter, WorkerOptions } from '../systems/types.ts';
import { CountingProbe } from './probe.ts';

export interface LatencyParams {
  samples: number;
  warmup: number;
  intervalMs: number;
  worker: WorkerOptions;
  timeoutMs: number;
}

export interface LatencyResult {
  latency: Percentiles;
  samples: number[];
}

export async function runLatency(adapter: SystemAdapter, p: LatencyParams): Promise<LatencyResult> {
  await adapter.setup();
  const probe = new CountingProbe();
  await adapter.bootWorkers(probe, p.worker);
  await adapter.startProcessing();
  await sleep(300); // let the worker settle into its idle wait
  const total = p.warmup + p.samples;
  const begin = nowMs();
  for (let i = 0; i < total; i++) {
    // Warm-up jobs carry seq -1 and are not recorded.
    await adapter.enqueueOne('latency', { sentAt: nowMs(), seq: i < p.warmup ? -1 : i });
    const nextSlot = begin + (i + 1) * p.intervalMs;
    const wait = nextSlot - nowMs();
    if (wait > 0) await sleep(wait);
  }
  const deadline = nowMs() + p.timeoutMs;
  while (probe.handledCount < total && nowMs() < deadline) await sleep(10);
  await adapter.stopWorkers();
  if (probe.latencies.length < p.samples) {
    throw new Error(`${adapter.name}: only ${probe.latencies.length}/${p.samples} latency jobs started`);
  }
  return { latency: percentiles(probe.latencies), samples: probe.latencies };
}
