import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { ResourceLimits } from 'node:worker_threads';
import {
  DEFAULTS,
  defaultMaxThreads,
  defaultThreadCount,
  MAX_IDLE_TIMEOUT_MS,
  resolveConnectionString,
  resolveListenUrl,
  resolvePoll,
  resolvePollInterval,
  resolvePreparedStatements,
  validateName,
  validateInt,
  validateSchemaName,
} from '../src/config.ts';
import { ConnectionBudget, MIN_CONNECTIONS, splitBudget } from '../src/connection-budget.ts';
import { createPool, explainConnectionErrors } from '../src/db.ts';
import { GrapevineError } from '../src/errors.ts';
import { createLogger, logFormatOf, type Logger } from '../src/log.ts';
import type { ThreadConfig } from '../src/protocol.ts';
import { parseSchedules, type ScheduleSpec } from '../src/schedule/schedule.ts';
import { scheduleRow } from '../src/schedule/stored.ts';
import { migrate } from '../src/schema/migrate.ts';
import { upsertSchedule } from '../src/sql/schedules.ts';
import { ThreadPool } from './threads.ts';
import { SupervisorRuntime } from './runtime.ts';
import type { Supervisor } from './supervisor.ts';

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
  /**
   * Poll instead of LISTEN (default false, or GRAPEVINE_POLL): every
   * pollIntervalMs the supervisor looks for due jobs and control messages,
   * so they are found up to that late; the heartbeat finds cancels. For a
   * pooler in transaction mode with no direct address for listenUrl. Without
   * it, a supervisor whose LISTEN turns out not to work there polls anyway,
   * with one warning.
   */
  poll?: boolean;
  /** How often poll mode looks (default 1000 ms, or GRAPEVINE_POLL_INTERVAL_MS). */
  pollIntervalMs?: number;
  schema?: string;
  /** A directory of task modules (file name = task name) or one module with named handler exports. */
  tasks: string;
  /** Threads in the pool (default: available parallelism). */
  threads?: number;
  /**
   * The most threads this supervisor runs, at start and after a SCALE control
   * message (default four per core, at most 256): each thread opens its own
   * connections to PostgreSQL.
   */
  maxThreads?: number;
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
  /** How often the LISTEN connection proves it is alive and subscribed (default 5 s; a check gets min(3000, this) to answer). */
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
   * heartbeat, the maintenance, releases, the control plane, the supervisor log; not
   * migrations, not threads' claims and outcome writes, not handlers) may
   * run before PostgreSQL cancels it (default 30 s). One that gets no answer
   * at all a second after that fails and its connection is replaced: the
   * network lost it, which TCP alone would take about 15 minutes to report.
   * The heartbeat gives up sooner, after a quarter of leaseMs.
   */
  statementTimeoutMs?: number;
  /**
   * The largest handler result stored, in bytes of JSON (default 1 MiB, up to
   * 1 GiB); a larger one fails its job with GRAPEVINE_RESULT_TOO_LARGE.
   */
  maxResultBytes?: number;
  /**
   * How often each thread stores its jobs' helpers.progress() values, in one
   * UPDATE for all of them (default 250 ms); in between, later values replace
   * earlier ones. A job's last value is stored with its outcome.
   */
  progressIntervalMs?: number;
  /**
   * The most connections this supervisor opens, its LISTEN connection aside
   * (default 8: ten hosts and their LISTEN connections fit PostgreSQL's
   * default max_connections of 100). Its own statements take 2 (1 of the smallest, 3),
   * and its threads share the rest, handlers' queries all but one of them
   * (docs/deployment.md#connections). A connection that does not fit waits
   * for one to close; it never fails a job.
   */
  maxConnections?: number;
  /** Connections one thread's handlers may hold for helpers.query(), transaction() and addJob() (default: the budget's handler share). */
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
  /**
   * Serve Prometheus metrics on /metrics, and /healthz and /readyz probes, on
   * this port (0: any free one; see metricsAddress()). Default: no port, and
   * no metrics work at all.
   */
  metricsPort?: number | null;
  /** The address the metrics port listens on (default 127.0.0.1: this host only; 0.0.0.0 for every interface). */
  metricsHost?: string;
  /** How often the elected supervisor measures queue depth for /metrics (default 15 s). */
  queueStatsIntervalMs?: number;
  /**
   * Recurring schedules (docs/schedules.md), stored in the database at start:
   * a new one is added, a changed one updated (keeping its pause and its
   * last tick). Schedules stored by others are fired all the same.
   */
  schedules?: ScheduleSpec[];
}

export type { Supervisor, SupervisorState, SupervisorStatus, ThreadStatus } from './supervisor.ts';

const HOUR_MS = 3_600_000;
const INT32_MAX = 2_147_483_647;

/** The allowed range of each numeric option; startSupervisor() refuses a value outside it, naming the option. */
export const OPTION_RANGES = {
  threads: { min: 1, max: 256 },
  maxThreads: { min: 1, max: 256 },
  concurrency: { min: 1, max: 10_000 },
  heartbeatIntervalMs: { min: 10, max: HOUR_MS },
  leaseMs: { min: 20, max: 24 * HOUR_MS },
  reaperIntervalMs: { min: 10, max: 24 * HOUR_MS },
  sweepIntervalMs: { min: 10, max: 24 * HOUR_MS },
  shutdownGraceMs: { min: 0, max: 24 * HOUR_MS },
  listenerHealthCheckMs: { min: 10, max: HOUR_MS },
  killGraceMs: { min: 0, max: HOUR_MS },
  retryBaseMs: { min: 1, max: INT32_MAX },
  retryMaxMs: { min: 1, max: INT32_MAX },
  retentionMs: { min: 0, max: 10 * 365 * 24 * HOUR_MS },
  statementTimeoutMs: { min: 100, max: HOUR_MS },
  maxConnections: { min: MIN_CONNECTIONS, max: 10_000 },
  handlerConnections: { min: 1, max: 10_000 },
  idleTimeoutMs: { min: 0, max: MAX_IDLE_TIMEOUT_MS },
  // PostgreSQL stores no value over 1 GiB.
  maxResultBytes: { min: 1, max: 1_073_741_824 },
  progressIntervalMs: { min: 10, max: HOUR_MS },
  metricsPort: { min: 0, max: 65_535 },
  queueStatsIntervalMs: { min: 100, max: 24 * HOUR_MS },
} as const;

type NumericOption = keyof typeof OPTION_RANGES;

/** The option, or its default, checked against its range. */
function numeric(options: SupervisorOptions, name: NumericOption, fallback: number): number {
  return validateInt(name, options[name] ?? fallback, OPTION_RANGES[name]);
}

export async function startSupervisor(options: SupervisorOptions): Promise<Supervisor> {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const connectionString = resolveConnectionString(options.connectionString);
  const listenUrl = resolveListenUrl(options.listenUrl, connectionString);
  const preparedStatements = resolvePreparedStatements(options.preparedStatements);
  const poll = resolvePoll(options.poll);
  const pollIntervalMs = resolvePollInterval(options.pollIntervalMs);
  if (typeof options.tasks !== 'string' || options.tasks.length === 0) {
    throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', 'tasks is required: a directory of task modules or one module with named exports');
  }
  const maxThreads = numeric(options, 'maxThreads', defaultMaxThreads());
  const threads = numeric(options, 'threads', Math.min(defaultThreadCount(), maxThreads));
  if (threads > maxThreads) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `threads (${threads}) is over maxThreads (${maxThreads}): lower threads, or raise maxThreads (grapevine run --max-threads N)`,
    );
  }
  const concurrency = numeric(options, 'concurrency', DEFAULTS.concurrency);
  const queues = options.queues ? options.queues.map((q) => validateName('queue', q)) : null;
  const id = options.id ?? supervisorId();
  const logger = (options.logger ?? createLogger()).child({ supervisor: id });
  const timing = {
    heartbeatIntervalMs: numeric(options, 'heartbeatIntervalMs', DEFAULTS.heartbeatIntervalMs),
    leaseMs: numeric(options, 'leaseMs', DEFAULTS.leaseMs),
    reaperIntervalMs: numeric(options, 'reaperIntervalMs', DEFAULTS.reaperIntervalMs),
    sweepIntervalMs: numeric(options, 'sweepIntervalMs', DEFAULTS.sweepIntervalMs),
    shutdownGraceMs: numeric(options, 'shutdownGraceMs', DEFAULTS.shutdownGraceMs),
    killGraceMs: numeric(options, 'killGraceMs', DEFAULTS.killGraceMs),
    listenerHealthCheckMs: numeric(options, 'listenerHealthCheckMs', DEFAULTS.listenerHealthCheckMs),
  };
  if (timing.leaseMs < timing.heartbeatIntervalMs * 2) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `leaseMs (${timing.leaseMs}) must be at least twice heartbeatIntervalMs (${timing.heartbeatIntervalMs}), or live jobs would be reaped`,
    );
  }

  const statementTimeoutMs = numeric(options, 'statementTimeoutMs', DEFAULTS.statementTimeoutMs);
  const retryBaseMs = numeric(options, 'retryBaseMs', DEFAULTS.retryBaseMs);
  const retryMaxMs = numeric(options, 'retryMaxMs', DEFAULTS.retryMaxMs);
  const retentionMs = numeric(options, 'retentionMs', DEFAULTS.retentionMs);
  const maxConnections = numeric(options, 'maxConnections', DEFAULTS.maxConnections);
  const split = splitBudget(maxConnections);
  const handlerConnections = numeric(options, 'handlerConnections', split.handlers);
  const maxResultBytes = numeric(options, 'maxResultBytes', DEFAULTS.maxResultBytes);
  const progressIntervalMs = numeric(options, 'progressIntervalMs', DEFAULTS.progressIntervalMs);
  const idleTimeoutMs = options.idleTimeoutMs == null ? null : numeric(options, 'idleTimeoutMs', 0);
  const queueStatsIntervalMs = numeric(options, 'queueStatsIntervalMs', DEFAULTS.queueStatsIntervalMs);
  const metrics =
    options.metricsPort == null
      ? null
      : { host: metricsHost(options.metricsHost), port: numeric(options, 'metricsPort', 0), queueStatsIntervalMs };
  const schedules = parseSchedules(options.schedules ?? []);

  // Migrations get a connection of their own, without the statement timeout:
  // one may rewrite a large jobs table.
  const migrations = createPool(connectionString, { max: 1, applicationName: 'grapevine-migrate', preparedStatements });
  try {
    await explainConnectionErrors(connectionString, async () => {
      await migrate(migrations, schema);
      for (const schedule of schedules) await upsertSchedule(migrations, schema, scheduleRow(schedule));
    });
  } finally {
    await migrations.end().catch(() => {});
  }
  const pool = createPool(connectionString, {
    max: split.supervisor,
    applicationName: `grapevine-supervisor`,
    // The release of a dead thread's jobs sends its transaction in one go (release.ts).
    pipeline: true,
    statementTimeoutMs,
    preparedStatements,
    onIdleError: (err) => logger.debug({ err: err.message }, 'idle supervisor connection closed'),
  });

  const budget = ConnectionBudget.create(split.threads, split.handlers, threads);
  const threadConfig: ThreadConfig = {
    connectionString,
    schema,
    supervisorId: id,
    tasksPath: options.tasks,
    queues,
    leaseMs: timing.leaseMs,
    retryBaseMs,
    retryMaxMs,
    systemConnections: DEFAULTS.threadSystemConnections,
    handlerConnections,
    budget: budget.buffer,
    logLevel: logger.level,
    logFormat: logFormatOf(logger),
    deleteSucceeded: options.deleteSucceeded ?? DEFAULTS.deleteSucceeded,
    maxResultBytes,
    progressIntervalMs,
    preparedStatements,
    concurrency,
  };
  const threadPool = new ThreadPool({
    threads,
    concurrency,
    config: threadConfig,
    budget,
    resourceLimits: { maxYoungGenerationSizeMb: DEFAULTS.threadYoungGenerationMb, ...options.resourceLimits },
    logger,
  });
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
    poll,
    pollIntervalMs,
    pool,
    budget,
    split: { ...split, max: maxConnections },
    connectionsPerThread: DEFAULTS.threadSystemConnections + handlerConnections,
    threadPool,
    threads,
    maxThreads,
    concurrency,
    queues,
    logger,
    timing,
    retentionMs,
    allowEval: (options.allowEval ?? DEFAULTS.allowEval) === true,
    idleTimeoutMs,
    metrics,
  });
  try {
    await runtime.start();
  } catch (err) {
    await runtime.stop({ graceMs: 0 }).catch(() => {});
    throw err;
  }
  return runtime;
}

function metricsHost(host: string | undefined): string {
  if (host === undefined) return DEFAULTS.metricsHost;
  if (typeof host !== 'string' || host.length === 0) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `metricsHost must be an address such as 127.0.0.1 or 0.0.0.0, got ${JSON.stringify(host)}`,
    );
  }
  return host;
}

function supervisorId(): string {
  const host =
    os
      .hostname()
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .slice(0, 24) || 'host';
  return `${host}-${randomBytes(3).toString('hex')}`;
}
