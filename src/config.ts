import os from 'node:os';
import { configError } from './errors.ts';
import { describeConnection } from './redact.ts';

/** One place for every default; test/docs-config.test.ts keeps docs/configuration.md in step with it. */
export const DEFAULTS = {
  /** Schema that holds grapevine's tables and functions. */
  schema: 'grapevine',
  /** Queue a job goes to when none is named. */
  queue: 'default',
  /** Attempts before a failing job is parked as `failed`. */
  maxAttempts: 5,
  /** A job's priority when none is given; higher runs first. */
  priority: 0,
  /** The largest payload a client accepts, in bytes of JSON (1 MiB). */
  maxPayloadBytes: 1_048_576,
  /** Whether clients apply migrations before their first statement. */
  migrate: true,
  /**
   * Handler concurrency inside one thread, at most: handlers that await I/O
   * run hundreds at a time, and a thread whose handlers block its event loop
   * is given fewer (supervisor/claim-limit.ts).
   */
  concurrency: 256,
  /** How often a supervisor writes its heartbeat and renews its jobs' leases. */
  heartbeatIntervalMs: 1_000,
  /** A running job whose lease is not renewed for this long is returned to the queue. */
  leaseMs: 10_000,
  /** How often the (elected) reaper looks for expired leases. */
  reaperIntervalMs: 500,
  /** How often an idle supervisor scans the table for due jobs nobody was told about. */
  sweepIntervalMs: 2_000,
  /** How long running jobs may finish after SIGTERM before they are aborted and released. */
  shutdownGraceMs: 10_000,
  /** How long a cancelled or timed-out handler may ignore its AbortSignal before its thread is terminated. */
  killGraceMs: 1_000,
  /** How often the LISTEN connection proves it is alive and subscribed. */
  listenerHealthCheckMs: 5_000,
  /** First retry delay; doubled per attempt, with jitter. */
  retryBaseMs: 1_000,
  /** Upper bound of a retry delay. */
  retryMaxMs: 3_600_000,
  /** pg connections per thread for claims and outcome writes, at most. */
  threadSystemConnections: 2,
  /**
   * The most connections a supervisor opens besides its LISTEN connection:
   * ten hosts, each with its LISTEN connection, fit PostgreSQL's default
   * max_connections (100, 3 of them reserved for superusers).
   */
  maxConnections: 8,
  /**
   * How long a statement on the supervisor's own connections may run before
   * PostgreSQL cancels it; a second later with no answer at all, the
   * connection is given up.
   */
  statementTimeoutMs: 30_000,
  /** Finished jobs older than this are deleted (7 days). */
  retentionMs: 7 * 24 * 3_600_000,
  /** Delete succeeded jobs at once instead of keeping them for the retention period. */
  deleteSucceeded: false,
  /** Whether the EVAL control message may run JavaScript on a supervisor. */
  allowEval: false,
  /** How often the elected supervisor prunes old rows and looks for unhandled tasks. */
  pruneIntervalMs: 60_000,
  /** Entries of each supervisor's log kept by the pruning. */
  supervisorLogKeep: 10_000,
  /** Supervisor log entries older than this are deleted (7 days). */
  supervisorLogMaxAgeMs: 7 * 24 * 3_600_000,
  /** Control messages and their responses older than this are deleted (1 day). */
  messageMaxAgeMs: 24 * 3_600_000,
  /**
   * The largest handler result stored, in bytes of JSON (1 MiB, as for
   * payloads); a larger one fails its job with GRAPEVINE_RESULT_TOO_LARGE.
   */
  maxResultBytes: 1_048_576,
  /** How often a thread stores its jobs' helpers.progress() values: one UPDATE per interval at most (4 a second). */
  progressIntervalMs: 250,
  /** The address a supervisor's metrics port listens on (with metricsPort): this host only. */
  metricsHost: '127.0.0.1',
  /** How often the elected supervisor measures queue depth for /metrics (only when some supervisor serves metrics). */
  queueStatsIntervalMs: 15_000,
  /** Jobs inserted per statement by addJobs(). */
  insertChunkSize: 5_000,
  /**
   * Each thread's young generation (MB), unless resourceLimits sets it: with
   * V8's default every thread grows a large one under a stream of short jobs,
   * memory held for nothing; the bench's peak RSS row measures the difference.
   */
  threadYoungGenerationMb: 4,
  /** Named prepared statements; off behind a pooler in transaction mode that does not track them. */
  preparedStatements: true,
  /** `grapevine dashboard`'s port and address: this host only. */
  dashboardPort: 4000,
  dashboardHost: '127.0.0.1',
  /** How often the dashboard re-reads its overview for the browsers watching it (once for all of them). */
  dashboardRefreshMs: 2_000,
  /**
   * Find due jobs, control messages and answers by polling rather than
   * LISTEN, for servers where LISTEN cannot work (a pooler in transaction
   * mode with no direct address for it).
   */
  poll: false,
  /** How often a supervisor or a wait polls in poll mode: what it finds is up to this late. */
  pollIntervalMs: 1_000,
} as const;

/** The longest idle timeout accepted (option, flag or TIMEOUT_SET): ten years. */
export const MAX_IDLE_TIMEOUT_MS = 10 * 365 * 24 * 3_600_000;

/**
 * An idle timeout given in seconds (a number, or its text; fractions allowed)
 * as milliseconds, or undefined if it is not one: callers word the error.
 */
export function idleTimeoutSecondsToMs(value: unknown): number | undefined {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n * 1000 > MAX_IDLE_TIMEOUT_MS) return undefined;
  return Math.round(n * 1000);
}

export function defaultThreadCount(): number {
  return os.availableParallelism();
}

/**
 * The most threads a supervisor may run (at start or after SCALE) unless told
 * otherwise: each thread opens its own connections, so a stray SCALE must not
 * exhaust the server's max_connections.
 */
export function defaultMaxThreads(): number {
  return Math.min(256, 4 * os.availableParallelism());
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,39}$/;

/**
 * Schema names end up inside SQL and channel names, so only plain lowercase
 * identifiers are accepted; quoting tricks are refused before any SQL runs.
 */
export function validateSchemaName(name: unknown): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
    throw configError(
      `invalid schema name ${JSON.stringify(name)}: use 1-40 characters of lowercase letters, digits and _ ` +
        `starting with a letter or _ (for example "grapevine" or "jobs_v2")`,
    );
  }
  return name;
}

const NAME = /^[A-Za-z0-9_.:\-/]{1,128}$/;

/** Task and queue names are data, but keeping them plain keeps logs and CLIs readable. */
export function validateName(kind: 'task' | 'queue', name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw configError(`invalid ${kind} name ${JSON.stringify(name)}: use 1-128 characters of letters, digits and _ . : - /`);
  }
  return name;
}

/** An integer option within its range, or a GRAPEVINE_CONFIG_INVALID error naming the option, the value and the range. */
export function validateInt(field: string, value: unknown, { min = 1, max = 1_000_000 } = {}): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw configError(`${field} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** The longest delay setTimeout holds: past it Node fires the timer at once (with a warning). */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * A wait's limit in ms, from 0 to MAX_TIMER_MS (about 24.8 days), or a
 * GRAPEVINE_CONFIG_INVALID error naming it: a larger one would make the wait
 * give up at once rather than never.
 */
export function validateTimeoutMs(timeoutMs: unknown, field = 'timeoutMs'): number {
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_TIMER_MS) {
    throw configError(
      `${field} must be a number of milliseconds from 0 to ${MAX_TIMER_MS} (about 24.8 days), got ${typeof timeoutMs === 'number' ? timeoutMs : JSON.stringify(timeoutMs)}`,
    );
  }
  return timeoutMs;
}

/** The connection string from options or DATABASE_URL, or a clear error saying how to give one. */
export function resolveConnectionString(explicit: string | undefined): string {
  const value = explicit ?? process.env.DATABASE_URL;
  if (!value) {
    throw configError('no database given: pass connectionString (or --database-url) or set DATABASE_URL');
  }
  return value;
}

/**
 * The connection string for LISTEN: listenUrl, else GRAPEVINE_LISTEN_URL,
 * else the main one. A LISTEN through a pooler in transaction mode hears
 * nothing once its transaction ends, so behind one this must reach the
 * server directly.
 */
export function resolveListenUrl(explicit: string | undefined, connectionString: string): string {
  const value = explicit ?? (process.env.GRAPEVINE_LISTEN_URL || undefined);
  if (value === undefined) return connectionString;
  if (typeof value !== 'string' || !/^postgres(ql)?:\/\/[^/?#]/.test(value) || !URL.canParse(value)) {
    throw configError(
      `listenUrl (or GRAPEVINE_LISTEN_URL, --listen-url) must be a connection URL such as postgres://user@db-host:5432/app ` +
        `that reaches PostgreSQL directly, not through a pooler; got ${typeof value === 'string' ? describeConnection(value) : typeof value}`,
    );
  }
  return value;
}

/** poll, else GRAPEVINE_POLL ("true" or "false"), else the default. */
export function resolvePoll(explicit: boolean | undefined): boolean {
  return resolveBoolean('poll', 'GRAPEVINE_POLL', explicit, DEFAULTS.poll);
}

/** The longest poll interval accepted: an hour. */
export const MAX_POLL_INTERVAL_MS = 3_600_000;

/** pollIntervalMs, else GRAPEVINE_POLL_INTERVAL_MS, else the default. */
export function resolvePollInterval(explicit: number | undefined): number {
  const env = process.env.GRAPEVINE_POLL_INTERVAL_MS;
  const value = explicit ?? (env ? Number(env) : DEFAULTS.pollIntervalMs);
  return validateInt('pollIntervalMs (or GRAPEVINE_POLL_INTERVAL_MS)', value, { min: 10, max: MAX_POLL_INTERVAL_MS });
}

/** preparedStatements, else GRAPEVINE_PREPARED_STATEMENTS ("true" or "false"), else the default. */
export function resolvePreparedStatements(explicit: boolean | undefined): boolean {
  return resolveBoolean('preparedStatements', 'GRAPEVINE_PREPARED_STATEMENTS', explicit, DEFAULTS.preparedStatements);
}

function resolveBoolean(option: string, variable: string, explicit: boolean | undefined, fallback: boolean): boolean {
  const env = process.env[variable];
  const value = explicit ?? (env === 'true' ? true : env === 'false' ? false : env ? env : fallback);
  if (typeof value !== 'boolean') {
    throw configError(`${option} (or ${variable}) must be true or false, got ${JSON.stringify(value)}`);
  }
  return value;
}
