// graphile-worker. Tuned: the settings its performance page uses for its own numbers:
// concurrentJobs 24, maxPoolSize 25, localQueue { size: 500 }, completeJobBatchDelay 0,
// failJobBatchDelay 0. Defaults: only the connection and schema (concurrentJobs 1, no
// local queue, no batched completions). Bulk enqueue: WorkerUtils.addJobs (one add_jobs call).
import { Logger, makeWorkerUtils, run, type Runner, type WorkerUtils } from 'graphile-worker';
import pg from 'pg';
import { installedVersion } from '../lib/db.ts';
import { runBenchTask } from './handlers.ts';
import { SQL_PER_ROW_PATH } from '../workloads/enqueue.ts';
import type { AdapterContext, BenchPayload, EnqueuePath, Probe, SystemAdapter, TaskName, WorkerOptions } from './types.ts';

const CONCURRENT_JOBS = 24;
const MAX_POOL_SIZE = 25;
const LOCAL_QUEUE_SIZE = 500;
const BULK_CHUNK = 5000;

// Worker logs every job at debug level and start/stop at info; the bench prints its own.
const silent = new Logger(() => () => {});

export class GraphileAdapter implements SystemAdapter {
  readonly name = 'graphile' as const;
  private readonly ctx: AdapterContext;
  private utils: WorkerUtils | null = null;
  private runner: Runner | null = null;
  private readonly pool: pg.Pool;
  /** Lowest id of the bulk-enqueued jobs: lets unfinished() use the primary key
   * instead of scanning the million not-due rows of the deep-queue workload. */
  private firstId: bigint | null = null;

  constructor(ctx: AdapterContext) {
    this.ctx = ctx;
    this.pool = new pg.Pool({ connectionString: ctx.connectionString, max: 2 });
  }

  private preset() {
    const tuned = {
      concurrentJobs: CONCURRENT_JOBS,
      maxPoolSize: MAX_POOL_SIZE,
      localQueue: { size: LOCAL_QUEUE_SIZE },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    };
    return {
      worker: {
        connectionString: this.ctx.connectionString,
        schema: this.ctx.schema,
        ...(this.ctx.profile === 'tuned' ? tuned : {}),
        logger: silent,
      },
    };
  }

  settings(_opts: WorkerOptions): Record<string, string> {
    const tuned = this.ctx.profile === 'tuned';
    return {
      version: installedVersion('graphile-worker'),
      worker: tuned
        ? `run() in-process, concurrentJobs ${CONCURRENT_JOBS}, maxPoolSize ${MAX_POOL_SIZE}`
        : 'run() in-process with only connectionString and schema (and a silent logger): concurrentJobs default (1), maxPoolSize default (10)',
      batching: tuned
        ? `localQueue.size ${LOCAL_QUEUE_SIZE}, completeJobBatchDelay 0, failJobBatchDelay 0 (docs: worker.graphile.org/docs/performance)`
        : 'defaults: no local queue (each job fetched on demand), completeJobBatchDelay and failJobBatchDelay unset (no batching)',
      ...(tuned
        ? {
            'why these':
              'the configuration behind the numbers on graphile-worker\'s performance page. Its option docs (dist/index.d.ts) suggest localQueue.size "concurrentJobs + 1" as a start and "a much higher number" for very high throughput with extremely fast tasks, and completeJobBatchDelay "starting with … 250"; 250 measured slower than 0 here (5 of 5 interleaved 20,000-job runs)',
          }
        : {}),
      enqueue: `bulk: WorkerUtils.addJobs in chunks of ${BULK_CHUNK}; single: WorkerUtils.addJob; the enqueue workload also times "${SQL_PER_ROW_PATH}" with its add_job()`,
      handlers: 'JS functions on the main thread (taskList); CPU work is therefore single-threaded',
      finished: 'row deleted from _private_jobs (graphile deletes completed jobs)',
    };
  }

  async setup(): Promise<void> {
    this.utils = await makeWorkerUtils({ preset: this.preset() });
    await this.utils.migrate();
  }

  async enqueueBulk(task: TaskName, payloads: BenchPayload[]): Promise<void> {
    for (let i = 0; i < payloads.length; i += BULK_CHUNK) {
      const specs = payloads.slice(i, i + BULK_CHUNK).map((payload) => ({ identifier: task, payload }));
      const jobs = await this.utils!.addJobs(specs);
      for (const j of jobs) if (this.firstId === null || BigInt(j.id) < this.firstId) this.firstId = BigInt(j.id);
    }
  }

  async enqueueKeyed(task: TaskName, keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += BULK_CHUNK) {
      await this.utils!.addJobs(keys.slice(i, i + BULK_CHUNK).map((jobKey) => ({ identifier: task, payload: {}, jobKey })));
    }
  }

  /** Its SQL add_job() once per job in one statement, beside grapevine's. */
  async enqueuePaths(): Promise<EnqueuePath[]> {
    const s = `"${this.ctx.schema}"`;
    return [
      {
        name: SQL_PER_ROW_PATH,
        run: async (task, count) => {
          await this.pool.query(`SELECT ${s}.add_job($1, '{}'::json) FROM generate_series(1, $2::int)`, [task, count]);
        },
      },
    ];
  }

  async enqueueOne(task: TaskName, payload: BenchPayload): Promise<void> {
    await this.utils!.addJob(task, payload);
  }

  async fillNotDue(count: number): Promise<void> {
    const s = `"${this.ctx.schema}"`;
    await this.pool.query(`INSERT INTO ${s}._private_tasks (identifier) VALUES ('noop') ON CONFLICT DO NOTHING`);
    await this.pool.query(
      `INSERT INTO ${s}._private_jobs (task_id, payload, run_at)
       SELECT t.id, '{}'::json, now() + interval '6 hours'
       FROM ${s}._private_tasks t, generate_series(1, $1::int) WHERE t.identifier = 'noop'`,
      [count],
    );
    await this.pool.query(`VACUUM (ANALYZE) ${s}._private_jobs`);
  }

  private probe: Probe | null = null;

  async bootWorkers(probe: Probe, _opts: WorkerOptions): Promise<void> {
    this.probe = probe;
  }

  /** graphile-worker has no paused start: run() boots and starts at once, so its
   * (short) boot is inside the measured time. */
  async startProcessing(): Promise<void> {
    const probe = this.probe!;
    const handler = (task: string) => async (payload: unknown) => runBenchTask(task, payload as BenchPayload, probe);
    this.runner = await run({
      preset: this.preset(),
      taskList: { noop: handler('noop'), latency: handler('latency'), cpu: handler('cpu') },
      noHandleSignals: true,
    });
  }

  async unfinished(): Promise<number> {
    const r = await this.pool.query(`SELECT count(*)::int AS n FROM "${this.ctx.schema}"._private_jobs WHERE id >= $1`, [
      String(this.firstId ?? 0n),
    ]);
    return r.rows[0].n;
  }

  async stopWorkers(): Promise<void> {
    await this.runner?.stop();
    this.runner = null;
  }

  async close(): Promise<void> {
    await this.utils?.release();
    await this.pool.end();
  }
}
