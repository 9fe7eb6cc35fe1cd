// grapevine, in-process: createClient() for enqueueing, startSupervisor() with the
// bench's task modules (bench/tasks/*.mjs) running in its worker threads. Those report
// back over a BroadcastChannel (lib/channel.mjs). Tuned: the README's high-throughput
// settings; defaults: startSupervisor with only the connection, schema and tasks.
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { repoVersion } from '../lib/db.ts';
import pino from 'pino';
import { DEFAULTS, createClient, startSupervisor, type Client, type Supervisor } from 'grapevine-jobs';
import { listenToThreads } from '../lib/channel.mjs';
import { SQL_PER_ROW_PATH } from '../workloads/enqueue.ts';
import type { AdapterContext, BenchPayload, EnqueuePath, Probe, SystemAdapter, TaskName, WorkerOptions } from './types.ts';

export const TASKS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'tasks');
/**
 * Handler concurrency per thread: grapevine's documented setting for many
 * short jobs (docs/deployment.md, "Sizing"). One claim takes up to this many
 * jobs, and threads x concurrency jobs are in flight, about as many as the
 * other systems hold locally in their tuned settings.
 */
export const GRAPEVINE_CONCURRENCY = 512;
/**
 * Succeeded jobs are deleted rather than kept with their results (the
 * documented high-volume setting; graphile-worker deletes completed jobs too).
 * The default keeps them; the defaults workloads run that way.
 */
export const GRAPEVINE_DELETE_SUCCEEDED = true;
/** CPU-bound handlers want low concurrency (docs/deployment.md): 1 or 2 leave threads idle between jobs, many strand jobs on one thread at the end. */
export const GRAPEVINE_CPU_CONCURRENCY = 4;

const SQL_BULK = 'SQL: add_jobs(all jobs in one argument)';

const concurrencyFor = (opts: WorkerOptions) => (opts.cpuBound ? GRAPEVINE_CPU_CONCURRENCY : GRAPEVINE_CONCURRENCY);

export class GrapevineAdapter implements SystemAdapter {
  readonly name = 'grapevine' as const;
  private readonly ctx: AdapterContext;
  private client: Client | null = null;
  private supervisor: Supervisor | null = null;
  private channel: { close(): void } | null = null;
  private readonly pool: pg.Pool;
  /** Lowest bulk-enqueued id: unfinished() walks the primary key from there instead of
   * counting through the million not-due rows of the deep-queue workload. */
  private firstId: bigint | null = null;

  constructor(ctx: AdapterContext) {
    this.ctx = ctx;
    this.pool = new pg.Pool({ connectionString: ctx.connectionString, max: 2 });
  }

  settings(opts: WorkerOptions): Record<string, string> {
    const supervisor =
      this.ctx.profile === 'defaults'
        ? `startSupervisor({ connectionString, schema, tasks }) in-process, nothing else (the bench's quiet logger aside): threads default (os.availableParallelism() = ${os.availableParallelism()}), concurrency default (${DEFAULTS.concurrency} per thread), deleteSucceeded default (${DEFAULTS.deleteSucceeded}); the same as \`grapevine run --tasks DIR\``
        : `startSupervisor in-process: threads ${opts.threads} (os.availableParallelism() = ${os.availableParallelism()}), concurrency ${GRAPEVINE_CONCURRENCY} per thread (${GRAPEVINE_CPU_CONCURRENCY} for the cpu workload), deleteSucceeded ${GRAPEVINE_DELETE_SUCCEEDED} (succeeded jobs are deleted, as graphile-worker does; the default keeps them with their results), other options default`;
    return {
      version: `${repoVersion()} — this repository, run from its build (dist/, what the npm package runs; npm run bench builds first)`,
      supervisor,
      enqueue: `bulk: client.addJobs (one statement per 5,000 jobs); single: client.addJob; the enqueue workload also times the rows "${SQL_PER_ROW_PATH}" and, when the schema has one, "${SQL_BULK}"`,
      handlers: "task modules in bench/tasks/ run inside the supervisor's worker threads",
      finished: "state = 'succeeded', or the row deleted (deleteSucceeded)",
    };
  }

  async setup(): Promise<void> {
    this.client = createClient({ connectionString: this.ctx.connectionString, schema: this.ctx.schema });
    await this.client.migrate();
  }

  async enqueueBulk(task: TaskName, payloads: BenchPayload[]): Promise<void> {
    const ids = await this.client!.addJobs(payloads.map((payload) => ({ task, payload })));
    for (const id of ids) if (this.firstId === null || BigInt(id) < this.firstId) this.firstId = BigInt(id);
  }

  async enqueueKeyed(task: TaskName, keys: string[]): Promise<void> {
    await this.client!.addJobs(keys.map((key) => ({ task, key })));
  }

  /** SQL enqueue as another language or a trigger would use it: per-row add_job in one
   * statement, and a bulk function taking every job in one argument when the schema has one. */
  async enqueuePaths(): Promise<EnqueuePath[]> {
    const s = `"${this.ctx.schema}"`;
    const paths: EnqueuePath[] = [
      {
        name: SQL_PER_ROW_PATH,
        run: async (task, count) => {
          await this.pool.query(`SELECT ${s}.add_job($1, '{}'::jsonb) FROM generate_series(1, $2::int)`, [task, count]);
        },
      },
    ];
    const bulk = await this.pool.query(
      `SELECT format_type(p.proargtypes[0], NULL) AS arg FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND p.proname = 'add_jobs' AND p.pronargs - p.pronargdefaults = 1
          AND format_type(p.proargtypes[0], NULL) IN ('jsonb', 'jsonb[]')`,
      [this.ctx.schema],
    );
    const arg = bulk.rows[0]?.arg as string | undefined;
    if (arg) {
      const agg = arg === 'jsonb' ? 'jsonb_agg' : 'array_agg';
      paths.push({
        name: SQL_BULK,
        run: async (task, count) => {
          await this.pool.query(
            `SELECT ${s}.add_jobs((SELECT ${agg}(jsonb_build_object('task', $1::text, 'payload', '{}'::jsonb)) FROM generate_series(1, $2::int)))`,
            [task, count],
          );
        },
      });
    }
    return paths;
  }

  async enqueueOne(task: TaskName, payload: BenchPayload): Promise<void> {
    await this.client!.addJob(task, payload);
  }

  async fillNotDue(count: number): Promise<void> {
    const s = `"${this.ctx.schema}"`;
    await this.pool.query(
      `INSERT INTO ${s}.jobs (task, payload, run_at)
       SELECT 'noop', '{}'::jsonb, now() + interval '6 hours' FROM generate_series(1, $1::int)`,
      [count],
    );
    await this.pool.query(`VACUUM (ANALYZE) ${s}.jobs`);
  }

  /** Boots the supervisor (threads, task modules, LISTEN) paused: no claims until resume(). */
  async bootWorkers(probe: Probe, opts: WorkerOptions): Promise<void> {
    this.channel = listenToThreads((report) => {
      if (report.kind === 'handled') probe.handled(report.count ?? 0);
      else if (report.kind === 'latency') probe.latencyStart((report.payload ?? {}) as BenchPayload, report.atMs ?? Number.NaN);
    });
    const tuned = { threads: opts.threads, concurrency: concurrencyFor(opts), deleteSucceeded: GRAPEVINE_DELETE_SUCCEEDED };
    this.supervisor = await startSupervisor({
      connectionString: this.ctx.connectionString,
      schema: this.ctx.schema,
      tasks: TASKS_DIR,
      ...(this.ctx.profile === 'tuned' ? tuned : {}),
      logger: pino({ level: process.env.GRAPEVINE_LOG_LEVEL ?? 'warn' }),
    });
    this.supervisor.pause();
  }

  /** resume() marks a backlog, so the paused supervisor claims what is already queued. */
  async startProcessing(): Promise<void> {
    this.supervisor!.resume();
  }

  async unfinished(): Promise<number> {
    const r = await this.pool.query(`SELECT count(*)::int AS n FROM "${this.ctx.schema}".jobs WHERE id >= $1 AND state <> 'succeeded'`, [
      String(this.firstId ?? 0n),
    ]);
    return r.rows[0].n;
  }

  /** Hook for wasted claim attempts: grapevine's own dispatcher counters. */
  async extraStats(): Promise<Record<string, number>> {
    const counters = this.supervisor?.status().counters;
    if (!counters) return {};
    return { claimed: counters.claimed, wastedClaims: counters.wastedClaims, threadCrashes: counters.threadCrashes };
  }

  async stopWorkers(): Promise<void> {
    await this.supervisor?.stop({ graceMs: 5000 });
    this.supervisor = null;
    this.channel?.close();
    this.channel = null;
  }

  async close(): Promise<void> {
    await this.client?.close();
    await this.pool.end();
  }
}
