// BullMQ 6 on its PostgreSQL backend (createPostgresBackend, docs: guide/postgresql).
// One queue, job name = task. Tuned: Worker concurrency from the range the BullMQ docs
// benchmark ("concurrency 8–32") with a pool sized to it, as their tuning tips advise.
// Defaults: Worker and Queue with only the connection (concurrency 1, default pool).
import { Queue, Worker, createPostgresBackend, runMigrations, type PostgresConnectionOptions, type PostgresQueueBackend } from 'bullmq';
import pg from 'pg';
import { installedVersion } from '../lib/db.ts';
import { runBenchTask } from './handlers.ts';
import type { AdapterContext, BenchPayload, Probe, SystemAdapter, TaskName, WorkerOptions } from './types.ts';

const QUEUE = 'bench';
const CONCURRENCY = 16;
const WORKER_POOL_MAX = CONCURRENCY + 2;
const BULK_CHUNK = 1000;
const BULK_PARALLEL = 4;

export class BullMqAdapter implements SystemAdapter {
  readonly name = 'bullmq' as const;
  private readonly ctx: AdapterContext;
  private queue: Queue<any, any, string, any, any, string, PostgresQueueBackend, PostgresConnectionOptions> | null = null;
  private worker: Worker<any, any, string, PostgresQueueBackend, any, PostgresConnectionOptions> | null = null;
  private running: Promise<unknown> | null = null;
  private readonly pool: pg.Pool;

  constructor(ctx: AdapterContext) {
    this.ctx = ctx;
    this.pool = new pg.Pool({ connectionString: ctx.connectionString, max: 2 });
  }

  settings(_opts: WorkerOptions): Record<string, string> {
    if (this.ctx.profile === 'defaults') {
      return {
        version: `${installedVersion('bullmq')}, PostgreSQL backend`,
        connection: '{ connectionString, schema }: pool default (10) for the worker and the producer',
        worker:
          'new Worker(queue, fn, { connection, autorun: false }, createPostgresBackend) then worker.run(), in-process: concurrency default (1), every other option default',
        enqueue: `bulk: queue.addBulk in chunks of ${BULK_CHUNK}, ${BULK_PARALLEL} at a time; single: queue.add`,
        migrations: 'runMigrations(client, schema) once in setup, as the guide says',
        finished: "state = 'completed' (removeOnComplete default: kept)",
      };
    }
    return {
      version: `${installedVersion('bullmq')}, PostgreSQL backend`,
      connection: `{ connectionString, schema } — pool max ${WORKER_POOL_MAX} for the worker, default (10) for the producer`,
      worker: `new Worker(queue, fn, { concurrency: ${CONCURRENCY}, autorun: false }, createPostgresBackend) then worker.run(), in-process, other options default`,
      'why these': 'the BullMQ PostgreSQL guide benchmarks "concurrency 8–32"; 8, 16 and 32 measured within 2% of each other here',
      enqueue: `bulk: queue.addBulk in chunks of ${BULK_CHUNK}, ${BULK_PARALLEL} at a time; single: queue.add`,
      migrations: 'runMigrations(client, schema) once in setup, as the guide says',
      handlers: 'processor on the main thread; CPU work is single-threaded (sandboxed processors not used)',
      finished: "state = 'completed' (removeOnComplete default: kept)",
    };
  }

  private connection(max?: number) {
    return { connectionString: this.ctx.connectionString, schema: this.ctx.schema, ...(max ? { max } : {}) };
  }

  async setup(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await runMigrations(client, this.ctx.schema);
    } finally {
      client.release();
    }
    this.queue = new Queue(QUEUE, { connection: this.connection() }, createPostgresBackend);
    await this.queue.waitUntilReady();
  }

  async enqueueBulk(task: TaskName, payloads: BenchPayload[]): Promise<void> {
    const chunks: BenchPayload[][] = [];
    for (let i = 0; i < payloads.length; i += BULK_CHUNK) chunks.push(payloads.slice(i, i + BULK_CHUNK));
    let next = 0;
    const lane = async () => {
      while (next < chunks.length) {
        const chunk = chunks[next++];
        await this.queue!.addBulk(chunk.map((data) => ({ name: task, data })));
      }
    };
    await Promise.all(Array.from({ length: BULK_PARALLEL }, lane));
  }

  async enqueueOne(task: TaskName, payload: BenchPayload): Promise<void> {
    await this.queue!.add(task, payload);
  }

  async fillNotDue(count: number): Promise<void> {
    const s = `"${this.ctx.schema}"`;
    // Delayed jobs are BullMQ's "pending, not due yet" state.
    await this.pool.query(
      `WITH t AS (SELECT (extract(epoch FROM now()) * 1000)::bigint AS ms)
       INSERT INTO ${s}.job (queue, id, seq, name, state, data, opts, delay_ms, added_at_ms, process_at_ms)
       SELECT $2, 'filler-' || g, nextval('${s}.job_seq'), 'noop', 'delayed', '{}', '{}',
              21600000, t.ms, t.ms + 21600000
       FROM t, generate_series(1, $1::int) g`,
      [count, QUEUE],
    );
    await this.pool.query(`VACUUM (ANALYZE) ${s}.job`);
  }

  /** autorun: false is BullMQ's documented way to create a worker that waits for run(). */
  async bootWorkers(probe: Probe, _opts: WorkerOptions): Promise<void> {
    this.worker = new Worker(
      QUEUE,
      async (job) => runBenchTask(job.name, job.data as BenchPayload, probe),
      this.ctx.profile === 'tuned'
        ? { connection: this.connection(WORKER_POOL_MAX), concurrency: CONCURRENCY, autorun: false }
        : { connection: this.connection(), autorun: false },
      createPostgresBackend,
    );
    this.worker.on('error', (err) => console.error('[bullmq] worker error', err));
    await this.worker.waitUntilReady();
  }

  async startProcessing(): Promise<void> {
    // run() resolves only when the worker closes.
    this.running = this.worker!.run().catch((err) => console.error('[bullmq] run failed', err));
  }

  async unfinished(): Promise<number> {
    const r = await this.pool.query(
      `SELECT count(*)::int AS n FROM "${this.ctx.schema}".job WHERE queue = $1 AND state IN ('waiting', 'active')`,
      [QUEUE],
    );
    return r.rows[0].n;
  }

  async stopWorkers(): Promise<void> {
    await this.worker?.close();
    await this.running;
    this.worker = null;
  }

  async close(): Promise<void> {
    await this.queue?.close();
    await this.pool.end();
  }
}
