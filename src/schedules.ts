import type pg from 'pg';
import { DEFAULTS, resolveConnectionString, resolvePreparedStatements, validateSchemaName } from './config.ts';
import { createPool, explainConnectionErrors } from './db.ts';
import { GrapevineError } from './errors.ts';
import { parseSchedule, type MissedTicks, type ScheduleSpec } from './schedule/schedule.ts';
import { missedOption } from './schedule/crontab.ts';
import { scheduleFromRow, scheduleRow } from './schedule/stored.ts';
import { nextTicks } from './schedule/ticks.ts';
import { explainingOutdatedSchema, migrate } from './schema/migrate.ts';
import { listSchedules, removeSchedule, setSchedulePaused, upsertSchedule, type ScheduleRow } from './sql/schedules.ts';

export type { MissedTicks, ScheduleSpec } from './schedule/schedule.ts';

export interface SchedulesOptions {
  /** Defaults to DATABASE_URL. */
  connectionString?: string;
  /** Defaults to "grapevine". */
  schema?: string;
  /** Bring your own pool; close() will not end it. */
  pool?: pg.Pool;
  /**
   * Named prepared statements for the pool it makes (default true, or
   * GRAPEVINE_PREPARED_STATEMENTS), as createClient: false behind a pooler in
   * transaction mode.
   */
  preparedStatements?: boolean;
  /** Apply migrations before first use (default true). */
  migrate?: boolean;
}

/** A stored schedule, as `list()` reads it. */
export interface StoredSchedule {
  name: string;
  cron: string;
  tz: string;
  task: string;
  payload: unknown;
  queue: string;
  priority: number;
  /** Null: not given, so its jobs take their task's retry policy (else 5). */
  maxAttempts: number | null;
  missed: MissedTicks;
  paused: boolean;
  /** The last tick fired (or skipped); null before the first. */
  lastTick: Date | null;
  /** The next three ticks; none while paused. */
  nextRuns: Date[];
}

/**
 * The schedules stored in a schema, changed from code as `grapevine schedule`
 * changes them from the command line. Every change reaches the running
 * supervisors at once (they re-read the table on a notification).
 */
export interface Schedules {
  readonly schema: string;
  /** Adds the schedule, or updates the one with its name (which keeps its pause and last tick). */
  add(spec: ScheduleSpec): Promise<void>;
  /** Every schedule, by name. */
  list(): Promise<StoredSchedule[]>;
  /** Deletes it (the jobs it added stay); GRAPEVINE_SCHEDULE_NOT_FOUND if there is none. */
  remove(name: string): Promise<void>;
  /** No more ticks until resume(); GRAPEVINE_SCHEDULE_NOT_FOUND if there is none. */
  pause(name: string): Promise<void>;
  /** Ticks again, the ones missed while paused counted by its missed policy. */
  resume(name: string): Promise<void>;
  close(): Promise<void>;
}

export function createSchedules(options: SchedulesOptions = {}): Schedules {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const connectionString = options.pool ? '' : resolveConnectionString(options.connectionString);
  const pool =
    options.pool ??
    createPool(connectionString, {
      max: 2,
      applicationName: 'grapevine-schedules',
      preparedStatements: resolvePreparedStatements(options.preparedStatements),
    });
  let migrated: Promise<unknown> | undefined;

  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    const go = async () => {
      if ((options.migrate ?? DEFAULTS.migrate) !== false) await (migrated ??= migrate(pool, schema));
      return explainingOutdatedSchema(fn, pool, schema);
    };
    return options.pool ? go() : explainConnectionErrors(connectionString, go);
  };
  const found = (name: string) => (exists: boolean) => {
    if (!exists) {
      throw new GrapevineError(
        'GRAPEVINE_SCHEDULE_NOT_FOUND',
        `no schedule is named ${JSON.stringify(name)} in schema "${schema}": grapevine schedule list shows them`,
      );
    }
  };

  return {
    schema,
    async add(spec) {
      const row = scheduleRow(parseSchedule(spec));
      await run(() => upsertSchedule(pool, schema, row));
    },
    async list() {
      return (await run(() => listSchedules(pool, schema))).map(storedSchedule);
    },
    remove: (name) => run(() => removeSchedule(pool, schema, { name })).then(found(name)),
    pause: (name) => run(() => setSchedulePaused(pool, schema, { name, paused: true })).then(found(name)),
    resume: (name) => run(() => setSchedulePaused(pool, schema, { name, paused: false })).then(found(name)),
    async close() {
      if (!options.pool) await pool.end();
    },
  };
}

function storedSchedule(row: ScheduleRow): StoredSchedule {
  let nextRuns: Date[] = [];
  if (!row.paused) {
    try {
      nextRuns = nextTicks(scheduleFromRow(row), new Date(), 3);
    } catch {
      // A row this grapevine cannot read (edited by hand) is listed without run times; supervisors warn about it.
    }
  }
  return {
    name: row.name,
    cron: row.cron,
    tz: row.tz,
    task: row.task,
    payload: row.payload,
    queue: row.queue,
    priority: row.priority,
    maxAttempts: row.max_attempts,
    missed: missedOption(row.missed),
    paused: row.paused,
    lastTick: row.last_tick,
    nextRuns,
  };
}
