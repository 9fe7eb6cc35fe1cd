// The arriving protocol: each system's workers boot and start, idle; then a producer in
// its own process (bench/enqueuer.ts) enqueues the jobs in bulk while they run.
// Throughput = jobs / (first enqueue call → the database recording the last job as
// finished), so the enqueue itself, and every job taken while it goes on, is inside.
import { forkControlled } from '../lib/procs.ts';
import { nowMs, sleep } from '../lib/stats.ts';
import type { EnqueuerCommand, EnqueuerMessage, EnqueuerSpec } from '../enqueuer.ts';
import type { Profile, SystemAdapter, WorkerOptions } from '../systems/types.ts';
import { rateSince, type DrainResult } from './drain.ts';
import { CountingProbe, waitDrained } from './probe.ts';

export interface ArrivingParams {
  jobs: number;
  connectionString: string;
  schema: string;
  profile: Profile;
  worker: WorkerOptions;
  timeoutMs: number;
  capMs: number;
}

/** Long enough for every system to settle into its idle wait (LISTEN, a poll, a blocking fetch). */
const IDLE_MS = 500;

export async function runArriving(adapter: SystemAdapter, p: ArrivingParams): Promise<DrainResult> {
  await adapter.setup();
  // The producer connects before the workers boot, so its start-up competes with nothing timed.
  const spec: EnqueuerSpec = {
    system: adapter.name,
    connectionString: p.connectionString,
    schema: p.schema,
    profile: p.profile,
    task: 'noop',
    jobs: p.jobs,
  };
  const producer = await forkControlled<EnqueuerCommand, EnqueuerMessage>('enqueuer.ts', spec, 30_000);
  try {
    const probe = new CountingProbe();
    const b0 = nowMs();
    await adapter.bootWorkers(probe, p.worker);
    const bootMs = nowMs() - b0;
    const s0 = nowMs();
    await adapter.startProcessing();
    const startMs = nowMs() - s0;
    await sleep(IDLE_MS);
    const finished = producer.next('done', p.timeoutMs);
    producer.send({ kind: 'go' });
    const done = await finished;
    if (done.error) throw new Error(`enqueuer: ${done.error}`);
    const drained = await waitDrained(adapter, probe, p.jobs, p.timeoutMs, done.startedAt + p.capMs);
    const extra = (await adapter.extraStats?.()) ?? {};
    await adapter.stopWorkers();
    return {
      ...rateSince(done.startedAt, p.jobs, probe, drained),
      bootMs,
      startMs,
      enqueueMs: done.endedAt - done.startedAt,
      fillMs: 0,
      extra,
    };
  } finally {
    if (producer.child.exitCode === null) producer.child.kill('SIGKILL');
  }
}
