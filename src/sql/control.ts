import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { perSchema, statement, type Statement } from './statement.ts';

export interface ControlStatements {
  // Client side.
  workerStates: Statement;
  send: Statement;
  recipients: Statement;
  responses: Statement;
  takeResponses: Statement;
  responseIds: Statement;
  logTail: Statement;
  logAfter: Statement;
  followLog: Statement;
  unfollowLog: Statement;
  // Supervisor side.
  pending: Statement;
  respond: Statement;
  setStatus: Statement;
  appendLog: Statement;
  pruneOwnLog: Statement;
  pruneOldLog: Statement;
  pruneMessages: Statement;
  pruneResponses: Statement;
}

/** More recipients than this and the wake-up goes to everyone, so the payload stays far below 8000 bytes. */
export const MAX_ADDRESSED_RECIPIENTS = 100;

export const controlStatements: (schema: string) => ControlStatements = perSchema(build);

function build(schema: string): ControlStatements {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  // Log writes wake followers only while one is live (migration 0007: a
  // NOTIFY serialises commits cluster-wide until they reach the disk).
  const followed = `EXISTS (SELECT 1 FROM ${s}.log_followers WHERE until > now())`;
  // A supervisor whose heartbeat is older than $1 ms counts as LOST even
  // before the reaper has marked it so.
  const effectiveStatus = `CASE WHEN status NOT IN ('EXITED', 'LOST') AND heartbeat_at < now() - $1 * interval '1 millisecond'
                                THEN 'LOST' ELSE status END`;
  return {
    // $1 lost-after ms, $2 ids
    workerStates: st(
      'control_worker_states',
      `SELECT id, ${effectiveStatus} AS status FROM ${s}.supervisors WHERE id = ANY($2::text[])`,
    ),
    // $1 recipients (NULL: every live supervisor), $2 command, $3 args, $4
    // lost-after ms. Returns nothing when there is no recipient. The
    // notification names the recipients (when few) so the others need not
    // look at the table.
    send: st(
      'control_send',
      `WITH w AS (
         SELECT coalesce($1::text[], ARRAY(
           SELECT id FROM ${s}.supervisors
            WHERE status NOT IN ('EXITED', 'LOST') AND heartbeat_at >= now() - $4 * interval '1 millisecond'
            ORDER BY started_at, id)) AS workers),
       m AS (SELECT nextval('${s}.message_ids') AS id FROM w WHERE cardinality(w.workers) > 0),
       ins AS (
         INSERT INTO ${s}.messages (id, worker, command, args)
         SELECT m.id, r.worker, $2, $3::jsonb FROM m, w, unnest(w.workers) AS r(worker))
       SELECT m.id::text AS id, w.workers,
              ${s}.notify('${ch.control}', json_build_object(
                'type', 'message', 'id', m.id::text,
                'to', CASE WHEN cardinality(w.workers) <= ${MAX_ADDRESSED_RECIPIENTS} THEN to_json(w.workers) END)::text)
         FROM m, w`,
    ),
    // $1 message id
    recipients: st(
      'control_recipients',
      `SELECT worker, command FROM ${s}.messages WHERE id = $1 ORDER BY worker`,
    ),
    // $1 message id, $2 workers
    responses: st(
      'control_responses',
      `SELECT message_id::text, worker, command, ok, value, error, responded_at
         FROM ${s}.responses WHERE message_id = $1 AND worker = ANY($2::text[])`,
    ),
    // $1 message id, $2 workers, $3 delete. Returns the responses there are;
    // deletes them only if every one of the workers has answered (and $3), so
    // a caller that gives up on a missing one loses nothing.
    takeResponses: st(
      'control_take_responses',
      `WITH here AS (
         SELECT message_id, worker, command, ok, value, error, responded_at
           FROM ${s}.responses WHERE message_id = $1 AND worker = ANY($2::text[])),
       complete AS (SELECT count(*) = cardinality($2::text[]) AS yes FROM here),
       gone AS (
         DELETE FROM ${s}.responses
          WHERE message_id = $1 AND worker = ANY($2::text[]) AND $3::boolean AND (SELECT yes FROM complete))
       SELECT message_id::text, worker, command, ok, value, error, responded_at, (SELECT yes FROM complete) AS complete FROM here`,
    ),
    // $1 worker
    responseIds: st(
      'control_response_ids',
      `SELECT message_id AS id FROM ${s}.responses WHERE worker = $1 ORDER BY message_id`,
    ),
    // $1 worker (NULL = all), $2 how many. Oldest first. (Ids stay bigint in
    // SQL: ordered as text, "10" would come before "9".)
    logTail: st(
      'control_log_tail',
      `SELECT * FROM (
         SELECT id, worker, at, event, thread, detail FROM ${s}.worker_log
          WHERE $1::text IS NULL OR worker = $1
          ORDER BY id DESC LIMIT $2) t
        ORDER BY id`,
    ),
    // $1 after id, $2 worker (NULL = all)
    logAfter: st(
      'control_log_after',
      `SELECT id, worker, at, event, thread, detail FROM ${s}.worker_log
        WHERE id > $1 AND ($2::text IS NULL OR worker = $2)
        ORDER BY id LIMIT 1000`,
    ),

    // $1 follower id, $2 ms it stays live unless renewed. Registers or renews
    // a follower, and clears the rows of followers that stopped renewing.
    followLog: st(
      'control_follow_log',
      `WITH gone AS (DELETE FROM ${s}.log_followers WHERE until < now() AND id <> $1)
       INSERT INTO ${s}.log_followers (id, until) VALUES ($1, now() + $2 * interval '1 millisecond')
       ON CONFLICT (id) DO UPDATE SET until = excluded.until`,
    ),
    // $1 follower id
    unfollowLog: st('control_unfollow_log', `DELETE FROM ${s}.log_followers WHERE id = $1`),

    // $1 worker, $2 how many
    pending: st(
      'control_pending',
      `SELECT id, command, args FROM ${s}.messages
        WHERE worker = $1 AND processed_at IS NULL
        ORDER BY id LIMIT $2`,
    ),
    // $1 message id, $2 worker, $3 command, $4 ok, $5 value, $6 error.
    // Marking the message processed and storing its response is one step, so
    // a message is never answered twice nor marked done without an answer.
    // $7: log entries written in the same step (what the command did is in
    // the log before the response is visible, at no extra round trip).
    respond: st(
      'control_respond',
      `WITH r AS (
         INSERT INTO ${s}.responses (message_id, worker, command, ok, value, error)
         VALUES ($1, $2, $3, $4, $5::json, $6::json)
         ON CONFLICT (message_id, worker) DO NOTHING),
       m AS (
         UPDATE ${s}.messages SET processed_at = now() WHERE id = $1 AND worker = $2),
       log AS (${logInsert(s, '$2', '$7')})
       SELECT ${s}.notify('${ch.responses}', $1::text),
              CASE WHEN jsonb_array_length($7::jsonb) > 0 AND ${followed} THEN ${s}.notify('${ch.log}', $2::text) END`,
    ),
    // $1 worker, $2 status: makes PAUSE/RESUME visible before the next heartbeat.
    setStatus: st(
      'control_set_status',
      `UPDATE ${s}.supervisors SET status = $2 WHERE id = $1 AND status NOT IN ('EXITED', 'LOST')`,
    ),
    // $1 worker, $2 log entries (see logInsert).
    appendLog: st(
      'control_append_log',
      `WITH ins AS (${logInsert(s, '$1', '$2')})
       SELECT CASE WHEN ${followed} THEN ${s}.notify('${ch.log}', $1::text) END`,
    ),
    // $1 worker, $2 entries to keep
    pruneOwnLog: st(
      'control_prune_own_log',
      `DELETE FROM ${s}.worker_log
        WHERE worker = $1
            AND id <= (SELECT id FROM ${s}.worker_log WHERE worker = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)`,
    ),
    // $1 max age ms, $2 batch size
    pruneOldLog: st(
      'control_prune_old_log',
      `DELETE FROM ${s}.worker_log WHERE id IN (
         SELECT id FROM ${s}.worker_log WHERE at < now() - $1 * interval '1 millisecond' LIMIT $2)`,
    ),
    // $1 max age ms, $2 batch size
    pruneMessages: st(
      'control_prune_messages',
      `DELETE FROM ${s}.messages WHERE (id, worker) IN (
         SELECT id, worker FROM ${s}.messages WHERE sent_at < now() - $1 * interval '1 millisecond' LIMIT $2)`,
    ),
    // $1 max age ms, $2 batch size
    pruneResponses: st(
      'control_prune_responses',
      `DELETE FROM ${s}.responses WHERE (message_id, worker) IN (
         SELECT message_id, worker FROM ${s}.responses WHERE responded_at < now() - $1 * interval '1 millisecond' LIMIT $2)`,
    ),
  };
}

/**
 * Inserts worker log entries given as a JSON array of {at, event, thread,
 * detail, job?, attempt?, succeeded?}, in order. A TASK_END entry becomes
 * TASK_COMPLETE when that attempt succeeded: its thread saw the success
 * recorded (`succeeded`: the row may be deleted since, with deleteSucceeded),
 * or the row says so. Otherwise it becomes TASK_ERROR with what became of the
 * job (pending = will retry). Attempts only ever count up, so a later attempt
 * means this one did not succeed.
 */
function logInsert(s: string, worker: string, entries: string): string {
  return `
         INSERT INTO ${s}.worker_log (worker, at, event, thread, detail)
         SELECT ${worker}, (e.entry->>'at')::timestamptz,
                CASE WHEN e.entry->>'event' <> 'TASK_END' THEN e.entry->>'event'
                     WHEN ended.ok THEN 'TASK_COMPLETE' ELSE 'TASK_ERROR' END,
                (e.entry->>'thread')::integer,
                CASE WHEN e.entry->>'event' <> 'TASK_END' OR ended.ok THEN e.entry->>'detail'
                     ELSE (e.entry->>'detail') || ' (' || CASE
                       WHEN j.id IS NULL THEN 'deleted'
                       WHEN same.attempt THEN j.state
                       ELSE 'attempt ' || (e.entry->>'attempt') || ' ended; job now ' || j.state END || ')' END
           FROM jsonb_array_elements(${entries}::jsonb) WITH ORDINALITY AS e(entry, n)
           LEFT JOIN ${s}.jobs j ON e.entry->>'event' = 'TASK_END' AND j.id = (e.entry->>'job')::bigint
           CROSS JOIN LATERAL (SELECT j.attempts = (e.entry->>'attempt')::integer AS attempt) same
           CROSS JOIN LATERAL (
             SELECT coalesce(j.state = 'succeeded' AND same.attempt, false)
                    OR coalesce((e.entry->>'succeeded')::boolean, false) AS ok) ended
          ORDER BY e.n`;
}
