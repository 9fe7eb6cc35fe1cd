import { rowsOf, type Queryable } from '../db.ts';
import { SCHEDULES_CHANGED } from '../notification.ts';
import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { bind, perSchema, statement, type Statement } from './statement.ts';

/**
 * Every statement on the schedules table and the jobs its ticks add, one
 * typed function each (at the end of this file). A change to the table
 * sends `schedules` on the jobs channel in the same statement, so every
 * supervisor re-reads the table when the change commits
 * (supervisor/maintenance/fire-schedules.ts).
 */
interface ScheduleStatements {
  upsert: Statement;
  list: Statement;
  remove: Statement;
  setPaused: Statement;
  lockDue: Statement;
  insertTickJobs: Statement;
  advance: Statement;
}

const scheduleStatements: (schema: string) => ScheduleStatements = perSchema(build);

const COLUMNS = `name, cron, tz, task, payload, queue, priority, max_attempts, missed, paused, last_tick, created_at, updated_at`;

function build(schema: string): ScheduleStatements {
  const s = quoteIdent(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  const notifyChanged = `${s}.notify('${channelsFor(schema).jobs}', '${SCHEDULES_CHANGED}')`;
  return {
    // $1 name, $2 cron, $3 tz, $4 task, $5 payload, $6 queue, $7 priority,
    // $8 max attempts, $9 missed policy. Keeps paused and last_tick: a
    // redeclared schedule (every start declares its own again) stays paused
    // if an operator paused it, and its missed ticks are still counted from
    // the tick it last fired. Returns a row only if something changed.
    upsert: st(
      'schedule_upsert',
      `WITH changed AS (
         INSERT INTO ${s}.schedules AS c (name, cron, tz, task, payload, queue, priority, max_attempts, missed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (name) DO UPDATE
            SET cron = excluded.cron, tz = excluded.tz, task = excluded.task, payload = excluded.payload, queue = excluded.queue,
                priority = excluded.priority, max_attempts = excluded.max_attempts, missed = excluded.missed, updated_at = now()
          WHERE (c.cron, c.tz, c.task, c.payload, c.queue, c.priority, c.max_attempts, c.missed)
                IS DISTINCT FROM (excluded.cron, excluded.tz, excluded.task, excluded.payload, excluded.queue,
                                  excluded.priority, excluded.max_attempts, excluded.missed)
         RETURNING c.name)
       SELECT name, ${notifyChanged} FROM changed`,
    ),
    // Every schedule, paused or not, by name.
    list: st('schedule_list', `SELECT ${COLUMNS} FROM ${s}.schedules ORDER BY name`),
    // $1 name. Returns a row if there was one. The jobs its ticks added stay.
    remove: st(
      'schedule_remove',
      `WITH changed AS (DELETE FROM ${s}.schedules WHERE name = $1 RETURNING name)
       SELECT name, ${notifyChanged} FROM changed`,
    ),
    // $1 name, $2 paused. Returns a row if there is such a schedule (changed or not).
    setPaused: st(
      'schedule_set_paused',
      `WITH changed AS (UPDATE ${s}.schedules SET paused = $2, updated_at = CASE WHEN paused = $2 THEN updated_at ELSE now() END
                          WHERE name = $1 RETURNING name)
       SELECT name, ${notifyChanged} FROM changed`,
    ),
    // $1 names. Inside the firing transaction: the row lock makes the
    // supervisors that fire the same tick take turns, and the one that waited
    // reads the last_tick the first one stored, so it finds the tick fired.
    lockDue: st(
      'schedule_lock_due',
      `SELECT ${COLUMNS} FROM ${s}.schedules WHERE name = ANY($1::text[]) AND NOT paused ORDER BY name FOR UPDATE`,
    ),
    // $1 [{schedule, scheduled_for, task, payload, queue, priority, max_attempts}]; a
    // null max_attempts (the schedule sets none) is enqueued as addJob's is:
    // the task's retry policy, else 5.
    // The unique index on (schedule, scheduled_for) is what makes it one job
    // per tick: an insert of a tick already added adds nothing, whatever the
    // timing of whoever fired it. Runs when the tick was meant to, so backfilled
    // ticks run oldest first. Returns the ids added.
    insertTickJobs: st(
      'schedule_insert_tick_jobs',
      `INSERT INTO ${s}.jobs (task, payload, queue, priority, max_attempts, max_attempts_given, run_at, schedule, scheduled_for)
       SELECT t.task, t.payload, t.queue, t.priority, coalesce(t.max_attempts, 5), t.max_attempts IS NOT NULL,
              t.scheduled_for, t.schedule, t.scheduled_for
         FROM jsonb_to_recordset($1::jsonb) AS t(schedule text, scheduled_for timestamptz, task text, payload jsonb,
                                                 queue text, priority integer, max_attempts integer)
       ON CONFLICT (schedule, scheduled_for) WHERE schedule IS NOT NULL DO NOTHING
       RETURNING id::text AS id`,
    ),
    // $1 [{name, last_tick}]. Never moves a schedule's anchor back.
    advance: st(
      'schedule_advance',
      `UPDATE ${s}.schedules c SET last_tick = t.last_tick
         FROM jsonb_to_recordset($1::jsonb) AS t(name text, last_tick timestamptz)
        WHERE c.name = t.name AND (c.last_tick IS NULL OR c.last_tick < t.last_tick)`,
    ),
  };
}

/** A schedules row as pg reads it. */
export interface ScheduleRow {
  name: string;
  cron: string;
  tz: string;
  task: string;
  payload: unknown;
  queue: string;
  priority: number;
  /** Null: not given (the task's retry policy, else 5). */
  max_attempts: number | null;
  /** 'skip', 'once' or 'backfill:N'. */
  missed: string;
  paused: boolean;
  last_tick: Date | null;
  created_at: Date;
  updated_at: Date;
}

/** A schedule to store, its fields named as the table's columns. */
export type NewScheduleRow = Omit<ScheduleRow, 'paused' | 'last_tick' | 'created_at' | 'updated_at'>;

/** One tick's job. */
export interface TickJob {
  schedule: string;
  /** ISO 8601. */
  scheduled_for: string;
  task: string;
  payload: unknown;
  queue: string;
  priority: number;
  /** Null: not given (the task's retry policy, else 5). */
  max_attempts: number | null;
}

/** Adds or redeclares a schedule; whether anything changed (and every supervisor was told). */
export async function upsertSchedule(db: Queryable, schema: string, row: NewScheduleRow): Promise<boolean> {
  const query = bind<{ name: string }>(scheduleStatements(schema).upsert, [
    row.name,
    row.cron,
    row.tz,
    row.task,
    JSON.stringify(row.payload),
    row.queue,
    row.priority,
    row.max_attempts,
    row.missed,
  ]);
  return (await rowsOf(db, query)).length > 0;
}

export function listSchedules(db: Queryable, schema: string): Promise<ScheduleRow[]> {
  return rowsOf(db, bind(scheduleStatements(schema).list, []));
}

/** Whether there was such a schedule. */
export async function removeSchedule(db: Queryable, schema: string, p: { name: string }): Promise<boolean> {
  return (await rowsOf(db, bind<{ name: string }>(scheduleStatements(schema).remove, [p.name]))).length > 0;
}

/** Whether there is such a schedule. */
export async function setSchedulePaused(db: Queryable, schema: string, p: { name: string; paused: boolean }): Promise<boolean> {
  return (await rowsOf(db, bind<{ name: string }>(scheduleStatements(schema).setPaused, [p.name, p.paused]))).length > 0;
}

/** The named active schedules, locked until the transaction ends. */
export function lockDueSchedules(db: Queryable, schema: string, p: { names: string[] }): Promise<ScheduleRow[]> {
  return rowsOf(db, bind(scheduleStatements(schema).lockDue, [p.names]));
}

/** The ids of the jobs added: ticks already added are left out. */
export async function insertTickJobs(db: Queryable, schema: string, jobs: TickJob[]): Promise<string[]> {
  return (await rowsOf<{ id: string }>(db, bind(scheduleStatements(schema).insertTickJobs, [JSON.stringify(jobs)]))).map((r) => r.id);
}

export async function advanceLastTicks(db: Queryable, schema: string, ticks: { name: string; last_tick: string }[]): Promise<void> {
  await db.query(bind<never>(scheduleStatements(schema).advance, [JSON.stringify(ticks)]));
}
