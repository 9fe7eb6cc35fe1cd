import { DEFAULTS, validateInt, validateName, validateSchemaName, validateTimeoutMs } from './config.ts';
import {
  clientConnections,
  explainConnectionErrors,
  withTransaction,
  withUnnamedStatements,
  type ConnectionOptions,
  type Queryable,
} from './db.ts';
import { GrapevineError } from './errors.ts';
import { isTerminal, jobFromRow, type Job } from './job.ts';
import { silentLogger, type Logger } from './log.ts';
import { parseJobNotification, rangesContain } from './notification.ts';
import { channelsFor } from './schema/channels.ts';
import { Waiters } from './waiters.ts';
import { unstorableInJson } from './text.ts';
import { explainingOutdatedSchema, migrate, type MigrateResult } from './schema/migrate.ts';
import { announceCancel, findJob, insertJob, insertJobs, makeDue, requestCancel, watchJob, type KeyMode, type NewJob } from './sql/jobs.ts';
import { watchProgress } from './sql/progress.ts';
import { payloadLimit } from './sql/settings.ts';
import { dependencyFields, explainDependencyError, orderFlow, type DependencyOptions } from './flow.ts';

export type { KeyMode } from './sql/jobs.ts';
export type { DependencyFailure } from './flow.ts';

export interface ClientOptions extends ConnectionOptions {
  /** Defaults to "grapevine". */
  schema?: string;
  /**
   * Apply migrations before first use (default true). A schema that is already current is only read, so a role
   * without DDL rights (`grapevine grant`) may leave this on; a schema that needs migrating then fails with
   * GRAPEVINE_SCHEMA_TOO_OLD naming `grapevine migrate`. Off: no check at all before the first statement.
   */
  migrate?: boolean;
  /**
   * Largest accepted payload, in bytes of JSON. The schema's own limit (1 MiB unless its owner changed
   * settings.max_payload_bytes), which the database enforces, is read once and applies too; this can only lower it.
   */
  maxPayloadBytes?: number;
  logger?: Logger;
}

export interface AddJobOptions extends DependencyOptions {
  /** When the job becomes due (default: now). */
  runAt?: Date | string;
  /** Higher runs first (default 0). */
  priority?: number;
  queue?: string;
  maxAttempts?: number;
  /** Hard limit on one attempt; the thread is terminated when it runs over. */
  timeoutMs?: number;
  /**
   * While a job with this key holds it, enqueueing another returns that job's id instead of adding one
   * (docs/keys.md). Any text of 1 to 512 characters, unique across the schema's tasks: put the task in it.
   */
  key?: string;
  /**
   * How long the key holds and what a later enqueue with it does (default "replace", as graphile-worker's job_key):
   * - replace: while the job is pending; the later enqueue replaces its payload, run time and options (debounce).
   * - preserve_run_at: as replace, but the first run time stays.
   * - dedupe: while the job is pending; the later enqueue changes nothing.
   * - dedupe_running: while the job is pending or running; the later enqueue changes nothing.
   * - throttle: for keyWindowMs after the first enqueue, whatever the job's state; the later enqueue changes nothing.
   */
  keyMode?: KeyMode;
  /** The throttle's window in ms: required with keyMode "throttle", refused with another mode. */
  keyWindowMs?: number;
  /**
   * The job's group within its queue (1 to 128 characters, e.g. a customer id): the queue's group
   * limits (docs/limits.md) apply per group; at group concurrency 1 a group's jobs run one at a time, in order.
   */
  group?: string;
  /** Enqueue inside the caller's open transaction: rolled back means no job and no notification. */
  db?: Queryable;
}

export interface JobSpec extends Omit<AddJobOptions, 'db'> {
  task: string;
  payload?: unknown;
}

export interface WaitOptions {
  /**
   * Give up with GRAPEVINE_WAIT_TIMEOUT after this long (default 60 s): 0 to
   * 2147483647 ms (setTimeout's limit, about 24.8 days); others are refused
   * with GRAPEVINE_CONFIG_INVALID.
   */
  timeoutMs?: number;
  /**
   * Called with each new value the handler reports with helpers.progress()
   * (first with the value the job already has, if any), and with the last one
   * before the wait resolves. While a wait with onProgress runs, the job's
   * progress writes are announced to this client; without one they are not
   * announced at all. Values are read from the table, so a value replaced
   * within one read is skipped, never reordered. What it throws ends the wait.
   */
  onProgress?: (progress: unknown) => void;
}

/** A job of a flow (addFlow): `name` is local to the flow, `after` names the flow's jobs it waits for. */
export interface FlowJob extends JobSpec {
  name: string;
  after?: string[];
}

export interface Client {
  readonly schema: string;
  addJob(task: string, payload?: unknown, options?: AddJobOptions): Promise<string>;
  addJobs(jobs: JobSpec[], options?: { db?: Queryable }): Promise<string[]>;
  /**
   * Enqueues a flow (a tree, a DAG, a chain) in one statement: all its jobs or none. Jobs refer to each
   * other by their local `name` in `after`, and to existing jobs by id in `dependsOn`. Resolves to each
   * name's job id.
   */
  addFlow(jobs: FlowJob[], options?: { db?: Queryable }): Promise<Record<string, string>>;
  getJob(id: string | number): Promise<Job | null>;
  /** Resolves when the job is terminal; wakes on a notification, or in poll mode looks every pollIntervalMs. */
  waitForJob(id: string | number, options?: WaitOptions): Promise<Job>;
  /** Cancels a pending job at once; a running one is signalled on whichever host runs it. */
  cancelJob(id: string | number): Promise<{ state: string | null }>;
  /** Makes pending jobs due now (all, or the given ids): for tests and operators. */
  runDueNow(ids?: Array<string | number>): Promise<number>;
  migrate(): Promise<MigrateResult>;
  close(): Promise<void>;
}

export function createClient(options: ClientOptions = {}): Client {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const { connectionString, listen, pool, preparedStatements, poll } = clientConnections(options, {
    max: 4,
    applicationName: 'grapevine-client',
  });
  const logger = options.logger ?? silentLogger();
  const channels = channelsFor(schema);
  let migrated: Promise<MigrateResult> | null = null;
  let schemaPayloadLimit: Promise<number | null> | null = null;
  // waitForJob(): woken by job ids on the done channel, and on the progress
  // channel for the jobs whose progress it watches.
  const finished = new Waiters(
    { ...listen, channels: [channels.done, channels.progress], applicationName: 'grapevine-waiter', logger },
    (payload, keys) => {
      const parsed = parseJobNotification(payload);
      return parsed.kind === 'ids' ? [...keys].filter((id) => rangesContain(parsed.ranges, Number(id))) : [];
    },
    poll,
  );

  const ensureMigrated = (): Promise<unknown> => {
    if ((options.migrate ?? DEFAULTS.migrate) === false) return Promise.resolve();
    migrated ??= explainConnectionErrors(connectionString, () => migrate(pool, schema)).catch((err) => {
      migrated = null;
      throw err;
    });
    return migrated;
  };

  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    await ensureMigrated();
    if ((options.migrate ?? DEFAULTS.migrate) !== false) return explainConnectionErrors(connectionString, fn);
    return explainConnectionErrors(connectionString, () => explainingOutdatedSchema(fn, pool, schema));
  };

  /** The row to insert, and its payload's size as JSON (checked against the limit once it is known). */
  const toRow = (spec: JobSpec): { row: NewJob; bytes: number } => {
    const task = validateName('task', spec.task);
    const queue = validateName('queue', spec.queue ?? DEFAULTS.queue);
    let payloadJson: string | undefined;
    try {
      payloadJson = JSON.stringify(spec.payload ?? {});
    } catch (err) {
      throw new GrapevineError(
        'GRAPEVINE_PAYLOAD_INVALID',
        `payload of task "${task}" is not JSON-serializable (${(err as Error).message}): pass plain objects, arrays, strings, numbers and booleans`,
      );
    }
    if (payloadJson === undefined) {
      throw new GrapevineError('GRAPEVINE_PAYLOAD_INVALID', `payload of task "${task}" is not JSON (got ${typeof spec.payload})`);
    }
    const refused = unstorableInJson(payloadJson);
    if (refused !== null) {
      const what =
        'nul' in refused
          ? 'a NUL character (\\u0000); encode binary data (base64, hex) instead'
          : `a lone UTF-16 surrogate (\\u${refused.surrogate} without its other half, often a string cut inside an emoji); cut strings on code-point boundaries`;
      throw new GrapevineError('GRAPEVINE_PAYLOAD_INVALID', `payload of task "${task}" holds ${what}: PostgreSQL cannot store it in jsonb`);
    }
    const row: NewJob = {
      task,
      payload: payloadJson,
      queue,
      run_at: toTimestamp(spec.runAt, task),
      priority: spec.priority === undefined ? DEFAULTS.priority : validateInt('priority', spec.priority, { min: -32768, max: 32767 }),
      // Not given: the task's retry policy may set it, else the schema's default (DEFAULTS.maxAttempts).
      max_attempts: spec.maxAttempts === undefined ? null : validateInt('maxAttempts', spec.maxAttempts, { min: 1, max: 1000 }),
      timeout_ms: spec.timeoutMs === undefined ? null : validateInt('timeoutMs', spec.timeoutMs, { min: 1, max: 2_147_483_647 }),
    };
    if (spec.group !== undefined) row.group_key = groupOf(spec.group, task);
    if (spec.dependsOn !== undefined || spec.onDependencyFailure !== undefined) Object.assign(row, dependencyFields(spec, task));
    if (spec.key !== undefined) Object.assign(row, keyFields(spec, task));
    else if (spec.keyMode !== undefined || spec.keyWindowMs !== undefined) {
      throw new GrapevineError(
        'GRAPEVINE_PAYLOAD_INVALID',
        `keyMode and keyWindowMs of task "${task}" need a key: pass key too, or neither`,
      );
    }
    return { row, bytes: Buffer.byteLength(payloadJson) };
  };

  /** The caller's connection for an enqueue in its transaction, else the pool. */
  const callerOrPool = (db: Queryable | undefined): Queryable =>
    db === undefined ? pool : preparedStatements ? db : withUnnamedStatements(db);

  const client: Client = {
    schema,

    async addJob(task, payload, opts = {}) {
      const prepared = toRow({ ...opts, task, payload });
      const { row } = prepared;
      const db = callerOrPool(opts.db);
      return run(async () => {
        await checkPayloadSizes([prepared], db);
        return insertJob(db, schema, row).catch((err: unknown) => {
          throw explainDependencyError(err);
        });
      });
    },

    async addJobs(specs, opts = {}) {
      if (!Array.isArray(specs))
        throw new GrapevineError('GRAPEVINE_PAYLOAD_INVALID', 'addJobs() takes an array of { task, payload?, ... }');
      const prepared = specs.map((spec) => toRow(spec));
      const rows = prepared.map((p) => p.row);
      const db = callerOrPool(opts.db);
      return run(async () => {
        await checkPayloadSizes(prepared, db);
        const ids: string[] = [];
        for (let i = 0; i < rows.length; i += DEFAULTS.insertChunkSize) {
          const chunk = rows.slice(i, i + DEFAULTS.insertChunkSize);
          ids.push(
            ...(await insertJobs(db, schema, chunk).catch((err: unknown) => {
              throw explainDependencyError(err);
            })),
          );
        }
        return ids;
      });
    },

    async addFlow(jobs, opts = {}) {
      if (!Array.isArray(jobs) || jobs.length === 0) {
        throw new GrapevineError(
          'GRAPEVINE_DEPENDENCY_INVALID',
          'addFlow() takes a non-empty array of { name, task, payload?, after?, ... }',
        );
      }
      const { order, after } = orderFlow(jobs);
      const prepared = order.map((i, at) => {
        const p = toRow(jobs[i]);
        if (after[at].length > 0) p.row.after = after[at];
        return p;
      });
      const db = callerOrPool(opts.db);
      return run(async () => {
        await checkPayloadSizes(prepared, db);
        // One statement, not insertChunkSize at a time: a flow is all or nothing even outside a transaction.
        const ids = await insertJobs(
          db,
          schema,
          prepared.map((p) => p.row),
        ).catch((err: unknown) => {
          throw explainDependencyError(err);
        });
        return Object.fromEntries(order.map((i, at) => [jobs[i].name, ids[at]]));
      });
    },

    async getJob(id) {
      const jobId = toJobId(id);
      return run(async () => {
        const row = await findJob(pool, schema, { id: jobId });
        return row ? jobFromRow(row) : null;
      });
    },

    async waitForJob(id, { timeoutMs = 60_000, onProgress } = {}) {
      const jobId = toJobId(id);
      validateTimeoutMs(timeoutMs);
      await ensureMigrated();
      const notFound = () =>
        new GrapevineError(
          'GRAPEVINE_JOB_NOT_FOUND',
          `job ${jobId} does not exist in schema "${schema}": the id is wrong, or the job was deleted ` +
            '(finished jobs are pruned after retentionMs; supervisors started with deleteSucceeded delete a job as soon as it succeeds unless someone already waits for it)',
        );
      const untilDone = async () => {
        const job = await watchAndRead(jobId);
        if (!job) throw notFound();
        return isTerminal(job.state) ? job : undefined;
      };
      if (!onProgress) {
        return finished.wait(jobId, untilDone, timeoutMs, () => waitTimeout(jobId, timeoutMs));
      }
      const progress = new ProgressFollower(onProgress);
      let marked = false;
      // One read at a time, so that values reach onProgress in the order the table had them.
      let reads: Promise<unknown> = Promise.resolve();
      const serial = <T>(fn: () => Promise<T>): Promise<T> => {
        const next = reads.then(fn, fn);
        reads = next.catch(() => {});
        return next;
      };
      const poll = () =>
        serial(async () => {
          const seen = await run(() => watchProgress(pool, schema, { id: jobId, watchMs: PROGRESS_WATCH_MS }));
          if (!seen) throw notFound();
          progress.saw(seen.progress);
          // The first poll also marks the job as waited for; after that, only its end needs the whole row.
          if (marked && !isTerminal(seen.state)) return undefined;
          marked = true;
          const job = await untilDone();
          if (job) progress.saw(job.progress);
          return job;
        });
      // The mark lasts PROGRESS_WATCH_MS: renewed while the wait runs (each poll
      // renews it once half is gone), it lapses soon after a watcher that went
      // away. A renewal is a poll, so what onProgress throws there ends the wait too.
      const renew = setInterval(() => finished.wake(jobId), PROGRESS_WATCH_MS / 3);
      try {
        return await finished.wait(jobId, poll, timeoutMs, () => waitTimeout(jobId, timeoutMs));
      } finally {
        clearInterval(renew);
      }
    },

    async cancelJob(id) {
      const jobId = toJobId(id);
      return run(async () => {
        const state = await withTransaction(pool, async (c) => {
          const found = await requestCancel(c, schema, { id: jobId });
          if (found.state === 'running' && found.locked_by !== null) {
            await announceCancel(c, schema, { id: jobId, owner: found.locked_by });
          }
          return found.state;
        });
        return { state: state === 'running' ? 'cancelling' : state === null ? await currentState(jobId) : state };
      });
    },

    async runDueNow(ids) {
      return run(async () => {
        return (await makeDue(pool, schema, { ids: ids ? ids.map(toJobId) : null })).length;
      });
    },

    migrate: () => {
      migrated = null;
      return ensureMigrated() as Promise<MigrateResult>;
    },

    async close() {
      await finished.stop();
      if (!options.pool) await pool.end();
    },
  };

  /**
   * Refuses payloads over the schema's limit before they travel. The
   * database refuses them too (and is the judge when the owner lowered the
   * limit since this client read it); this only spares the round trip. The
   * limit is read on the connection the jobs go through: with a caller's
   * transaction, that may be the only server connection a pooler gives it.
   */
  async function checkPayloadSizes(prepared: Array<{ row: NewJob; bytes: number }>, db: Queryable): Promise<void> {
    schemaPayloadLimit ??= payloadLimit(db, schema).then(
      (found) => found,
      (err: unknown) => {
        schemaPayloadLimit = null;
        throw err;
      },
    );
    const limit = Math.min(options.maxPayloadBytes ?? Infinity, (await schemaPayloadLimit) ?? Infinity);
    const over = prepared.find((p) => p.bytes > limit);
    if (over) {
      const own = limit === options.maxPayloadBytes;
      throw new GrapevineError(
        'GRAPEVINE_PAYLOAD_INVALID',
        `payload of task "${over.row.task}" is ${over.bytes} bytes, over the ${limit}-byte limit ${own ? 'set by maxPayloadBytes' : `of schema "${schema}"`}: ` +
          `store large data elsewhere and pass a reference, or raise ${own ? 'maxPayloadBytes' : `the schema's limit (as its owner: UPDATE ${schema}.settings SET max_payload_bytes = ...)`}`,
      );
    }
  }

  /**
   * Marks the job as waited for (so its end is notified), then reads it: a job
   * that ends before the mark is seen by the read, one that ends after it is
   * announced. The mark and the outcome write lock the same row, so one of
   * the two always holds.
   */
  async function watchAndRead(jobId: string): Promise<Job | null> {
    return run(async () => {
      await watchJob(pool, schema, { id: jobId });
      const row = await findJob(pool, schema, { id: jobId });
      return row ? jobFromRow(row) : null;
    });
  }

  async function currentState(jobId: string): Promise<string | null> {
    return (await findJob(pool, schema, { id: jobId }))?.state ?? null;
  }

  return client;
}

/** How long one watch_progress() mark lasts; a watcher renews it every third of this. */
const PROGRESS_WATCH_MS = 30_000;

function waitTimeout(jobId: string, timeoutMs: number): GrapevineError {
  return new GrapevineError('GRAPEVINE_WAIT_TIMEOUT', `job ${jobId} did not finish within ${timeoutMs} ms`);
}

/** Hands each new progress value to onProgress once: a value equal to the last one is not news. */
class ProgressFollower {
  private last: string | undefined;
  private readonly onProgress: (progress: unknown) => void;
  constructor(onProgress: (progress: unknown) => void) {
    this.onProgress = onProgress;
  }
  saw(progress: unknown): void {
    const value = progress ?? null;
    const json = JSON.stringify(value);
    if (json === this.last) return;
    const first = this.last === undefined;
    this.last = json;
    // A job that has reported nothing yet is not news either.
    if (first && value === null) return;
    this.onProgress(value);
  }
}

const KEY_MODES: readonly KeyMode[] = ['replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle'];

function keyFields(spec: JobSpec, task: string): Pick<NewJob, 'key' | 'key_mode' | 'key_window'> {
  const { key, keyMode = 'replace', keyWindowMs } = spec;
  if (typeof key !== 'string' || key.length < 1 || key.length > 512) {
    throw new GrapevineError(
      'GRAPEVINE_PAYLOAD_INVALID',
      `key of task "${task}" must be a string of 1 to 512 characters (got ${JSON.stringify(key)})`,
    );
  }
  if (!KEY_MODES.includes(keyMode)) {
    throw new GrapevineError(
      'GRAPEVINE_PAYLOAD_INVALID',
      `keyMode of task "${task}" is ${JSON.stringify(keyMode)}: use one of ${KEY_MODES.join(', ')}`,
    );
  }
  if ((keyMode === 'throttle') !== (keyWindowMs !== undefined)) {
    throw new GrapevineError(
      'GRAPEVINE_PAYLOAD_INVALID',
      `keyWindowMs of task "${task}" is the throttle's window: pass it with keyMode "throttle" and only then`,
    );
  }
  const window =
    keyWindowMs === undefined
      ? undefined
      : `${validateInt('keyWindowMs', keyWindowMs, { min: 1, max: Number.MAX_SAFE_INTEGER })} milliseconds`;
  return { key, key_mode: keyMode, key_window: window };
}

function groupOf(group: unknown, task: string): string {
  if (typeof group !== 'string' || group.length < 1 || group.length > 128 || group.includes('\u0000')) {
    throw new GrapevineError(
      'GRAPEVINE_PAYLOAD_INVALID',
      `group of task "${task}" must be a string of 1 to 128 characters without NUL (got ${JSON.stringify(group)})`,
    );
  }
  return group;
}

function toJobId(id: string | number): string {
  const text = String(id);
  if (!/^[1-9][0-9]{0,18}$/.test(text)) {
    throw new GrapevineError('GRAPEVINE_JOB_NOT_FOUND', `invalid job id ${JSON.stringify(id)}: job ids are positive integers`);
  }
  return text;
}

function toTimestamp(value: Date | string | undefined, task: string): string | null {
  if (value === undefined) return null;
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) {
    throw new GrapevineError(
      'GRAPEVINE_PAYLOAD_INVALID',
      `runAt of task "${task}" is not a valid time (${JSON.stringify(value)}): pass a Date or an ISO 8601 string such as 2026-01-31T12:00:00Z`,
    );
  }
  // PostgreSQL reads no year outside 1 to 9999 in the ISO form JavaScript writes.
  const year = date.getUTCFullYear();
  if (year < 1 || year > 9999) {
    throw new GrapevineError(
      'GRAPEVINE_PAYLOAD_INVALID',
      `runAt of task "${task}" is in the year ${year} (${JSON.stringify(value)}): pass a time from year 1 to 9999, such as 2026-01-31T12:00:00Z`,
    );
  }
  return date.toISOString();
}
