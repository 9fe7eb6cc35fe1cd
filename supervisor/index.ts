import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { ResourceLimits } from 'node:worker_threads';
import {
  DEFAULTS,
  defaultThreadCount,
  MAX_IDLE_TIMEOUT_MS,
  resolveConnectionString,
  resolveListenUrl,
  resolvePreparedStatements,
  validateName,
  validatePositiveInt,
  validateSchemaName,
} from '../src/config.ts';
import { createPool, explainConnectionErrors } from '../src/db.ts';
import { GrapevineError } from '../src/errors.ts';
import { createLogger, logFormatOf, type Logger } from '../src/log.ts';
import type { ThreadConfig } from '../src/protocol.ts';
import { migrate } from '../src/schema/migrate.ts';
import type { WorkerThread } from '../src/worker-info.ts';
import type { DispatchCounters } from './dispatcher.ts';
import { ThreadPool } from './threads.ts';
import { SupervisorRuntime } from './runtime.ts';

export interface SupervisorOptions {
  /** Defaults to DATABASE_URL. */
  connectionString?: string;
  /**
   * Where the LISTEN connection goes (default GRAPEVINE_LISTEN_URL, else
   * connectionString). Behind a pooler in transaction mode, point this at
   * the server itself: LISTEN cannot work through one.
   */
  listenUrl?: string;
  /**
   * Named prepared statements (default true, or GRAPEVINE_PREPARED_STATEMENTS).
   * Set false behind a pooler in transaction mode that does not track them
   * (PgBouncer before 1.21, or with max_prepared_statements = 0).
   */
  preparedStatements?: boolean;
  schema?: string;
  /** A directory of task modules (file name = task name) or one module with named handler exports. */
  tasks: string;
  /** Threads in the pool (default: available parallelism). */
  threads?: number;
  /** Jobs one thread runs at the same time (default 8). */
  concurrency?: number;
  /** Queues to take jobs from (default: all). */
  queues?: string[] | null;
  logger?: Logger;
  /** A readable id; default: host name plus a random suffix. */
  id?: string;
  heartbeatIntervalMs?: number;
  leaseMs?: number;
  reaperIntervalMs?: number;
  sweepIntervalMs?: number;
  shutdownGraceMs?: number;
  /** How often the LISTEN connection proves it is alive and subscribed (default 5000; a check gets min(3000, this) to answer). */
  listenerHealthCheckMs?: number;
  /** How long a cancelled or timed-out handler may ignore its AbortSignal before its thread is terminated. */
  killGraceMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Finished jobs older than this are deleted (default 7 days). */
  retentionMs?: number;
  /**
   * Delete a job's row the moment it succeeds, instead of keeping it and its
   * result for `retentionMs` (default false). For high-volume queues whose
   * results nobody reads: a delete costs the database far less than the
   * update that records a success. Failed and cancelled jobs are kept as
   * usual, and so are jobs someone is waiting for with waitForJob().
   */
  deleteSucceeded?: boolean;
  /**
   * How long a statement on the supervisor's own connections (the
   * heartbeat, the reaper, releases, the control plane, the worker log; not
   * migrations, not threads' claims and outcome writes, not handlers) may
   * run before PostgreSQL cancels it (default 30 s). One that gets no answer
   * at all a second after that fails and its connection is replaced: the
   * network lost it, which TCP alone would take about 15 minutes to report.
   * The heartbeat gives up sooner, after a quarter of leaseMs.
   */
  statementTimeoutMs?: number;
  /** Connections per thread for handlers' helpers.query() and addJob() (default 4). */
  handlerConnections?: number;
  /** Per-thread limits, e.g. { maxOldGenerationSizeMb: 256 }: a handler over it kills only its thread. */
  resourceLimits?: ResourceLimits;
  /** Lets the EVAL control message run arbitrary code on this supervisor (default false). */
  allowEval?: boolean;
  /**
   * Stop gracefully once no job has started or finished for this long
   * (default: never). The TIMEOUT_SET control message changes it later.
   */
  idleTimeoutMs?: number | null;
}

export type SupervisorState = 'IDLE' | 'BUSY' | 'PAUSED' | 'STOPPING' | 'EXITED';

/** One thread as status() reports it, and as the heartbeat stores it for Control.workers(). */
export type ThreadStatus = WorkerThread;

export interface SupervisorStatus {
  id: string;
  state: SupervisorState;
  threads: ThreadStatus[];
  restarts: number;
  inFlight: number;
  counters: DispatchCounters & { malformedNotifications: number; listenerReconnects: number };
}

export interface Supervisor {
  readonly id: string;
  /** Task names this supervisor runs. */
  readonly tasks: string[];
  status(): SupervisorStatus;
  /** Starts no more claims until resume() (a claim a thread has already been handed still runs); running jobs go on. */
  pause(): void;
  /** Claims again, starting with whatever is due in the table. */
  resume(): void;
  /** Graceful stop: no new claims, running jobs get `graceMs`, the rest are released. Idempotent. */
  stop(options?: { graceMs?: number; reason?: string }): Promise<void>;
  /** Resolves when the supervisor has stopped, for whatever reason. */
  readonly stopped: Promise<void>;
  /** Chaos and operations: terminate one thread (default: a random busy one). Returns its id. */
  killThread(threadId?: number): number | null;
  /** The LISTEN connection's backend pid (tests use it to cut the connection). */
  listenerPid(): number | null;
  /**
   * Runs the reaper once now, however recently it ran. (On its timers the
   * schema's supervisors together reap one or two times per reaperIntervalMs.)
   */
  reapNow(): Promise<{ leader: boolean; reapedJobs: string[] }>;
}

export async function startSupervisor(options: SupervisorOptions): Promise<Supervisor> {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const connectionString = resolveConnectionString(options.connectionString);
  const listenUrl = resolveListenUrl(options.listenUrl, connectionString);
  const preparedStatements = resolvePreparedStatements(options.preparedStatements);
  if (typeof options.tasks !== 'string' || options.tasks.length === 0) {
    throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', 'tasks is required: a directory of task modules or one module with named exports');
  }
  const threads = validatePositiveInt('threads', options.threads ?? defaultThreadCount(), { max: 256 });
  const concurrency = validatePositiveInt('concurrency', options.concurrency ?? DEFAULTS.concurrency, { max: 10_000 });
  const queues = options.queues ? options.queues.map((q) => validateName('queue', q)) : null;
  const id = options.id ?? supervisorId();
  const logger = (options.logger ?? createLogger()).child({ supervisor: id });
  const timing = {
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs,
    leaseMs: options.leaseMs ?? DEFAULTS.leaseMs,
    reaperIntervalMs: options.reaperIntervalMs ?? DEFAULTS.reaperIntervalMs,
    sweepIntervalMs: options.sweepIntervalMs ?? DEFAULTS.sweepIntervalMs,
    shutdownGraceMs: options.shutdownGraceMs ?? DEFAULTS.shutdownGraceMs,
    killGraceMs: options.killGraceMs ?? 1_000,
    listenerHealthCheckMs: options.listenerHealthCheckMs ?? 5_000,
  };
  if (timing.leaseMs < timing.heartbeatIntervalMs * 2) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `leaseMs (${timing.leaseMs}) must be at least twice heartbeatIntervalMs (${timing.heartbeatIntervalMs}), or live jobs would be reaped`,
    );
  }

  const statementTimeoutMs = validatePositiveInt('statementTimeoutMs', options.statementTimeoutMs ?? DEFAULTS.statementTimeoutMs, { min: 100, max: 3_600_000 });

  // Migrations get a connection of their own, without the statement timeout:
  // one may rewrite a large jobs table.
  const migrations = createPool(connectionString, { max: 1, applicationName: 'grapevine-migrate', preparedStatements });
  try {
    await explainConnectionErrors(connectionString, () => migrate(migrations, schema));
  } finally {
    await migrations.end().catch(() => {});
  }
  const pool = createPool(connectionString, {
    max: 3,
    applicationName: `grapevine-supervisor`,
    // The release of a dead thread's jobs sends its transaction in one go (runtime.ts).
    pipeline: true,
    statementTimeoutMs,
    preparedStatements,
    onIdleError: (err) => logger.debug({ err: err.message }, 'idle supervisor connection closed'),
  });

  const threadConfig: ThreadConfig = {
    connectionString,
    schema,
    supervisorId: id,
    tasksPath: options.tasks,
    queues,
    leaseMs: timing.leaseMs,
    retryBaseMs: options.retryBaseMs ?? DEFAULTS.retryBaseMs,
    retryMaxMs: options.retryMaxMs ?? DEFAULTS.retryMaxMs,
    systemConnections: DEFAULTS.threadSystemConnections,
    handlerConnections: validatePositiveInt('handlerConnections', options.handlerConnections ?? DEFAULTS.threadHandlerConnections, { max: 100 }),
    logLevel: logger.level,
    logFormat: logFormatOf(logger),
    deleteSucceeded: options.deleteSucceeded ?? DEFAULTS.deleteSucceeded,
    preparedStatements,
  };
  const threadPool = new ThreadPool({ threads, concurrency, config: threadConfig, resourceLimits: options.resourceLimits, logger });
  try {
    await threadPool.start();
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }

  const runtime = new SupervisorRuntime({
    id,
    schema,
    connectionString,
    listenUrl,
    pool,
    threadPool,
    threads,
    concurrency,
    queues,
    logger,
    timing,
    retentionMs: options.retentionMs ?? 7 * 24 * 3_600_000,
    allowEval: options.allowEval === true,
    idleTimeoutMs:
      options.idleTimeoutMs == null ? null : validatePositiveInt('idleTimeoutMs', options.idleTimeoutMs, { min: 0, max: MAX_IDLE_TIMEOUT_MS }),
  });
  try {
    await runtime.start();
  } catch (err) {
    await runtime.stop({ graceMs: 0 }).catch(() => {});
    throw err;
  }
  return runtime;
}

function supervisorId(): string {
  const host = os.hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 24) || 'host';
  return `${host}-${randomBytes(3).toString('hex')}`;
}
