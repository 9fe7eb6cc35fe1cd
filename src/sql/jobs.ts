import { rowsOf, type Queryable, type TypedQuery } from '../db.ts';
import type { JobRow, JobState } from '../job.ts';
import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { bigintArray, bind, oneRow, perSchema, statement, type Statement } from './statement.ts';

/**
 * Every statement that reads or changes jobs, one typed function each (at
 * the end of this file). Each outcome write is fenced on the claim token
 * handed out by the claim, so an owner that lost its claim (reaped,
 * released, cancelled) changes nothing.
 */
interface JobStatements {
  insertOne: Statement;
  adoptTaskAttempts: Statement;
  insertMany: Statement;
  getById: Statement;
  watch: Statement;
  dependencies: Statement;
  dependents: Statement;
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
  readClaim: Statement;
  lockClaim: Statement;
}

const jobStatements: (schema: string) => JobStatements = perSchema(build);

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
  // A job of a limited queue keeps its run time, and so its place: a serial
  // group's job released by a crash runs again before the group's later jobs.
  const releaseSet = (countAttempt: string, reason: string) => `
      state = ${terminalAfterRelease(countAttempt)},
      max_attempts = CASE WHEN ${countAttempt} THEN j.max_attempts ELSE j.max_attempts + 1 END,
      run_at = CASE WHEN j.limited THEN j.run_at ELSE now() END, last_error = ${reason}, lease_until = NULL, claim_token = NULL,
      finished_at = CASE WHEN ${terminalAfterRelease(countAttempt)} = 'pending' THEN NULL ELSE now() END`;

  // Tell listeners about what a statement changed: pending ids to supervisors,
  // terminal ids to waitForJob() — only for jobs someone waits for, because a
  // NOTIFY serialises commits cluster-wide (PostgreSQL holds a global lock
  // from pre-commit until after the WAL flush), and the outcome writes of
  // every thread of every supervisor would otherwise queue behind each other.
  const announce = (cte: string) => `
    SELECT ${s}.notify_ids('${ch.jobs}', ARRAY(SELECT id FROM ${cte} WHERE state = 'pending' AND run_at <= now())),
           ${freedSlots(cte)} AS freed,
           ${s}.notify_ids('${ch.done}', ARRAY(SELECT id FROM ${cte} WHERE watched AND state IN ('succeeded', 'failed', 'cancelled'))),
           (SELECT count(${s}.notify('${ch.jobs}', 'at:' || floor(extract(epoch FROM run_at) * 1000)::bigint))
              FROM (SELECT min(run_at) AS run_at FROM ${cte} WHERE state = 'pending' AND run_at > now()) later
             WHERE later.run_at IS NOT NULL) AS hinted,
           ARRAY(SELECT id::text FROM ${cte}) AS ids`;

  // A job of a limited queue (docs/limits.md) leaving 'running' frees a slot
  // that jobs waiting on the limit may take: 'at:' now makes every supervisor
  // pull (claim_limited() takes the queue's turns). Jobs of unlimited queues
  // send nothing here.
  const freedSlots = (cte: string) => `
    (SELECT count(${s}.notify('${ch.jobs}', 'at:' || floor(extract(epoch FROM now()) * 1000)::bigint))
       FROM (SELECT 1 FROM ${cte} WHERE limited LIMIT 1) l)`;

  // The outcome writes resolve the dependents of the jobs they ended in one
  // call per statement (a fan-in counts a whole batch of children at once);
  // the jobs_finished trigger then finds nothing left to do for those rows,
  // and covers every other path. No call at all for a batch of jobs nobody
  // depends on (migration 0016, docs/workflows.md).
  const resolveDependents = (cte: string) => `
    (SELECT ${s}.resolve_dependencies(array_agg(id), array_agg(state)) FROM ${cte}
      WHERE has_dependents AND state IN ('succeeded', 'failed', 'cancelled') HAVING count(*) > 0) IS NULL AS resolved`;

  // An outcome write answers with the ids the fence turned away (usually
  // none) rather than with every id it recorded: a thread reads back nothing
  // per job.
  const rejected = `ARRAY(SELECT r.id::text FROM r WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = r.id)) AS rejected`;
  // Outcomes recorded as a cancel: one was asked for while the handler ran, its owner not yet told.
  const cancelled = `ARRAY(SELECT id::text FROM done WHERE state = 'cancelled') AS cancelled`;

  return {
    // Enqueues go through add_job() and add_jobs(), which run with their
    // owner's rights: a role that may only enqueue has no right on the table.
    insertOne: st(
      'insert_one',
      `SELECT ${s}.add_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::interval, $11::bigint[], $12, $13)::text AS id`,
    ),
    // $1 the jobs as a JSON array; their ids come back in its order as one
    // comma-separated text: one row to read rather than one per job.
    insertMany: st(
      'insert_many',
      `SELECT string_agg(id::text, ',' ORDER BY ord) AS ids, count(id)::int AS n FROM ${s}.add_jobs($1::jsonb) WITH ORDINALITY AS t(id, ord)`,
    ),
    // Through functions for the same reason as the enqueues.
    getById: st('get_by_id', `SELECT * FROM ${s}.get_job($1)`),
    // $1 id. Asks for a notification when the job finishes (see announce).
    watch: st('watch', `SELECT ${s}.watch_job($1)`),
    // $1 id. Its dependencies with their results: helpers.dependencies(), grapevine job.
    dependencies: st('dependencies', `SELECT id::text AS id, task, state, on_failure, result, last_error FROM ${s}.dependencies_of($1)`),
    // $1 id, $2 at most this many. The jobs that depend on it: grapevine job.
    dependents: st('dependents', `SELECT id::text AS id, task, state, on_failure FROM ${s}.dependents_of($1, $2)`),

    // $1 ids, $2 tasks this host can run, $3 owner supervisor, $4 thread id,
    // $5 lease ms, $6 queues (NULL = all). See src/schema/functions/claim_ids.sql.
    claimByIds: st(
      'claim_by_ids',
      `SELECT id::text AS id, task, queue, payload, attempts, max_attempts, max_attempts_given, timeout_ms,
              claim_token::text AS claim_token, cancel_requested, scheduled_for
         FROM ${s}.claim_ids($1::bigint[], $2::text[], $6::text[], $3, $4, $5)`,
    ),
    // $1 how many, the rest as for claimByIds. See src/schema/functions/claim_next.sql.
    claimNext: st(
      'claim_next',
      `SELECT id::text AS id, task, queue, payload, attempts, max_attempts, max_attempts_given, timeout_ms,
              claim_token::text AS claim_token, cancel_requested, scheduled_for
         FROM ${s}.claim_next($1, $2::text[], $6::text[], $3, $4, $5)`,
    ),

    // $1 [{id, token, result, progressed?, progress?}]. Returns `rejected`:
    // ids the fence turned away, and `cancelled`. A job's last helpers.progress() value comes
    // with its outcome (`progressed`: a JSON null is a value too), so it costs
    // no UPDATE of its own.
    complete: st(
      'complete',
      `WITH r AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(id bigint, token bigint, result jsonb, progressed boolean, progress jsonb)),
       done AS (
         UPDATE ${s}.jobs j
            SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'succeeded' END,
                result = r.result, finished_at = now(), lease_until = NULL,
                progress = CASE WHEN r.progressed THEN r.progress ELSE j.progress END
           FROM r
          WHERE j.id = r.id AND j.claim_token = r.token AND j.state = 'running'
         RETURNING j.id, j.state, j.watched, j.has_dependents, j.limited)
       SELECT ${s}.notify_ids('${ch.done}', ARRAY(SELECT id FROM done WHERE watched)), ${freedSlots('done')} AS freed, ${rejected}, ${cancelled},
              ${resolveDependents('done')}`,
    ),
    // deleteSucceeded mode. $1 ids (unique), $2 a JSON object from each id
    // to its claim token. Deletes the succeeded jobs that nobody waits for, no
    // one asked to cancel and no job depends on (their outcome wakes those),
    // fenced like `complete`; returns `kept`, the ids it
    // did not delete, which then go through `complete` (recorded, or rejected
    // by the fence there). Ids go in as an array, not joined to a record set:
    // joined, the planner walked the whole running index, deleted rows
    // included, on every write. Tokens are looked up by key in the object:
    // found by position in a second array (array_position), each row's
    // lookup read the array from the start, and a batch of 800 jobs spent
    // most of its statement there.
    deleteSucceeded: st(
      'delete_succeeded',
      `WITH gone AS (
         DELETE FROM ${s}.jobs j
          WHERE j.id = ANY($1::bigint[])
            AND j.claim_token = ($2::jsonb ->> j.id::text)::bigint
            AND j.state = 'running' AND NOT j.watched AND j.cancel_requested_at IS NULL AND NOT j.has_dependents
         RETURNING j.id, j.limited)
       SELECT ARRAY(SELECT x::text FROM unnest($1::bigint[]) x WHERE NOT EXISTS (SELECT 1 FROM gone WHERE gone.id = x)) AS kept,
              ${freedSlots('gone')} AS freed`,
    ),
    // $1 [{id, token, error, retryable, max_attempts?, delay_ms?, progressed?,
    // progress?}], $2 retry base ms, $3 retry max ms. A task's retry policy
    // (threads/retry-policy.ts) sends the job's max_attempts, written in, and
    // the delay before the retry; without them the row's max_attempts and the
    // supervisor's backoff apply. Progress as in `complete`. Returns `rejected` too.
    fail: st(
      'fail',
      `WITH r AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb)
           AS r(id bigint, token bigint, error text, retryable boolean, max_attempts integer, delay_ms float8,
                progressed boolean, progress jsonb)),
       done AS (
         UPDATE ${s}.jobs j
            SET state = CASE
                  WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                  WHEN NOT r.retryable OR j.attempts >= coalesce(r.max_attempts, j.max_attempts) THEN 'failed'
                  ELSE 'pending' END,
                run_at = CASE
                  WHEN j.cancel_requested_at IS NULL AND r.retryable AND j.attempts < coalesce(r.max_attempts, j.max_attempts)
                  THEN now() + coalesce(r.delay_ms, least($2::float8 * power(2, greatest(j.attempts - 1, 0)), $3::float8)
                                                    * (0.75 + random() * 0.5)) * interval '1 millisecond'
                  ELSE j.run_at END,
                finished_at = CASE
                  WHEN j.cancel_requested_at IS NULL AND r.retryable AND j.attempts < coalesce(r.max_attempts, j.max_attempts) THEN NULL
                  ELSE now() END,
                max_attempts = coalesce(r.max_attempts, j.max_attempts),
                max_attempts_given = j.max_attempts_given OR r.max_attempts IS NOT NULL,
                last_error = r.error, lease_until = NULL,
                progress = CASE WHEN r.progressed THEN r.progress ELSE j.progress END,
                claim_token = CASE
                  WHEN j.cancel_requested_at IS NULL AND r.retryable AND j.attempts < coalesce(r.max_attempts, j.max_attempts) THEN NULL
                  ELSE j.claim_token END
           FROM r
          WHERE j.id = r.id AND j.claim_token = r.token AND j.state = 'running'
         RETURNING j.id, j.state, j.run_at, j.watched, j.has_dependents, j.limited)
       ${announce('done')}, ${rejected}, ${cancelled}, ${resolveDependents('done')}`,
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
         RETURNING j.id, j.state, j.run_at, j.watched, j.limited)
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
         RETURNING j.id, j.state, j.run_at, j.watched, j.limited)
       ${announce('done')},
       ARRAY(SELECT id::text FROM done WHERE state = 'failed') AS failed,
       ARRAY(SELECT id::text FROM done WHERE state = 'cancelled') AS cancelled`,
    ),

    // $1 supervisor, $2 ids of jobs it knows are running, $3 lease ms. Only
    // known jobs are renewed: a claim whose thread died before reporting it
    // lets its lease run out, and the reaper returns it.
    renewLeases: st(
      'renew_leases',
      // Also returns the jobs whose cancellation was requested: the owner
      // aborts them even if it missed the cancel notification. A row locked
      // now is skipped, not waited for: an exactly-once transaction locks its
      // job's row until its COMMIT, and a frozen or busy owner would hold
      // every other lease of this supervisor behind it (the next beat renews it).
      `UPDATE ${s}.jobs j SET lease_until = now() + $3 * interval '1 millisecond'
         FROM (SELECT x.id FROM ${s}.jobs x
                WHERE x.state = 'running' AND x.locked_by = $1 AND x.id = ANY($2::bigint[])
                  FOR UPDATE SKIP LOCKED) free
        WHERE j.id = free.id
       RETURNING j.id::text AS id, j.cancel_requested_at IS NOT NULL AS cancel_requested`,
    ),
    // $1 tasks, $2 queues (NULL = all), $3 whether queues with limits count.
    // Whether any pending job is due, held by another statement or not. See src/schema/functions/has_due.sql.
    hasDue: st('has_due', `SELECT ${s}.has_due($1::text[], $2::text[], $3) AS due`),
    // Run only by the elected reaper, inside its transaction. A row locked
    // now is left for the next round rather than waited for: its owner is
    // finishing it (an outcome write, or an exactly-once transaction between
    // its claim check and COMMIT, which a frozen owner may hold for as long
    // as its connection lives), and waiting would stall every reap behind it.
    reapExpired: st(
      'reap_expired',
      `WITH done AS (
         UPDATE ${s}.jobs j SET ${releaseSet('true', `'lease expired: ' || coalesce(j.locked_by, '?') || ' stopped renewing it (supervisor lost or thread stuck)'`)}
          WHERE j.id IN (
                  SELECT x.id FROM ${s}.jobs x
                   WHERE x.state = 'running'
                     AND (x.lease_until < now()
                          OR x.locked_by IN (SELECT id FROM ${s}.supervisors WHERE status IN ('LOST', 'EXITED')))
                     FOR UPDATE OF x SKIP LOCKED)
         RETURNING j.id, j.state, j.run_at, j.watched, j.limited)
       ${announce('done')}`,
    ),
    // $1 retention ms, $2 batch size. Returns `pruned`, how many. See
    // src/schema/functions/prune_finished.sql.
    pruneFinished: st('prune_finished', `SELECT ${s}.prune_finished($1, $2)::integer AS pruned`),
    // $1 ms within which a supervisor must have heartbeated to count as live,
    // $2 oldest due jobs looked at per priority. See src/schema/functions/unhandled_tasks.sql.
    unhandledTasks: st('unhandled_tasks', `SELECT task, queue, jobs::integer AS jobs, schedules FROM ${s}.unhandled_tasks($1, $2)`),
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
    // $1 id. What a handler's exactly-once transaction checks its claim
    // against (threads/helpers.ts): first unlocked, to fail before the
    // handler's writes, then locked, as the transaction's last step before
    // its outcome. The lock is taken last so that the heartbeat, the reaper
    // and cancel never wait behind the handler's own statements.
    readClaim: st(
      'read_claim',
      `SELECT state, claim_token::text AS claim_token, cancel_requested_at IS NOT NULL AS cancel_requested, locked_by, attempts
         FROM ${s}.jobs WHERE id = $1`,
    ),
    lockClaim: st(
      'lock_claim',
      `SELECT state, claim_token::text AS claim_token, cancel_requested_at IS NOT NULL AS cancel_requested, locked_by, attempts
         FROM ${s}.jobs WHERE id = $1 FOR UPDATE`,
    ),
    // Sent after a claim, in its transaction (threads/claim.ts): the jobs it
    // claimed that were enqueued without maxAttempts take their task's
    // ($4 tasks, $5 their retry.maxAttempts; threads/retry-policy.ts), so that
    // a crash release or the reaper counts against that number too. The row
    // keeps what a release handed back beyond the default ($6). A claim sets
    // lease_until to now() + $3 ms, the same instant for all its rows, which
    // the lease index finds without walking the fleet's running jobs.
    adoptTaskAttempts: st(
      'adopt_task_attempts',
      `UPDATE ${s}.jobs j
          SET max_attempts = greatest(1, t.max_attempts + j.max_attempts - $6), max_attempts_given = true
         FROM unnest($4::text[], $5::integer[]) AS t(task, max_attempts)
        WHERE j.state = 'running' AND j.lease_until = now() + $3::integer * interval '1 millisecond'
          AND j.locked_by = $1 AND j.locked_thread = $2 AND NOT j.max_attempts_given AND j.task = t.task`,
    ),
    // Testing and operations: make pending jobs due now. $1 ids (NULL = all)
    makeDue: st(
      'make_due',
      `WITH done AS (
         UPDATE ${s}.jobs j SET run_at = now()
          WHERE j.state = 'pending' AND j.run_at > now() AND ($1::bigint[] IS NULL OR j.id = ANY($1::bigint[]))
         RETURNING j.id, j.state, j.run_at, j.watched, j.limited)
       ${announce('done')}`,
    ),
  };
}

// --- One typed function per statement. Ids and claim tokens are bigint in
// the table and text here, as pg reads them: a JavaScript number cannot hold
// every bigint.

/** A job to insert, its fields named as the jobs table's columns (insertJobs sends the objects as JSON). */
export interface NewJob {
  task: string;
  /** The payload as JSON text: the client makes it once, to check it, and sends it as it is. */
  payload: string;
  queue: string;
  /** An ISO 8601 time; null: now. */
  run_at: string | null;
  priority: number;
  /** null: not given (the task's retry policy, else 5). */
  max_attempts: number | null;
  timeout_ms: number | null;
  /** Left out (not null) for a job without a key, so that an unkeyed batch carries no key fields. */
  key?: string;
  key_mode?: KeyMode;
  /** The throttle's window, as a PostgreSQL interval ('60000 milliseconds'). */
  key_window?: string;
  /** The job's group within its queue (docs/limits.md); left out for none. */
  group_key?: string;
  /** Ids of existing jobs it waits for; left out for a job without (docs/workflows.md). */
  depends_on?: string[];
  /** Positions (from 1) of earlier jobs of the same batch it waits for: the flow builder's. */
  after?: number[];
  on_dependency_failure?: 'fail' | 'run' | 'ignore';
}

/** How long a job's key holds and what a later enqueue with the key does: docs/keys.md. */
export type KeyMode = 'replace' | 'preserve_run_at' | 'dedupe' | 'dedupe_running' | 'throttle';

/** A dependency of a job, or a dependent: task and state are null for a job pruned or deleted since. */
export interface DependencyRow {
  id: string;
  task: string | null;
  state: JobState | null;
  /** The dependent's policy should this dependency fail (docs/workflows.md). */
  on_failure: 'fail' | 'run' | 'ignore';
}

export interface DependencyResultRow extends DependencyRow {
  result: unknown;
  last_error: string | null;
}

/** What a claim hands a thread for each job it claimed. */
export interface ClaimedJobRow {
  id: string;
  task: string;
  queue: string;
  payload: unknown;
  attempts: number;
  max_attempts: number;
  /** False while the job's attempts may still come from its task's policy (threads/retry-policy.ts, taskMaxAttempts). */
  max_attempts_given: boolean;
  timeout_ms: number | null;
  claim_token: string;
  cancel_requested: boolean;
  /** The tick a schedule added the job for; null for a job no schedule added. */
  scheduled_for: Date | null;
}

/** Who claims, for what: the parameters every claim shares. */
export interface ClaimParams {
  /** Tasks this thread can run. */
  tasks: string[];
  /** null: every queue. */
  queues: string[] | null;
  /** The supervisor that owns the claim. */
  owner: string;
  thread: number;
  leaseMs: number;
}

export interface CompletedJob {
  id: string;
  token: string;
  /** The handler's result, as JSON text. */
  result: string;
  /** The job's last helpers.progress() value not yet stored, as JSON text. */
  progress?: string;
}

export interface FailedJob {
  id: string;
  token: string;
  error: string;
  retryable: boolean;
  /** The job's attempts as its task's policy sets them: written into the row, which then keeps them; absent: the row's. */
  max_attempts?: number;
  /** The delay before the retry its task's policy chose; absent: the supervisor's backoff. */
  delay_ms?: number;
  /** As for CompletedJob. */
  progress?: string;
}

/** `,"progressed":true,"progress":…}` for an outcome that carries its job's last progress value, else `}`. */
function progressTail(progress: string | undefined): string {
  return progress === undefined ? '}' : `,"progressed":true,"progress":${progress}}`;
}

export interface ReleasedJob {
  id: string;
  /** The thread that ran it: a job another thread of the same supervisor has claimed since is left alone. */
  thread: number;
  reason: string;
  /** Whether the run costs the job an attempt. */
  count: boolean;
}

/** The answer of every statement that announces what it changed (see `announce`). */
export interface AnnouncedRow {
  /** Every job the statement changed. */
  ids: string[];
}

/** What a release changed: every job it gave back (ids), and those it ended rather than made pending again. */
export interface ReleasedRow extends AnnouncedRow {
  /** Out of attempts: failed for good. */
  failed: string[];
  /** A cancel had been asked for: cancelled. */
  cancelled: string[];
}

export interface RenewedLeaseRow {
  id: string;
  cancel_requested: boolean;
}

export interface UnhandledTasksRow {
  task: string;
  queue: string;
  /** Due jobs waiting (among the oldest of each priority). */
  jobs: number;
  /** Active schedules that add jobs for this task and queue. */
  schedules: string[];
}

/** A job's claim as an exactly-once transaction sees it (readClaim, lockClaim). */
export interface ClaimStateRow {
  state: JobState;
  claim_token: string | null;
  cancel_requested: boolean;
  locked_by: string | null;
  attempts: number;
}

export interface CancelRow {
  /** What the job became (running: its owner is to abort it); null if it was not pending or running. */
  state: JobState | null;
  /** The supervisor running it, if it was running. */
  locked_by: string | null;
}

export async function insertJob(db: Queryable, schema: string, job: NewJob): Promise<string> {
  const values = [
    job.task,
    job.payload,
    job.queue,
    job.run_at,
    job.priority,
    job.max_attempts,
    job.timeout_ms,
    job.key ?? null,
    job.key_mode ?? null,
    job.key_window ?? null,
    job.depends_on ?? null,
    job.on_dependency_failure ?? null,
    job.group_key ?? null,
  ];
  return (await oneRow<{ id: string }>(db, bind(jobStatements(schema).insertOne, values))).id;
}

/** The new jobs' ids, in the order given. */
export async function insertJobs(db: Queryable, schema: string, jobs: NewJob[]): Promise<string[]> {
  const row = await oneRow<{ ids: string | null; n: number }>(db, bind(jobStatements(schema).insertMany, [jobsJson(jobs)]));
  if (row.n !== jobs.length) throw new Error(`add_jobs() returned ${row.n} ids for ${jobs.length} jobs`);
  return row.ids === null ? [] : row.ids.split(',');
}

/**
 * The jobs as add_jobs()'s JSON array, each payload written in as the text it
 * already is. Built by hand: a copy of each job without its payload for
 * JSON.stringify cost more than the rest of addJobs()'s work in the client.
 * Fields add_jobs() would fill in the same way are left out: missing and null
 * ones, and the values of SQL_DEFAULTS. The server parses a shorter array
 * (a tenth less time for a batch of plain jobs).
 */
function jobsJson(jobs: NewJob[]): string {
  const parts = new Array<string>(jobs.length);
  for (let i = 0; i < jobs.length; i++) {
    const job = jobs[i] as unknown as Record<string, unknown>;
    let text = '';
    for (const field in job) {
      const value = job[field];
      if (value === undefined || value === null || SQL_DEFAULTS[field] === value) continue;
      text += `,"${field}":${field === 'payload' ? value : JSON.stringify(value)}`;
    }
    parts[i] = `{${text.slice(1)}}`;
  }
  return `[${parts.join(',')}]`;
}

/** What add_jobs() (functions/add_jobs.sql, job_specs.sql) gives a job that leaves the field out. */
const SQL_DEFAULTS: Record<string, unknown> = { payload: '{}', queue: 'default', priority: 0 };

export async function findJob(db: Queryable, schema: string, p: { id: string }): Promise<JobRow | undefined> {
  return (await rowsOf<JobRow>(db, bind(jobStatements(schema).getById, [p.id])))[0];
}

/** A job's dependencies, in id order, with their results and errors. */
export function dependenciesOf(db: Queryable, schema: string, p: { id: string }): Promise<DependencyResultRow[]> {
  return rowsOf(db, bind(jobStatements(schema).dependencies, [p.id]));
}

/** The first `limit` jobs that depend on a job, in id order. */
export function dependentsOf(db: Queryable, schema: string, p: { id: string; limit: number }): Promise<DependencyRow[]> {
  return rowsOf(db, bind(jobStatements(schema).dependents, [p.id, p.limit]));
}

/** Asks for a notification when the job finishes. */
export async function watchJob(db: Queryable, schema: string, p: { id: string }): Promise<void> {
  await db.query(bind(jobStatements(schema).watch, [p.id]));
}

/** The claim of the jobs a notification named, for claimBatch (threads/claim.ts) to send inside its transaction. */
export function claimByIdsQuery(schema: string, p: ClaimParams & { ids: string[] }): TypedQuery<ClaimedJobRow> {
  return bind(jobStatements(schema).claimByIds, [p.ids, p.tasks, p.owner, p.thread, p.leaseMs, p.queues]);
}

/**
 * What the claim sends after itself, in its transaction, when some of the
 * thread's tasks set retry.maxAttempts: those tasks' jobs claimed without
 * their own maxAttempts take the task's. Null when no task sets it.
 */
export function adoptTaskAttemptsQuery(
  schema: string,
  p: { owner: string; thread: number; leaseMs: number; attempts: ReadonlyMap<string, number>; defaultMaxAttempts: number },
): TypedQuery<never> | null {
  if (p.attempts.size === 0) return null;
  return bind(jobStatements(schema).adoptTaskAttempts, [
    p.owner,
    p.thread,
    p.leaseMs,
    [...p.attempts.keys()],
    [...p.attempts.values()],
    p.defaultMaxAttempts,
  ]);
}

/** The claim of the next `limit` due jobs, for claimBatch (threads/claim.ts) to send inside its transaction. */
export function claimNextQuery(schema: string, p: ClaimParams & { limit: number }): TypedQuery<ClaimedJobRow> {
  return bind(jobStatements(schema).claimNext, [p.limit, p.tasks, p.owner, p.thread, p.leaseMs, p.queues]);
}

export function claimByIds(db: Queryable, schema: string, p: ClaimParams & { ids: string[] }): Promise<ClaimedJobRow[]> {
  return rowsOf(db, claimByIdsQuery(schema, p));
}

export function claimNext(db: Queryable, schema: string, p: ClaimParams & { limit: number }): Promise<ClaimedJobRow[]> {
  return rowsOf(db, claimNextQuery(schema, p));
}

/** Records successes (as cancelled where a cancel was asked); returns the ids the fence turned away, and the cancelled ones. */
/** What an outcome write did besides recording: the ids the fence turned away, and those recorded as cancelled. */
export interface RecordedOutcomes {
  rejected: string[];
  cancelled: string[];
}

export async function completeJobs(db: Queryable, schema: string, p: { jobs: readonly CompletedJob[] }): Promise<RecordedOutcomes> {
  // Ids and tokens are decimal bigints and results are JSON already, so the
  // parameter is assembled as text rather than parsed and re-encoded.
  const outcomes = p.jobs.map((o) => `{"id":${o.id},"token":${o.token},"result":${o.result}${progressTail(o.progress)}`);
  const { rejected, cancelled } = await oneRow<RecordedOutcomes>(db, bind(jobStatements(schema).complete, [`[${outcomes.join(',')}]`]));
  return { rejected, cancelled };
}

/**
 * Deletes succeeded jobs (ids unique, tokens in the same order) that nobody
 * waits for; returns the ids it kept, to be recorded with completeJobs.
 */
export async function deleteSucceeded(
  db: Queryable,
  schema: string,
  p: { ids: readonly string[]; tokens: readonly string[] },
): Promise<string[]> {
  const tokens: Record<string, string> = {};
  for (let i = 0; i < p.ids.length; i++) tokens[p.ids[i]] = p.tokens[i];
  const row = await oneRow<{ kept: string[] }>(
    db,
    bind(jobStatements(schema).deleteSucceeded, [bigintArray(p.ids), JSON.stringify(tokens)]),
  );
  return row.kept;
}

/** Records failures (retried with backoff from `retryBaseMs` up to `retryMaxMs`, cancelled where a cancel was asked); returns what completeJobs does. */
export async function failJobs(
  db: Queryable,
  schema: string,
  p: { jobs: readonly FailedJob[]; retryBaseMs: number; retryMaxMs: number },
): Promise<RecordedOutcomes> {
  const { rejected, cancelled } = await oneRow<RecordedOutcomes>(
    db,
    bind(jobStatements(schema).fail, [`[${p.jobs.map(failedJson).join(',')}]`, p.retryBaseMs, p.retryMaxMs]),
  );
  return { rejected, cancelled };
}

/** One failure as the fail statement reads it; its progress is JSON text already, spliced in as it is. */
function failedJson(f: FailedJob): string {
  const { progress, ...rest } = f;
  const base = JSON.stringify(rest);
  return progress === undefined ? base : base.slice(0, -1) + progressTail(progress);
}

/** Releases what `owner` (one thread of it, or every thread with null) claimed and never reported; returns the ids released. */
export async function releaseUnreported(
  db: Queryable,
  schema: string,
  p: { owner: string; thread: number | null; reason: string; count: boolean },
): Promise<string[]> {
  const row = await oneRow<AnnouncedRow>(db, bind(jobStatements(schema).releaseUnreported, [p.owner, p.thread, p.reason, p.count]));
  return row.ids;
}

/** Waits for the row locks of a claim still committing; sent before releaseJobsQuery in one transaction. */
export function lockJobsQuery(schema: string, p: { ids: readonly string[] }): TypedQuery<never> {
  return bind(jobStatements(schema).lockIds, [bigintArray(p.ids)]);
}

/** Releases chosen running jobs of `owner`, each with its own reason. */
export function releaseJobsQuery(schema: string, p: { owner: string; jobs: readonly ReleasedJob[] }): TypedQuery<ReleasedRow> {
  return bind(jobStatements(schema).releaseIds, [p.owner, JSON.stringify(p.jobs)]);
}

export async function releaseJobs(db: Queryable, schema: string, p: { owner: string; jobs: readonly ReleasedJob[] }): Promise<string[]> {
  return (await oneRow(db, releaseJobsQuery(schema, p))).ids;
}

/** Renews the leases of the running jobs `owner` knows about; the rows say which of them were asked to cancel. */
export function renewLeasesQuery(schema: string, p: { owner: string; ids: string[]; leaseMs: number }): TypedQuery<RenewedLeaseRow> {
  return bind(jobStatements(schema).renewLeases, [p.owner, p.ids, p.leaseMs]);
}

export function renewLeases(
  db: Queryable,
  schema: string,
  p: { owner: string; ids: string[]; leaseMs: number },
): Promise<RenewedLeaseRow[]> {
  return rowsOf(db, renewLeasesQuery(schema, p));
}

/** Whether any pending job of these tasks and queues (null: all) is due. */
/**
 * Whether a due job waits for these tasks and queues. `heldToo: false` leaves out queues with
 * limits or paused, whose jobs are announced when they may start (a thread's look after a short pull).
 */
export async function hasDue(
  db: Queryable,
  schema: string,
  p: { tasks: string[]; queues: string[] | null; heldToo?: boolean },
): Promise<boolean> {
  const row = await oneRow<{ due: boolean }>(db, bind(jobStatements(schema).hasDue, [p.tasks, p.queues, p.heldToo ?? true]));
  return row.due === true;
}

/** Returns to the queue the running jobs whose lease expired or whose owner is LOST or EXITED; the ids. */
export async function reapExpired(db: Queryable, schema: string): Promise<string[]> {
  const row = await oneRow<AnnouncedRow>(db, bind(jobStatements(schema).reapExpired, []));
  return row.ids;
}

/** Deletes up to `batchSize` jobs that finished more than `retentionMs` ago; how many. */
export async function pruneFinished(db: Queryable, schema: string, p: { retentionMs: number; batchSize: number }): Promise<number> {
  return (await oneRow<{ pruned: number }>(db, bind(jobStatements(schema).pruneFinished, [p.retentionMs, p.batchSize]))).pruned;
}

/** Due jobs whose task or queue no supervisor that heartbeated within `liveWithinMs` handles, among each priority's oldest `sample`. */
export function unhandledTasks(db: Queryable, schema: string, p: { liveWithinMs: number; sample: number }): Promise<UnhandledTasksRow[]> {
  return rowsOf(db, bind(jobStatements(schema).unhandledTasks, [p.liveWithinMs, p.sample]));
}

/** Cancels a pending job, flags a running one (its owner is then told with announceCancel). */
export function requestCancel(db: Queryable, schema: string, p: { id: string }): Promise<CancelRow> {
  return oneRow(db, bind(jobStatements(schema).cancel, [p.id]));
}

/** Tells the job's owner over the control channel to abort it. */
export async function announceCancel(db: Queryable, schema: string, p: { id: string; owner: string }): Promise<void> {
  await db.query(bind(jobStatements(schema).announceCancel, [p.id, p.owner]));
}

/** Makes pending jobs (these ids, or all with null) due now; the ids it changed. */
export async function makeDue(db: Queryable, schema: string, p: { ids: string[] | null }): Promise<string[]> {
  const row = await oneRow<AnnouncedRow>(db, bind(jobStatements(schema).makeDue, [p.ids]));
  return row.ids;
}

/** The job's claim now, without a lock; undefined if the row is gone. */
export async function readClaim(db: Queryable, schema: string, p: { id: string }): Promise<ClaimStateRow | undefined> {
  return (await rowsOf<ClaimStateRow>(db, bind(jobStatements(schema).readClaim, [p.id])))[0];
}

/** The job's claim, its row locked until the caller's transaction ends; undefined if the row is gone. */
export async function lockClaim(db: Queryable, schema: string, p: { id: string }): Promise<ClaimStateRow | undefined> {
  return (await rowsOf<ClaimStateRow>(db, bind(jobStatements(schema).lockClaim, [p.id])))[0];
}
