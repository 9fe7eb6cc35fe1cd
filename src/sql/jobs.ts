import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { perSchema, statement, type Statement } from './statement.ts';

/**
 * Every statement that reads or changes jobs. Each outcome write is fenced on
 * the claim token handed out by the claim, so an owner that lost its claim
 * (reaped, released, cancelled) changes nothing.
 */
export interface JobStatements {
  insertOne: Statement;
  insertMany: Statement;
  getById: Statement;
  watch: Statement;
  claimByIds: Statement;
  claimNext: Statement;
  complete: Statement;
  deleteSucceeded: Statement;
  fail: Statement;
  releaseUnreported: Statement;
  lockIds: Statement;
  releaseIds: Statement;
  renewLeases: Statement;
  hasDue: Statement;
  reapExpired: Statement;
  pruneFinished: Statement;
  unhandledTasks: Statement;
  cancel: Statement;
  announceCancel: Statement;
  makeDue: Statement;
}

export const jobStatements: (schema: string) => JobStatements = perSchema(build);

function build(schema: string): JobStatements {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  const st = (name: string, text: string) => statement(schema, name, text);

  // Shared by every path that takes a running job away from its owner.
  const terminalAfterRelease = (countAttempt: string) => `CASE
      WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
      WHEN ${countAttempt} AND j.attempts >= j.max_attempts THEN 'failed'
      ELSE 'pending' END`;

  // `attempts` only ever grows, so (job, attempt) names one execution. A
  // release that should not cost the job an attempt raises its allowance instead.
  const releaseSet = (countAttempt: string, reason: string) => `
      state = ${terminalAfterRelease(countAttempt)},
      max_attempts = CASE WHEN ${countAttempt} THEN j.max_attempts ELSE j.max_attempts + 1 END,
      run_at = now(), last_error = ${reason}, lease_until = NULL, claim_token = NULL,
      finished_at = CASE WHEN ${terminalAfterRelease(countAttempt)} = 'pending' THEN NULL ELSE now() END`;

  // Tell listeners about what a statement changed: pending ids to supervisors,
  // terminal ids to waitForJob() — only for jobs someone waits for, because a
  // NOTIFY serialises commits cluster-wide (PostgreSQL holds a global lock
  // from pre-commit until after the WAL flush), and the outcome writes of
  // every thread of every supervisor would otherwise queue behind each other.
  const announce = (cte: string) => `
    SELECT ${s}.notify_ids('${ch.jobs}', ARRAY(SELECT id FROM ${cte} WHERE state = 'pending' AND run_at <= now())),
           ${s}.notify_ids('${ch.done}', ARRAY(SELECT id FROM ${cte} WHERE watched AND state IN ('succeeded', 'failed', 'cancelled'))),
           (SELECT count(${s}.notify('${ch.jobs}', 'at:' || floor(extract(epoch FROM run_at) * 1000)::bigint))
              FROM (SELECT min(run_at) AS run_at FROM ${cte} WHERE state = 'pending' AND run_at > now()) later
             WHERE later.run_at IS NOT NULL) AS hinted,
           ARRAY(SELECT id::text FROM ${cte}) AS ids`;

  // An outcome write answers with the ids the fence turned away (usually
  // none) rather than with every id it recorded: a thread reads back nothing
  // per job.
  const rejected = `ARRAY(SELECT r.id::text FROM r WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = r.id)) AS rejected`;

  return {
    // Enqueues go through add_job() and add_jobs(), which run with their
    // owner's rights: a role that may only enqueue has no right on the table.
    insertOne: st(
      'insert_one',
      `SELECT ${s}.add_job($1, $2, $3, $4, $5, $6, $7)::text AS id`,
    ),
    // $1 the jobs as a JSON array; ids come back in its order.
    insertMany: st(
      'insert_many',
      `SELECT id::text AS id FROM ${s}.add_jobs($1::jsonb) WITH ORDINALITY AS t(id, ord) ORDER BY ord`,
    ),
    // Through functions for the same reason as the enqueues.
    getById: st('get_by_id', `SELECT * FROM ${s}.get_job($1)`),
    // $1 id. Asks for a notification when the job finishes (see announce).
    watch: st('watch', `SELECT ${s}.watch_job($1)`),

    // $1 ids, $2 tasks this host can run, $3 owner supervisor, $4 thread id,
    // $5 lease ms, $6 queues (NULL = all). See claim_ids() in migration 0001.
    claimByIds: st(
      'claim_by_ids',
      `SELECT id::text AS id, task, queue, payload, attempts, max_attempts, timeout_ms,
              claim_token::text AS claim_token, cancel_requested
         FROM ${s}.claim_ids($1::bigint[], $2::text[], $6::text[], $3, $4, $5)`,
    ),
    // $1 how many, the rest as for claimByIds. See claim_next() in migration 0001.
    claimNext: st(
      'claim_next',
      `SELECT id::text AS id, task, queue, payload, attempts, max_attempts, timeout_ms,
              claim_token::text AS claim_token, cancel_requested
         FROM ${s}.claim_next($1, $2::text[], $6::text[], $3, $4, $5)`,
    ),

    // $1 [{id, token, result}]. Returns `rejected`: ids the fence turned away.
    complete: st(
      'complete',
      `WITH r AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(id bigint, token bigint, result jsonb)),
       done AS (
         UPDATE ${s}.jobs j
            SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'succeeded' END,
                result = r.result, finished_at = now(), lease_until = NULL
           FROM r
          WHERE j.id = r.id AND j.claim_token = r.token AND j.state = 'running'
         RETURNING j.id, j.watched)
       SELECT ${s}.notify_ids('${ch.done}', ARRAY(SELECT id FROM done WHERE watched)), ${rejected}`,
    ),
    // deleteSucceeded mode. $1 ids, $2 their claim tokens in the same order
    // (ids unique). Deletes the succeeded jobs that nobody waits for and no
    // one asked to cancel, fenced like `complete`; returns `kept`, the ids it
    // did not delete, which then go through `complete` (recorded, or rejected
    // by the fence there). Ids go in as an array so every row is found by
    // primary key: joined to a record set, the planner walked the whole
    // running index, deleted rows included, on every write.
    deleteSucceeded: st(
      'delete_succeeded',
      `WITH gone AS (
         DELETE FROM ${s}.jobs j
          WHERE j.id = ANY($1::bigint[])
            AND j.claim_token = ($2::bigint[])[array_position($1::bigint[], j.id)]
            AND j.state = 'running' AND NOT j.watched AND j.cancel_requested_at IS NULL
         RETURNING j.id)
       SELECT ARRAY(SELECT x::text FROM unnest($1::bigint[]) x WHERE NOT EXISTS (SELECT 1 FROM gone WHERE gone.id = x)) AS kept`,
    ),
    // $1 [{id, token, error, retryable}], $2 retry base ms, $3 retry max ms. Returns `rejected` too.
    fail: st(
      'fail',
      `WITH r AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(id bigint, token bigint, error text, retryable boolean)),
       done AS (
         UPDATE ${s}.jobs j
            SET state = CASE
                  WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                  WHEN NOT r.retryable OR j.attempts >= j.max_attempts THEN 'failed'
                  ELSE 'pending' END,
                run_at = CASE
                  WHEN j.cancel_requested_at IS NULL AND r.retryable AND j.attempts < j.max_attempts
                  THEN now() + least($2::float8 * power(2, greatest(j.attempts - 1, 0)), $3::float8)
                               * (0.75 + random() * 0.5) * interval '1 millisecond'
                  ELSE j.run_at END,
                finished_at = CASE
                  WHEN j.cancel_requested_at IS NULL AND r.retryable AND j.attempts < j.max_attempts THEN NULL
                  ELSE now() END,
                last_error = r.error, lease_until = NULL,
                claim_token = CASE
                  WHEN j.cancel_requested_at IS NULL AND r.retryable AND j.attempts < j.max_attempts THEN NULL
                  ELSE j.claim_token END
           FROM r
          WHERE j.id = r.id AND j.claim_token = r.token AND j.state = 'running'
         RETURNING j.id, j.state, j.run_at, j.watched)
       ${announce('done')}, ${rejected}`,
    ),

    // Claims nobody reported: a thread died between a claim's commit and its
    // 'claimed' message (thread ids are never reused within a process, so
    // nothing live matches), or a stop ended the threads (all gone by then).
    // $1 supervisor, $2 thread id (NULL: every thread), $3 reason, $4 count the attempt.
    releaseUnreported: st(
      'release_unreported',
      `WITH done AS (
         UPDATE ${s}.jobs j SET ${releaseSet('$4::boolean', '$3')}
          WHERE j.state = 'running' AND j.locked_by = $1 AND ($2::integer IS NULL OR j.locked_thread = $2)
         RETURNING j.id, j.state, j.run_at, j.watched)
       ${announce('done')}`,
    ),
    // $1 ids. Run before releaseIds in the same transaction: a thread's claim
    // is answered before it commits (threads/claim.ts), so a thread that died
    // at once may leave a claim still committing. Waiting for its row locks
    // lets releaseIds, with a fresh snapshot, see that claim.
    lockIds: st(
      'lock_ids',
      `SELECT 1 FROM ${s}.jobs WHERE id = ANY($1::bigint[]) AND state IN ('pending', 'running') ORDER BY id FOR UPDATE`,
    ),
    // Release chosen jobs of this supervisor ($1) with per-job reasons:
    // $2 [{id, thread, reason, count}] (count = whether the attempt counts).
    // The thread is checked too: once a dead thread's job is pending again
    // (its claim rolled back), another thread of ours may have claimed it.
    releaseIds: st(
      'release_ids',
      `WITH r AS (
         SELECT * FROM jsonb_to_recordset($2::jsonb) AS r(id bigint, thread integer, reason text, count boolean)),
       done AS (
         UPDATE ${s}.jobs j SET ${releaseSet('r.count', 'r.reason')}
           FROM r
          WHERE j.id = r.id AND j.state = 'running' AND j.locked_by = $1 AND j.locked_thread = r.thread
         RETURNING j.id, j.state, j.run_at, j.watched)
       ${announce('done')}`,
    ),

    // $1 supervisor, $2 ids of jobs it knows are running, $3 lease ms. Only
    // known jobs are renewed: a claim whose thread died before reporting it
    // lets its lease run out, and the reaper returns it.
    renewLeases: st(
      'renew_leases',
      // Also returns the jobs whose cancellation was requested: the owner
      // aborts them even if it missed the cancel notification.
      `UPDATE ${s}.jobs SET lease_until = now() + $3 * interval '1 millisecond'
        WHERE state = 'running' AND locked_by = $1 AND id = ANY($2::bigint[])
       RETURNING id::text AS id, cancel_requested_at IS NOT NULL AS cancel_requested`,
    ),
    // $1 tasks, $2 queues (NULL = all). Whether any pending job is due, held
    // by another statement or not. See has_due() in migration 0005.
    hasDue: st('has_due', `SELECT ${s}.has_due($1::text[], $2::text[]) AS due`),
    // Run only by the elected reaper, inside its transaction.
    reapExpired: st(
      'reap_expired',
      `WITH done AS (
         UPDATE ${s}.jobs j SET ${releaseSet('true', `'lease expired: ' || coalesce(j.locked_by, '?') || ' stopped renewing it (supervisor lost or thread stuck)'`)}
          WHERE j.state = 'running'
            AND (j.lease_until < now()
                 OR j.locked_by IN (SELECT id FROM ${s}.supervisors WHERE status IN ('LOST', 'EXITED')))
         RETURNING j.id, j.state, j.run_at, j.watched)
       ${announce('done')}`,
    ),
    // $1 retention ms, $2 batch size. Returns `pruned`, how many. See
    // prune_finished() in migration 0005.
    pruneFinished: st('prune_finished', `SELECT ${s}.prune_finished($1, $2)::integer AS pruned`),
    // $1 ms within which a supervisor must have heartbeated to count as live,
    // $2 oldest due jobs looked at per priority. See unhandled_tasks() in migration 0009.
    unhandledTasks: st('unhandled_tasks', `SELECT task, queue, jobs::integer AS jobs FROM ${s}.unhandled_tasks($1, $2)`),
    // $1 id. A pending job is cancelled on the spot; a running one is
    // flagged, and the caller tells its owner over the control channel. A
    // function (cancel_job), so that an operator role may cancel and no more.
    cancel: st('cancel', `SELECT state, locked_by FROM ${s}.cancel_job($1)`),
    // $1 job id, $2 its owner: tells the owner over the control channel
    // (best effort, like every notification: the owner's heartbeat also
    // reads the cancel request from the row).
    announceCancel: st(
      'announce_cancel',
      `SELECT ${s}.notify('${ch.control}', json_build_object('type', 'cancel', 'job', $1::text, 'to', $2::text)::text)`,
    ),
    // Testing and operations: make pending jobs due now. $1 ids (NULL = all)
    makeDue: st(
      'make_due',
      `WITH done AS (
         UPDATE ${s}.jobs j SET run_at = now()
          WHERE j.state = 'pending' AND j.run_at > now() AND ($1::bigint[] IS NULL OR j.id = ANY($1::bigint[]))
         RETURNING j.id, j.state, j.run_at, j.watched)
       ${announce('done')}`,
    ),
  };
}
