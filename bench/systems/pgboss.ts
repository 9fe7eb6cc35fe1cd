// pg-boss 12. Tuned: LISTEN/NOTIFY on (useListenNotify + queue notify), batch fetch (work
// batchSize, burst fetching while batches come back full), the shortest polling interval.
// Defaults: new PgBoss({ connectionString, schema }), createQueue(name), work(name, fn).
// Bulk enqueue: insert().
import { PgBoss } from 'pg-boss';
import pg from 'pg';
import { installedVersion } from '../lib/db.ts';
import { runBenchTask } from './handlers.ts';
import type { AdapterContext, BenchPayload, Probe, SystemAdapter, TaskName, WorkerOptions } from './types.ts';

const TASKS: readonly TaskName[] = ['noop', 'latency', 'cpu'];
const BATCH_SIZE = 250;
const LOCAL_CONCURRENCY = 2;
const POOL_MAX = 10; // pg-boss default
/** pg-boss's minimum; with NOTIFY active it only applies when the listener is down. */
const POLLING_INTERVAL_S = 0.5;
const BULK_CHUNK = 5000;

export class PgBossAdapter implements SystemAdapter {
  readonly name = 'pgboss' as const;
  private readonly ctx: AdapterContext;
  private boss: PgBoss | null = null;
  private readonly pool: pg.Pool;

  constructor(ctx: AdapterContext) {
    this.ctx = ctx;
    this.pool = new pg.Pool({ connectionString: ctx.connectionString, max: 2 });
  }

  settings(_opts: WorkerOptions): Record<string, string> {
    if (this.ctx.profile === 'defaults') {
      return {
        version: installedVersion('pg-boss'),
        constructor: 'new PgBoss({ connectionString, schema }): useListenNotify default (false), pool max default (10)',
        queues: 'createQueue(name) for noop, latency, cpu: notify default (off)',
        worker:
          'work(name, handler) per queue, in-process, no options: batchSize 1, localConcurrency 1, pollingIntervalSeconds 2 (one job per fetch, and the next fetch after the interval unless the last one ran that long)',
        enqueue: `bulk: insert(name, jobs) in chunks of ${BULK_CHUNK}; single: send(name, data)`,
        finished: "state = 'completed'",
      };
    }
    return {
      version: installedVersion('pg-boss'),
      constructor: `useListenNotify: true, max (pool): ${POOL_MAX}, other options default (supervise/schedule on)`,
      queues: `createQueue(name, { notify: true }) for noop, latency, cpu`,
      worker: `work(name, { batchSize: ${BATCH_SIZE}, localConcurrency: ${LOCAL_CONCURRENCY}, burstWhenBatchFull: true, pollingIntervalSeconds: ${POLLING_INTERVAL_S} }) per queue, in-process (${POLLING_INTERVAL_S} s is the minimum pg-boss accepts; with NOTIFY on, jobs arrive by notification and the backstop poll is notifyPollingIntervalSeconds, 30 s by default)`,
      'why these': `pg-boss documents no throughput preset; ${BATCH_SIZE} x ${LOCAL_CONCURRENCY} = ${BATCH_SIZE * LOCAL_CONCURRENCY} jobs held locally, as many as graphile-worker's documented localQueue.size (larger batches measured faster than smaller ones here: batchSize 50 ~8k/s, 200 ~15k/s on 20,000 jobs)`,
      enqueue: `bulk: insert(name, jobs) in chunks of ${BULK_CHUNK}; single: send(name, data)`,
      handlers: 'batch handler on the main thread, runs each job of the batch in turn; CPU work is single-threaded',
      finished: "state = 'completed'",
    };
  }

  async setup(): Promise<void> {
    const tuned = this.ctx.profile === 'tuned';
    this.boss = new PgBoss({
      connectionString: this.ctx.connectionString,
      schema: this.ctx.schema,
      ...(tuned ? { useListenNotify: true, max: POOL_MAX } : {}),
    });
    this.boss.on('error', (err) => console.error('[pgboss] error', err));
    await this.boss.start();
    // A second instance on the same schema (the arriving workload's enqueuer) finds them made.
    for (const t of TASKS) if (!(await this.boss.getQueue(t))) await this.boss.createQueue(t, tuned ? { notify: true } : {});
  }

  async enqueueBulk(task: TaskName, payloads: BenchPayload[]): Promise<void> {
    for (let i = 0; i < payloads.length; i += BULK_CHUNK) {
      await this.boss!.insert(
        task,
        payloads.slice(i, i + BULK_CHUNK).map((data) => ({ data: { ...data } })),
      );
    }
  }

  async enqueueOne(task: TaskName, payload: BenchPayload): Promise<void> {
    await this.boss!.send(task, { ...payload });
  }

  async fillNotDue(count: number): Promise<void> {
    const s = `"${this.ctx.schema}"`;
    await this.pool.query(
      `INSERT INTO ${s}.job (name, data, start_after, policy, keep_until)
       SELECT 'noop', '{}'::jsonb, now() + interval '6 hours', q.policy, now() + interval '14 days'
       FROM ${s}.queue q, generate_series(1, $1::int) WHERE q.name = 'noop'`,
      [count],
    );
    await this.pool.query(`VACUUM (ANALYZE) ${s}.job_common`);
  }

  private probe: Probe | null = null;

  /** The instance was started in setup(); work() is what begins fetching. */
  async bootWorkers(probe: Probe, _opts: WorkerOptions): Promise<void> {
    this.probe = probe;
  }

  async startProcessing(): Promise<void> {
    const probe = this.probe!;
    const tuned = {
      batchSize: BATCH_SIZE,
      localConcurrency: LOCAL_CONCURRENCY,
      burstWhenBatchFull: true,
      pollingIntervalSeconds: POLLING_INTERVAL_S,
    };
    for (const t of TASKS) {
      await this.boss!.work(t, this.ctx.profile === 'tuned' ? tuned : {}, async (jobs) => {
        for (const job of jobs) runBenchTask(t, job.data as BenchPayload, probe);
      });
    }
  }

  async unfinished(): Promise<number> {
    const r = await this.pool.query(
      `SELECT count(*)::int AS n FROM "${this.ctx.schema}".job
       WHERE name = ANY($1) AND state IN ('created', 'retry', 'active') AND NOT blocked
         AND start_after < now() + interval '1 hour'`,
      [TASKS],
    );
    return r.rows[0].n;
  }

  async stopWorkers(): Promise<void> {
    for (const t of TASKS) await this.boss?.offWork(t, { wait: true });
  }

  async close(): Promise<void> {
    await this.boss?.stop({ graceful: true, timeout: 5000, close: true });
    await this.pool.end();
  }
}
