import { quoteIdent } from '../schema/channels.ts';
import { perSchema, statement, type Statement } from './statement.ts';

// Namespaces grapevine's advisory locks (see also schema/migrate.ts).
export const REAPER_LOCK = 0x67726171;

export interface SupervisorStatements {
  register: Statement;
  heartbeat: Statement;
  deregister: Statement;
  tryLeadReaper: Statement;
  claimChore: Statement;
  markLost: Statement;
  pruneExited: Statement;
  list: Statement;
}

export const supervisorStatements: (schema: string) => SupervisorStatements = perSchema(build);

function build(schema: string): SupervisorStatements {
  const s = quoteIdent(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
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
    // and how full the server's NOTIFY queue is (see migration 0008).
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
    tryLeadReaper: st(
      'reaper_lead',
      `SELECT pg_try_advisory_xact_lock(${REAPER_LOCK}, hashtext('${schema}')) AS leader`,
    ),
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
  };
}
