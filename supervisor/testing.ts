/**
 * grapevine-jobs/testing: run real supervisors against a throwaway schema, inject
 * faults (kill a thread, SIGKILL a supervisor process, cut the LISTEN
 * connection), and check afterwards that every job ended exactly once.
 *
 * Handlers call recordExecution(helpers) to write each execution into the
 * ledger, whose unique (job, attempt) key makes a double execution of one
 * attempt impossible to miss.
 */
import '../src/node-version.ts';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createClient, type Client } from '../src/client.ts';
import { resolveConnectionString, validateSchemaName } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';
import { quoteIdent } from '../src/schema/channels.ts';
import type { TaskHelpers } from '../src/task.ts';
import { startSupervisor, type Supervisor, type SupervisorOptions } from './index.ts';

const here = fileURLToPath(import.meta.url);
const CHILD = path.join(path.dirname(here), `testing-child${path.extname(here)}`);

export interface LedgerEntry {
  jobId: string;
  attempt: number;
  supervisorId: string;
  threadId: number;
  at: Date;
}

export interface Fault {
  /** 'supervisor-paused': SIGSTOPped (a GC pause or partition) long enough for its jobs to be reaped and run elsewhere. */
  kind: 'thread-killed' | 'supervisor-killed' | 'supervisor-paused' | 'listener-killed' | 'database-restarted' | string;
  supervisorId: string | null;
  threadId: number | null;
  at: Date;
}

export interface CheckResult {
  jobs: number;
  /** Jobs not in a terminal state. */
  unfinished: string[];
  /** Jobs with more than one transition into a terminal state, or more than one success. */
  finishedTwice: string[];
  /** Earlier executions of a job that no recorded fault accounts for. */
  unexplainedDuplicates: Array<{ jobId: string; attempt: number }>;
  executions: number;
  duplicates: number;
  ok: boolean;
}

export type TestSupervisorOptions = Omit<SupervisorOptions, 'connectionString' | 'schema'>;

export interface SupervisorProcess {
  id: string;
  pid: number;
  /** Kills one busy thread inside the process (the fault is recorded first). */
  killThread(): void;
  /** SIGKILL: no cleanup at all, like a power loss. Recorded as a fault. */
  kill(): Promise<void>;
  /** SIGTERM: graceful stop; resolves with the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** What the process printed (stdout and stderr), for diagnosing a failed run. */
  output(): string;
}

export interface TestQueue {
  schema: string;
  connectionString: string;
  client: Client;
  /** Starts a supervisor in this process. */
  startSupervisor(options: TestSupervisorOptions): Promise<Supervisor>;
  /** Starts a supervisor in a child process (real process, real signals). */
  spawnSupervisor(options: TestSupervisorOptions): Promise<SupervisorProcess>;
  /** Kills a thread of an in-process supervisor (a given one, or a random busy one) and records it. */
  killThread(supervisor: Supervisor, threadId?: number): Promise<number | null>;
  /** Terminates every LISTEN connection of this schema's supervisors. */
  killListeners(): Promise<number>;
  /**
   * Records a fault the test caused itself. A 'database-restarted' fault
   * explains re-runs of executions begun before it was recorded, so record it
   * once the database is back.
   */
  recordFault(kind: string, supervisorId?: string | null, threadId?: number | null): Promise<void>;
  /** Makes every pending job due now (delayed jobs, retries waiting out their backoff). */
  runDueNow(): Promise<number>;
  /** Resolves when no job is running and none is due (jobs scheduled for later may remain). */
  waitUntilIdle(options?: { timeoutMs?: number }): Promise<void>;
  /**
   * Resolves when every job is finished (succeeded, failed or cancelled),
   * making delayed jobs and retries due at once instead of waiting them out.
   */
  waitUntilDone(options?: { timeoutMs?: number }): Promise<void>;
  ledger(): Promise<LedgerEntry[]>;
  /** Number of jobs per state. */
  states(): Promise<Record<string, number>>;
  faults(): Promise<Fault[]>;
  /** Every job terminal exactly once, at most one success, every duplicate execution explained by a fault. */
  check(): Promise<CheckResult>;
  /** Stops what it started and drops the schema (unless keep). */
  close(options?: { keep?: boolean }): Promise<void>;
}

/** Records this execution in the test queue's ledger; call it first thing in a handler. */
export async function recordExecution(helpers: TaskHelpers): Promise<void> {
  const s = quoteIdent(helpers.worker.schema);
  await helpers.query(`INSERT INTO ${s}.ledger (job_id, attempt, supervisor_id, thread_id) VALUES ($1, $2, $3, $4)`, [
    helpers.job.id,
    helpers.job.attempt,
    helpers.worker.supervisorId,
    helpers.worker.threadId,
  ]);
}

export async function createTestQueue(options: { connectionString?: string; schema?: string } = {}): Promise<TestQueue> {
  const connectionString = resolveConnectionString(options.connectionString);
  const schema = validateSchemaName(options.schema ?? `gv_test_${randomBytes(4).toString('hex')}`);
  const s = quoteIdent(schema);
  const client = createClient({ connectionString, schema });
  await client.migrate();
  const pool = new pg.Pool({ connectionString, max: 3 });
  pool.on('error', () => {});
  await pool.query(`
    CREATE TABLE IF NOT EXISTS ${s}.ledger (
      job_id bigint NOT NULL, attempt integer NOT NULL, supervisor_id text NOT NULL, thread_id integer NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (job_id, attempt));
    CREATE TABLE IF NOT EXISTS ${s}.faults (
      kind text NOT NULL, supervisor_id text, thread_id integer, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE IF NOT EXISTS ${s}.transitions (
      job_id bigint NOT NULL, state text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE OR REPLACE FUNCTION ${s}.record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO ${s}.transitions (job_id, state) VALUES (NEW.id, NEW.state);
      RETURN NULL;
    END $$;
    DROP TRIGGER IF EXISTS record_transition ON ${s}.jobs;
    CREATE TRIGGER record_transition AFTER UPDATE OF state ON ${s}.jobs
      FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('succeeded', 'failed', 'cancelled'))
      EXECUTE FUNCTION ${s}.record_transition();
    -- deleteSucceeded: a running job's row deleted is its success.
    CREATE OR REPLACE FUNCTION ${s}.record_deleted_success() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO ${s}.transitions (job_id, state) VALUES (OLD.id, 'succeeded');
      RETURN NULL;
    END $$;
    DROP TRIGGER IF EXISTS record_deleted_success ON ${s}.jobs;
    CREATE TRIGGER record_deleted_success AFTER DELETE ON ${s}.jobs
      FOR EACH ROW WHEN (OLD.state = 'running') EXECUTE FUNCTION ${s}.record_deleted_success();`);

  const inProcess: Supervisor[] = [];
  const children: SupervisorProcess[] = [];
  const recordFault = async (kind: string, supervisorId: string | null = null, threadId: number | null = null) => {
    await pool.query(`INSERT INTO ${s}.faults (kind, supervisor_id, thread_id) VALUES ($1, $2, $3)`, [kind, supervisorId, threadId]);
  };

  const queue: TestQueue = {
    schema,
    connectionString,
    client,

    async startSupervisor(opts) {
      const supervisor = await startSupervisor({ logger: silentLogger(), ...opts, connectionString, schema });
      inProcess.push(supervisor);
      return supervisor;
    },

    async spawnSupervisor(opts) {
      const child = spawn(process.execPath, [CHILD], {
        env: { ...process.env, GRAPEVINE_TEST_CHILD: JSON.stringify({ ...opts, connectionString, schema }) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on('exit', (code, signal) => resolve({ code, signal })),
      );
      const id = await new Promise<string>((resolve, reject) => {
        const onData = (chunk: Buffer) => {
          output += chunk;
          const match = /ready (\S+)/.exec(output);
          if (match) resolve(match[1]);
        };
        child.stdout!.on('data', onData);
        void exited.then(({ code }) =>
          reject(new Error(`supervisor process exited (${code}) before it was ready: ${output.slice(-2000)}`)),
        );
      });
      const proc: SupervisorProcess = {
        id,
        pid: child.pid!,
        killThread: () => child.kill('SIGUSR2'),
        async kill() {
          await recordFault('supervisor-killed', id);
          child.kill('SIGKILL');
          await exited;
        },
        async stop() {
          child.kill('SIGTERM');
          return (await exited).code;
        },
        exited,
        output: () => output,
      };
      children.push(proc);
      return proc;
    },

    async killThread(supervisor, threadId) {
      const busy = supervisor.status().threads.filter((t) => t.currentJobs.length > 0);
      const target = threadId ?? busy[Math.floor(Math.random() * busy.length)]?.threadId ?? supervisor.status().threads[0]?.threadId;
      if (target === undefined) return null;
      await recordFault('thread-killed', supervisor.id, target);
      return supervisor.killThread(target);
    },

    async killListeners() {
      // Each supervisor's heartbeat names its LISTEN backend: other schemas' supervisors on the
      // same server (parallel test files) keep theirs.
      const { rows } = await pool.query(
        `SELECT pg_terminate_backend(a.pid) AS killed FROM pg_stat_activity a
          WHERE a.application_name = 'grapevine-listener' AND a.pid <> pg_backend_pid()
            AND a.pid IN (SELECT (s.info->>'listenerPid')::int FROM ${s}.supervisors s
                           WHERE s.status NOT IN ('EXITED', 'LOST') AND s.info ? 'listenerPid')`,
      );
      const n = rows.filter((r) => r.killed).length;
      if (n > 0) await recordFault('listener-killed');
      return n;
    },

    recordFault,

    runDueNow: () => client.runDueNow(),

    async waitUntilIdle({ timeoutMs = 120_000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const { rows } = await pool.query(
          `SELECT count(*)::int AS busy FROM ${s}.jobs WHERE state = 'running' OR (state = 'pending' AND run_at <= now())`,
        );
        if (rows[0].busy === 0) return;
        if (Date.now() > deadline) throw new Error(`test queue not idle after ${timeoutMs} ms: ${rows[0].busy} jobs running or due`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },

    async waitUntilDone({ timeoutMs = 120_000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await queue.runDueNow();
        await queue.waitUntilIdle({ timeoutMs: Math.max(1, deadline - Date.now()) });
        const { rows } = await pool.query(`SELECT count(*)::int AS open FROM ${s}.jobs WHERE state IN ('pending', 'running')`);
        if (rows[0].open === 0) return;
        if (Date.now() > deadline) throw new Error(`test queue not done after ${timeoutMs} ms: ${rows[0].open} jobs pending or running`);
      }
    },

    async ledger() {
      const { rows } = await pool.query(
        `SELECT job_id::text, attempt, supervisor_id, thread_id, at FROM ${s}.ledger ORDER BY job_id, attempt`,
      );
      return rows.map((r) => ({ jobId: r.job_id, attempt: r.attempt, supervisorId: r.supervisor_id, threadId: r.thread_id, at: r.at }));
    },

    async states() {
      const { rows } = await pool.query(`SELECT state, count(*)::int AS n FROM ${s}.jobs GROUP BY state`);
      return Object.fromEntries(rows.map((r) => [r.state, r.n]));
    },

    async faults() {
      const { rows } = await pool.query(`SELECT kind, supervisor_id, thread_id, at FROM ${s}.faults ORDER BY at`);
      return rows.map((r) => ({ kind: r.kind, supervisorId: r.supervisor_id, threadId: r.thread_id, at: r.at }));
    },

    async check() {
      const jobs = await pool.query<{ id: string; state: string }>(`SELECT id::text, state FROM ${s}.jobs`);
      const transitions = await pool.query<{ job_id: string; state: string }>(`SELECT job_id::text, state FROM ${s}.transitions`);
      const ledger = await queue.ledger();
      const faults = await queue.faults();
      const unfinished = jobs.rows.filter((r) => !['succeeded', 'failed', 'cancelled'].includes(r.state)).map((r) => r.id);
      const terminalCount = new Map<string, number>();
      for (const t of transitions.rows) terminalCount.set(t.job_id, (terminalCount.get(t.job_id) ?? 0) + 1);
      const finishedTwice = [...terminalCount].filter(([, n]) => n > 1).map(([id]) => id);
      const byJob = new Map<string, LedgerEntry[]>();
      for (const e of ledger) byJob.set(e.jobId, [...(byJob.get(e.jobId) ?? []), e]);
      const explains = (e: LedgerEntry) =>
        faults.some(
          (f) =>
            (f.kind === 'thread-killed' && f.supervisorId === e.supervisorId && f.threadId === e.threadId) ||
            ((f.kind === 'supervisor-killed' || f.kind === 'supervisor-paused') && f.supervisorId === e.supervisorId) ||
            (f.kind === 'database-restarted' && f.at >= e.at),
        );
      const unexplainedDuplicates: CheckResult['unexplainedDuplicates'] = [];
      let duplicates = 0;
      for (const [jobId, runs] of byJob) {
        for (const run of runs.slice(0, -1)) {
          duplicates++;
          if (!explains(run)) unexplainedDuplicates.push({ jobId, attempt: run.attempt });
        }
      }
      return {
        jobs: jobs.rows.length,
        unfinished,
        finishedTwice,
        unexplainedDuplicates,
        executions: ledger.length,
        duplicates,
        ok: unfinished.length === 0 && finishedTwice.length === 0 && unexplainedDuplicates.length === 0,
      };
    },

    async close({ keep = false } = {}) {
      await Promise.all(inProcess.map((sup) => sup.stop({ graceMs: 0 }).catch(() => {})));
      await Promise.all(children.map((c) => c.stop().catch(() => null)));
      await client.close();
      if (!keep) await pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => {});
      await pool.end();
    },
  };
  return queue;
}
