// The arriving workload's producer: a process of its own, as a user's app would be,
// with its own connections. It connects (untimed), says "ready", and on "go" enqueues
// the jobs with the system's bulk API, then reports when it began and ended on the
// machine-wide monotonic clock.
// Usage: forked by bench/workloads/arriving.ts with an IPC channel and its EnqueuerSpec in the environment (specEnv).
import { readSpec } from './lib/procs.ts';
import { nowMs } from './lib/stats.ts';
import { createAdapter } from './systems/index.ts';
import type { Profile, SystemName, TaskName } from './systems/types.ts';

export interface EnqueuerSpec {
  system: SystemName;
  connectionString: string;
  schema: string;
  /** The workers' profile: a producer configures its connection the way its app does. */
  profile: Profile;
  task: TaskName;
  jobs: number;
}

export type EnqueuerCommand = { kind: 'go' };
/** "done" carries `error` when the enqueue threw. */
export type EnqueuerMessage = { kind: 'ready' } | { kind: 'done'; startedAt: number; endedAt: number; error?: string };

const spec = readSpec<EnqueuerSpec>();
const send = (m: EnqueuerMessage) => new Promise<void>((resolve) => process.send!(m, () => resolve()));
const adapter = await createAdapter(spec.system, { connectionString: spec.connectionString, schema: spec.schema, profile: spec.profile });
await adapter.setup();
const payloads = Array.from({ length: spec.jobs }, () => ({}));

process.once('message', async (_m: EnqueuerCommand) => {
  const startedAt = nowMs();
  let error: string | undefined;
  await adapter.enqueueBulk(spec.task, payloads).catch((err: Error) => (error = String(err?.stack ?? err)));
  await send({ kind: 'done', startedAt, endedAt: nowMs(), error });
  await adapter.close().catch(() => undefined);
  // Libraries may leave timers behind after close(); the answer is out, so leave.
  process.exit(0);
});
// The parent going away must not leave this process behind.
process.on('disconnect', () => process.exit(0));
await send({ kind: 'ready' });
