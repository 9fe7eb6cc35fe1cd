// The enqueue workload: no workers, an empty queue, and `jobs` no-op jobs enqueued in bulk
// with the system's client API, then with each other path it offers (grapevine: SQL).
// Each path first enqueues a small warm-up batch, untimed, as a running app would have.
import { nowMs } from '../lib/stats.ts';
import type { EnqueuePath, SystemAdapter } from '../systems/types.ts';

/** The client bulk API's row in the table (each system's own name for it is in its settings). */
export const CLIENT_PATH = 'client bulk API';
/** One add_job() call per job in one SQL statement: how a trigger or another language enqueues (grapevine, graphile-worker). */
export const SQL_PER_ROW_PATH = 'SQL: SELECT add_job(...) FROM generate_series';
/** Jobs with keys: the first half new, the second half the same keys again while their jobs are pending. */
export const KEYED_PATH = 'client bulk API, keyed (half duplicates)';
const WARMUP_JOBS = 100;

export interface EnqueueResult {
  jobs: number;
  /** Milliseconds per path, for `jobs` jobs. */
  enqueueMs: Record<string, number>;
}

export async function runEnqueue(adapter: SystemAdapter, jobs: number): Promise<EnqueueResult> {
  await adapter.setup();
  const client: EnqueuePath = {
    name: CLIENT_PATH,
    run: (task, count) =>
      adapter.enqueueBulk(
        task,
        Array.from({ length: count }, () => ({})),
      ),
  };
  const enqueueMs: Record<string, number> = {};
  for (const path of [client, ...((await adapter.enqueuePaths?.()) ?? [])]) {
    await path.run('noop', WARMUP_JOBS);
    const t0 = nowMs();
    await path.run('noop', jobs);
    enqueueMs[path.name] = nowMs() - t0;
  }
  if (adapter.enqueueKeyed) {
    const keyed = async (prefix: string, count: number) => {
      const keys = Array.from({ length: Math.ceil(count / 2) }, (_, i) => `${prefix}:${i}`);
      await adapter.enqueueKeyed!('noop', keys);
      await adapter.enqueueKeyed!('noop', keys.slice(0, count - keys.length));
    };
    await keyed('warm-up', WARMUP_JOBS);
    const t0 = nowMs();
    await keyed('timed', jobs);
    enqueueMs[KEYED_PATH] = nowMs() - t0;
  }
  return { jobs, enqueueMs };
}
