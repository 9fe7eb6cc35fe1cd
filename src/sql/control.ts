import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { statement, type Statement } from './statement.ts';

export interface ControlStatements {
  // Client side.
  liveWorkers: Statement;
  workerStates: Statement;
  send: Statement;
  recipients: Statement;
  responses: Statement;
  deleteResponses: Statement;
  responseIds: Statement;
  logTail: Statement;
  logAfter: Statement;
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

const cache = new Map<string, ControlStatements>();

export function controlStatements(schema: string): ControlStatements {
  let found = cache.get(schema);
  if (!found) {
    found = build(schema);
    cache.set(schema, found);
  }
  return found;
}

function build(schema: string): ControlStatements {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  // A supervisor whose heartbeat is older than $1 ms counts as LOST even
  // before the reaper has marked it so.
  const effectiveStatus = `CASE WHEN status NOT IN ('EXITED', 'LOST') AND heartbeat_at < now() - $1 * interval '1 millisecond'
                                THEN 'LOST' ELSE status END`;
  return {
    // $1 lost-after ms
    liveWorkers: st(
      'control_live_workers',
      `SELECT id FROM ${s}.supervisors
        WHERE status NOT IN ('EXITED', 'LOST') AND heartbeat_at >= now() - $1 * interval '1 millisecond'
        ORDER BY started_at, id`,
    ),
    // $1 lost-after ms, $2 ids
    workerStates: st(
      'control_worker_states',
      `SELECT id, ${effectiveStatus} AS status FROM ${s}.supervisors WHERE id = ANY($2::text[])`,
    ),
    // $1 recipients, $2 command, $3 args. The notification names the
    // recipients (when few) so the others need not look at the table.
    send: st(
      'control_send',
      `WITH m AS (SELECT nextval('${s}.message_ids') AS id),
       ins AS (
         INSERT INTO ${s}.messages (id, worker, command, args)
         SELECT m.id, w.worker, $2, $3::jsonb FROM m, unnest($1::text[]) WITH ORDINALITY AS w(worker, n) ORDER BY w.n)
       SELECT m.id::text AS id,
              pg_notify('${ch.control}', json_build_object(
                'type', 'message', 'id', m.id::text,
                'to', CASE WHEN cardinality($1::text[]) <= ${MAX_ADDRESSED_RECIPIENTS} THEN to_json($1::text[]) END)::text)
         FROM m`,
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
    // $1 message id, $2 workers
    deleteResponses: st(
      'control_delete_responses',
      `DELETE FROM ${s}.responses WHERE message_id = $1 AND worker = ANY($2::text[])`,
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
    respond: st(
      'control_respond',
      `WITH r AS (
         INSERT INTO ${s}.responses (message_id, worker, command, ok, value, error)
         VALUES ($1, $2, $3, $4, $5::json, $6::json)
         ON CONFLICT (message_id, worker) DO NOTHING),
       m AS (
         UPDATE ${s}.messages SET processed_at = now() WHERE id = $1 AND worker = $2)
       SELECT pg_notify('${ch.responses}', $1::text)`,
    ),
    // $1 worker, $2 status: makes PAUSE/RESUME visible before the next heartbeat.
    setStatus: st(
      'control_set_status',
      `UPDATE ${s}.supervisors SET status = $2 WHERE id = $1 AND status NOT IN ('EXITED', 'LOST')`,
    ),
    // $1 worker, $2 [{at, event, thread, detail, job?, attempt?}] in order. A
    // TASK_END entry becomes TASK_COMPLETE when that attempt succeeded, else
    // TASK_ERROR with what became of the job (pending = will retry). Attempts
    // only ever count up, so a later attempt means this one did not succeed.
    appendLog: st(
      'control_append_log',
      `WITH ins AS (
         INSERT INTO ${s}.worker_log (worker, at, event, thread, detail)
         SELECT $1, (e.entry->>'at')::timestamptz,
                CASE WHEN e.entry->>'event' <> 'TASK_END' THEN e.entry->>'event'
                     WHEN j.state = 'succeeded' AND same.attempt THEN 'TASK_COMPLETE' ELSE 'TASK_ERROR' END,
                (e.entry->>'thread')::integer,
                CASE WHEN e.entry->>'event' <> 'TASK_END' OR (j.state = 'succeeded' AND same.attempt) THEN e.entry->>'detail'
                     ELSE (e.entry->>'detail') || ' (' || CASE
                       WHEN j.id IS NULL THEN 'deleted'
                       WHEN same.attempt THEN j.state
                       ELSE 'attempt ' || (e.entry->>'attempt') || ' ended; job now ' || j.state END || ')' END
           FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(entry, n)
           LEFT JOIN ${s}.jobs j ON e.entry->>'event' = 'TASK_END' AND j.id = (e.entry->>'job')::bigint
           CROSS JOIN LATERAL (SELECT j.attempts = (e.entry->>'attempt')::integer AS attempt) same
          ORDER BY e.n)
       SELECT pg_notify('${ch.log}', $1::text)`,
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
