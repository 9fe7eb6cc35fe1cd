import { rowsOf, type Queryable, type TypedQuery } from '../db.ts';
import { quoteIdent } from '../schema/channels.ts';
import type { RegistryStatus, SupervisorDetails, SupervisorRow } from '../supervisor-info.ts';
import { bind, changed, oneRow, perSchema, statement, type Statement } from './statement.ts';

// Namespaces grapevine's advisory locks (see also schema/migrate.ts).
export const REAPER_LOCK = 0x67726171;

/** Every statement on the supervisors table and the maintenance chores, one typed function each (at the end of this file). */
interface SupervisorStatements {
  register: Statement;
  heartbeat: Statement;
  deregister: Statement;
  tryLeadReaper: Statement;
  claimChore: Statement;
  markLost: Statement;
  pruneExited: Statement;
  list: Statement;
  states: Statement;
  setStatus: Statement;
}

const supervisorStatements: (schema: string) => SupervisorStatements = perSchema(build);

function build(schema: string): SupervisorStatements {
  const s = quoteIdent(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  // A supervisor whose heartbeat is older than $1 ms counts as LOST even
  // before the reaper has marked it so.
  const effectiveStatus = `CASE WHEN status NOT IN ('EXITED', 'LOST') AND heartbeat_at < now() - $1 * interval '1 millisecond'
                                THEN 'LOST' ELSE status END`;
  return {
    // $1 id, $2 host, $3 pid, $4 version, $5 threads, $6 concurrency, $7 queues, $8 tasks, $9 info
    register: st(
      'supervisor_register',
      `INSERT INTO ${s}.supervisors (id, host, pid, version, threads, concurrency, queues, tasks, info)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    ),
    // $1 id, $2 status, $3 threads, $4 info, $5 tasks (a REFRESH or a repaired
    // pool loads the task modules again). Returns the status the row had,
    // so a supervisor that was paused long enough to be declared LOST learns it,
    // and how full the server's NOTIFY queue is (see functions/notify.sql).
    heartbeat: st(
      'supervisor_heartbeat',
      `WITH prev AS (SELECT status FROM ${s}.supervisors WHERE id = $1 FOR UPDATE)
       UPDATE ${s}.supervisors
          SET heartbeat_at = now(), status = $2, threads = $3, info = $4, tasks = $5, stopped_at = NULL
        WHERE id = $1
       RETURNING (SELECT status FROM prev) AS previous_status, pg_notification_queue_usage() AS notify_queue_usage`,
    ),
    deregister: st(
      'supervisor_deregister',
      `UPDATE ${s}.supervisors SET status = 'EXITED', stopped_at = now(), heartbeat_at = now() WHERE id = $1`,
    ),
    // Only one supervisor reaps per tick: whoever takes this lock inside its
    // transaction. If that one dies, the next tick elects another.
    tryLeadReaper: st('reaper_lead', `SELECT pg_try_advisory_xact_lock(${REAPER_LOCK}, hashtext('${schema}')) AS leader`),
    // Run by the reaper's leader, inside its transaction. $1 chore ('reap',
    // 'prune'), $2 ms that must have passed since any supervisor last ran it
    // (NULL: run now). Returns a row only if the chore is this tick's to run.
    // Statement time, not now(): this transaction may have begun before the
    // last run committed. A ran_at still in the future means the server's
    // clock went back: run, rather than leave the chore undone until the
    // clock catches up. A missing row (restored without it) is recreated.
    claimChore: st(
      'maintenance_claim_chore',
      `INSERT INTO ${s}.maintenance AS m (chore, ran_at) VALUES ($1, statement_timestamp())
       ON CONFLICT (chore) DO UPDATE SET ran_at = excluded.ran_at
        WHERE $2::integer IS NULL
           OR m.ran_at <= statement_timestamp() - $2 * interval '1 millisecond'
           OR m.ran_at > statement_timestamp()
       RETURNING true AS due`,
    ),
    // $1 heartbeat timeout ms
    markLost: st(
      'supervisor_mark_lost',
      `UPDATE ${s}.supervisors SET status = 'LOST', stopped_at = now()
        WHERE status NOT IN ('EXITED', 'LOST') AND heartbeat_at < now() - $1 * interval '1 millisecond'
       RETURNING id`,
    ),
    pruneExited: st(
      'supervisor_prune',
      `DELETE FROM ${s}.supervisors
        WHERE status IN ('EXITED', 'LOST') AND coalesce(stopped_at, heartbeat_at) < now() - interval '1 day'
          AND NOT EXISTS (SELECT 1 FROM ${s}.jobs j WHERE j.state = 'running' AND j.locked_by = ${s}.supervisors.id)`,
    ),
    list: st(
      'supervisor_list',
      `SELECT id, host, pid, version, threads, concurrency, queues, tasks, info, started_at, heartbeat_at, stopped_at,
              CASE WHEN status NOT IN ('EXITED', 'LOST') AND heartbeat_at < now() - $1 * interval '1 millisecond'
                   THEN 'LOST' ELSE status END AS status
         FROM ${s}.supervisors ORDER BY started_at`,
    ),
    // $1 lost-after ms, $2 ids
    states: st('control_supervisor_states', `SELECT id, ${effectiveStatus} AS status FROM ${s}.supervisors WHERE id = ANY($2::text[])`),
    // $1 id, $2 status: makes PAUSE/RESUME visible before the next heartbeat.
    setStatus: st('control_set_status', `UPDATE ${s}.supervisors SET status = $2 WHERE id = $1 AND status NOT IN ('EXITED', 'LOST')`),
  };
}

export interface NewSupervisor {
  id: string;
  host: string;
  pid: number;
  version: string;
  threads: number;
  concurrency: number;
  /** null: every queue. */
  queues: string[] | null;
  tasks: string[];
}

export interface HeartbeatRow {
  /** The status the row had: LOST if the reaper declared this supervisor lost meanwhile (null: no row). */
  previous_status: RegistryStatus | null;
  /** How full the server's NOTIFY queue is, from 0 to 1. */
  notify_queue_usage: number;
}

/** A status a supervisor reports for itself (LOST is the reaper's to set). */
export type ReportedStatus = Exclude<RegistryStatus, 'LOST'>;

export async function registerSupervisor(db: Queryable, schema: string, p: NewSupervisor): Promise<void> {
  const values = [p.id, p.host, p.pid, p.version, p.threads, p.concurrency, p.queues, p.tasks, JSON.stringify({})];
  await db.query(bind(supervisorStatements(schema).register, values));
}

/** The heartbeat, for the runtime to send with its own answer deadline. */
export function heartbeatQuery(
  schema: string,
  p: { id: string; status: ReportedStatus; threads: number; info: SupervisorDetails; tasks: string[] },
): TypedQuery<HeartbeatRow> {
  return bind(supervisorStatements(schema).heartbeat, [p.id, p.status, p.threads, JSON.stringify(p.info), p.tasks]);
}

export async function deregisterSupervisor(db: Queryable, schema: string, p: { id: string }): Promise<void> {
  await db.query(bind(supervisorStatements(schema).deregister, [p.id]));
}

/** Whether this transaction leads the reaping; the lock is held until it ends. */
export async function tryLeadReaper(db: Queryable, schema: string): Promise<boolean> {
  return (await oneRow<{ leader: boolean }>(db, bind(supervisorStatements(schema).tryLeadReaper, []))).leader;
}

/** Whether the chore is this tick's to run: no supervisor ran it in the last `paceMs` (null: run now). */
export async function claimChore(
  db: Queryable,
  schema: string,
  p: { chore: 'reap' | 'prune' | 'stats'; paceMs: number | null },
): Promise<boolean> {
  return (await rowsOf<{ due: true }>(db, bind(supervisorStatements(schema).claimChore, [p.chore, p.paceMs]))).length > 0;
}

/** Marks LOST the supervisors that have not heartbeated for `lostAfterMs`; their ids. */
export async function markLostSupervisors(db: Queryable, schema: string, p: { lostAfterMs: number }): Promise<string[]> {
  return (await rowsOf<{ id: string }>(db, bind(supervisorStatements(schema).markLost, [p.lostAfterMs]))).map((r) => r.id);
}

/** Deletes the rows of supervisors gone for a day that no running job names; how many. */
export function pruneExitedSupervisors(db: Queryable, schema: string): Promise<number> {
  return changed(db, bind(supervisorStatements(schema).pruneExited, []));
}

/** Every registered supervisor, oldest first; one whose heartbeat is older than `lostAfterMs` reads as LOST. */
export function listSupervisors(db: Queryable, schema: string, p: { lostAfterMs: number }): Promise<SupervisorRow[]> {
  return rowsOf(db, bind(supervisorStatements(schema).list, [p.lostAfterMs]));
}

/** The status of each of these supervisors that is registered, as listSupervisors sees it. */
export function supervisorStates(
  db: Queryable,
  schema: string,
  p: { lostAfterMs: number; ids: string[] },
): Promise<Pick<SupervisorRow, 'id' | 'status'>[]> {
  return rowsOf(db, bind(supervisorStatements(schema).states, [p.lostAfterMs, p.ids]));
}

/** Makes a PAUSE or RESUME visible before the next heartbeat. */
export async function setSupervisorStatus(db: Queryable, schema: string, p: { id: string; status: ReportedStatus }): Promise<void> {
  await db.query(bind(supervisorStatements(schema).setStatus, [p.id, p.status]));
}
