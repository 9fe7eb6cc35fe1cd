import { rowsOf, type Queryable } from '../db.ts';
import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { bind, changed, perSchema, statement, type Statement } from './statement.ts';

/**
 * Every statement on the control plane's tables (messages, responses, the
 * supervisor log (table worker_log) and its followers), one typed function each (at the end of
 * this file).
 */
interface ControlStatements {
  // Client side.
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
  pendingUrgent: Statement;
  pendingOrdinary: Statement;
  respond: Statement;
  markProcessed: Statement;
  appendLog: Statement;
  pruneLogPerSupervisor: Statement;
  pruneOldLog: Statement;
  pruneMessages: Statement;
  pruneResponses: Statement;
}

/**
 * Commands a supervisor reads before any other waiting message: the ones an
 * operator sends to look at or rein in a supervisor that may be busy with a
 * flood of others.
 */
export const URGENT_COMMANDS = ['PING', 'STOP', 'PAUSE', 'RESUME'] as const;
/** The predicate of migration 0018's messages_urgent_idx, word for word, so the planner can use that index. */
const URGENT = `command IN (${URGENT_COMMANDS.map((c) => `'${c}'`).join(', ')})`;

/** More recipients than this and the wake-up goes to everyone, so the payload stays far below 8000 bytes. */
export const MAX_ADDRESSED_RECIPIENTS = 100;

const controlStatements: (schema: string) => ControlStatements = perSchema(build);

function build(schema: string): ControlStatements {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  // Log writes wake followers only while one is live (log_followers in the
  // baseline: a NOTIFY serialises commits cluster-wide until they reach the disk).
  const followed = `EXISTS (SELECT 1 FROM ${s}.log_followers WHERE until > now())`;
  return {
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
            ORDER BY started_at, id)) AS ids),
       m AS (SELECT nextval('${s}.message_ids') AS id FROM w WHERE cardinality(w.ids) > 0),
       ins AS (
         INSERT INTO ${s}.messages (id, worker, command, args)
         SELECT m.id, r.id, $2, $3::jsonb FROM m, w, unnest(w.ids) AS r(id))
       SELECT m.id::text AS id, w.ids AS supervisors,
              ${s}.notify('${ch.control}', json_build_object(
                'type', 'message', 'id', m.id::text,
                'to', CASE WHEN cardinality(w.ids) <= ${MAX_ADDRESSED_RECIPIENTS} THEN to_json(w.ids) END)::text)
         FROM m, w`,
    ),
    // $1 message id
    recipients: st('control_recipients', `SELECT worker AS supervisor, command FROM ${s}.messages WHERE id = $1 ORDER BY worker`),
    // $1 message id, $2 supervisors
    responses: st(
      'control_responses',
      `SELECT message_id::text, worker AS supervisor, command, ok, value, error, responded_at
         FROM ${s}.responses WHERE message_id = $1 AND worker = ANY($2::text[])`,
    ),
    // $1 message id, $2 supervisors, $3 delete. Returns the responses there are;
    // deletes them only if every one of the supervisors has answered (and $3), so
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
       SELECT message_id::text, worker AS supervisor, command, ok, value, error, responded_at, (SELECT yes FROM complete) AS complete FROM here`,
    ),
    // $1 supervisor
    responseIds: st('control_response_ids', `SELECT message_id AS id FROM ${s}.responses WHERE worker = $1 ORDER BY message_id`),
    // $1 supervisor (NULL = all), $2 how many. Oldest first. (Ids stay bigint in
    // SQL: ordered as text, "10" would come before "9".)
    logTail: st(
      'control_log_tail',
      `SELECT * FROM (
         SELECT id, worker AS supervisor, at, event, thread, detail FROM ${s}.worker_log
          WHERE $1::text IS NULL OR worker = $1
          ORDER BY id DESC LIMIT $2) t
        ORDER BY id`,
    ),
    // $1 after id, $2 supervisor (NULL = all)
    logAfter: st(
      'control_log_after',
      `SELECT id, worker AS supervisor, at, event, thread, detail FROM ${s}.worker_log
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

    // $1 supervisor, $2 how many. Urgent commands first, each kind in id
    // order: a flood of other messages never holds up a PING or a STOP. The
    // urgent half walks the partial index messages_urgent_idx (migration
    // 0018), whose predicate this text repeats.
    pending: st(
      'control_pending',
      `SELECT id, command, args FROM (
         (SELECT id, command, args, 0 AS lane FROM ${s}.messages
           WHERE worker = $1 AND processed_at IS NULL AND ${URGENT}
           ORDER BY id LIMIT $2)
         UNION ALL
         (SELECT id, command, args, 1 AS lane FROM ${s}.messages
           WHERE worker = $1 AND processed_at IS NULL AND NOT ${URGENT}
           ORDER BY id LIMIT $2)) m
        ORDER BY lane, id LIMIT $2`,
    ),
    // $1 supervisor, $2 how many. One lane each: a supervisor reads and
    // handles urgent commands apart from the others, so a slow one of those
    // never holds up a PING or a STOP. The urgent one walks messages_urgent_idx.
    pendingUrgent: st(
      'control_pending_urgent',
      `SELECT id, command, args FROM ${s}.messages
        WHERE worker = $1 AND processed_at IS NULL AND ${URGENT}
        ORDER BY id LIMIT $2`,
    ),
    pendingOrdinary: st(
      'control_pending_ordinary',
      `SELECT id, command, args FROM ${s}.messages
        WHERE worker = $1 AND processed_at IS NULL AND NOT ${URGENT}
        ORDER BY id LIMIT $2`,
    ),
    // $1 message id, $2 supervisor, $3 command, $4 ok, $5 value, $6 error.
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
    // $1 message id, $2 supervisor. The last resort when every response to a
    // message was refused: it counts as processed, with no answer.
    markProcessed: st(
      'control_mark_processed',
      `UPDATE ${s}.messages SET processed_at = now() WHERE id = $1 AND worker = $2 AND processed_at IS NULL`,
    ),
    // $1 supervisor, $2 log entries (see logInsert).
    appendLog: st(
      'control_append_log',
      `WITH ins AS (${logInsert(s, '$1', '$2')})
       SELECT CASE WHEN ${followed} THEN ${s}.notify('${ch.log}', $1::text) END`,
    ),
    // $1 entries to keep per supervisor. Each registered supervisor's
    // cut-off is one walk down the (worker, id) index.
    pruneLogPerSupervisor: st(
      'control_prune_log_per_supervisor',
      `DELETE FROM ${s}.worker_log l
        USING (SELECT sup.id,
                      (SELECT id FROM ${s}.worker_log WHERE worker = sup.id ORDER BY id DESC OFFSET $1 LIMIT 1) AS last_dropped
                 FROM ${s}.supervisors sup) c
        WHERE l.worker = c.id AND l.id <= c.last_dropped`,
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
 * Inserts supervisor log entries given as a JSON array of {at, event, thread,
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

/** A sent message: its id (shared by all recipients) and the recipients. */
export interface SentMessageRow {
  id: string;
  supervisors: string[];
}

export interface RecipientRow {
  supervisor: string;
  command: string;
}

/** One recipient's answer to a message. */
export interface ResponseRow {
  message_id: string;
  supervisor: string;
  command: string;
  ok: boolean;
  value: unknown;
  error: { code: string; message: string } | null;
  responded_at: Date;
}

export interface LogRow {
  id: string;
  supervisor: string;
  at: Date;
  event: string;
  thread: number | null;
  detail: string | null;
}

/** A message a supervisor has yet to process. */
export interface MessageRow {
  id: string;
  command: string;
  args: unknown;
}

/**
 * Stores a message for `recipients` (null: every supervisor that heartbeated
 * within `lostAfterMs`) and wakes them; undefined when there is no recipient.
 */
export async function sendMessage(
  db: Queryable,
  schema: string,
  p: { recipients: string[] | null; command: string; argsJson: string | null; lostAfterMs: number },
): Promise<SentMessageRow | undefined> {
  return (await rowsOf<SentMessageRow>(db, bind(controlStatements(schema).send, [p.recipients, p.command, p.argsJson, p.lostAfterMs])))[0];
}

export function messageRecipients(db: Queryable, schema: string, p: { messageId: string }): Promise<RecipientRow[]> {
  return rowsOf(db, bind(controlStatements(schema).recipients, [p.messageId]));
}

export function readResponses(db: Queryable, schema: string, p: { messageId: string; supervisors: string[] }): Promise<ResponseRow[]> {
  return rowsOf(db, bind(controlStatements(schema).responses, [p.messageId, p.supervisors]));
}

/** The responses there are; deleted (if `remove`) only once every one of `supervisors` has answered. */
export function takeResponses(
  db: Queryable,
  schema: string,
  p: { messageId: string; supervisors: string[]; remove: boolean },
): Promise<(ResponseRow & { complete: boolean })[]> {
  return rowsOf(db, bind(controlStatements(schema).takeResponses, [p.messageId, p.supervisors, p.remove]));
}

/** Ids of the messages `supervisor` has answered whose responses are still stored, oldest first. */
export async function responseIds(db: Queryable, schema: string, p: { supervisor: string }): Promise<string[]> {
  return (await rowsOf<{ id: string }>(db, bind(controlStatements(schema).responseIds, [p.supervisor]))).map((r) => r.id);
}

/** The newest `limit` entries (of one supervisor, or all with null), oldest first. */
export function logTail(db: Queryable, schema: string, p: { supervisor: string | null; limit: number }): Promise<LogRow[]> {
  return rowsOf(db, bind(controlStatements(schema).logTail, [p.supervisor, p.limit]));
}

/** Up to 1000 entries after `afterId` (of one supervisor, or all with null), in order. */
export function logAfter(db: Queryable, schema: string, p: { afterId: string; supervisor: string | null }): Promise<LogRow[]> {
  return rowsOf(db, bind(controlStatements(schema).logAfter, [p.afterId, p.supervisor]));
}

/** Registers or renews a log follower for `ttlMs`: while one is live, log writes notify. */
export async function followLog(db: Queryable, schema: string, p: { follower: string; ttlMs: number }): Promise<void> {
  await db.query(bind(controlStatements(schema).followLog, [p.follower, p.ttlMs]));
}

export async function unfollowLog(db: Queryable, schema: string, p: { follower: string }): Promise<void> {
  await db.query(bind(controlStatements(schema).unfollowLog, [p.follower]));
}

/** Which of a supervisor's unprocessed messages to read: urgent commands, the others, or all (urgent first). */
export type MessageLane = 'urgent' | 'ordinary' | 'all';

/** Up to `limit` messages `supervisor` has not processed, of one lane (default all: urgent ones (URGENT_COMMANDS) first), each kind in id order. */
export function pendingMessages(
  db: Queryable,
  schema: string,
  p: { supervisor: string; limit: number; lane?: MessageLane },
): Promise<MessageRow[]> {
  const st = controlStatements(schema);
  const which = p.lane === 'urgent' ? st.pendingUrgent : p.lane === 'ordinary' ? st.pendingOrdinary : st.pending;
  return rowsOf(db, bind(which, [p.supervisor, p.limit]));
}

/**
 * Answers a message and marks it processed, with the log entries written so
 * far (`logEntries`: a JSON array, see logInsert) in the same statement.
 */
export async function respond(
  db: Queryable,
  schema: string,
  p: {
    messageId: string;
    supervisor: string;
    command: string;
    ok: boolean;
    value: unknown;
    error: { code: string; message: string } | null;
    logEntries: string;
  },
): Promise<void> {
  const values = [
    p.messageId,
    p.supervisor,
    p.command,
    p.ok,
    JSON.stringify(p.value ?? null),
    p.error ? JSON.stringify(p.error) : null,
    p.logEntries,
  ];
  await db.query(bind(controlStatements(schema).respond, values));
}

/** Marks a message processed without answering it (every response to it was refused). */
export async function markProcessed(db: Queryable, schema: string, p: { messageId: string; supervisor: string }): Promise<void> {
  await db.query(bind(controlStatements(schema).markProcessed, [p.messageId, p.supervisor]));
}

/** Appends log entries (`entries`: a JSON array, see logInsert). */
export async function appendLog(db: Queryable, schema: string, p: { supervisor: string; entries: string }): Promise<void> {
  await db.query(bind(controlStatements(schema).appendLog, [p.supervisor, p.entries]));
}

/** Keeps the newest `keep` entries of each registered supervisor; how many it deleted. */
export function pruneLogPerSupervisor(db: Queryable, schema: string, p: { keep: number }): Promise<number> {
  return changed(db, bind(controlStatements(schema).pruneLogPerSupervisor, [p.keep]));
}

/** Deletes up to `batchSize` entries older than `maxAgeMs`; how many. */
export function pruneOldLog(db: Queryable, schema: string, p: { maxAgeMs: number; batchSize: number }): Promise<number> {
  return changed(db, bind(controlStatements(schema).pruneOldLog, [p.maxAgeMs, p.batchSize]));
}

/** Deletes up to `batchSize` messages sent more than `maxAgeMs` ago; how many. */
export function pruneMessages(db: Queryable, schema: string, p: { maxAgeMs: number; batchSize: number }): Promise<number> {
  return changed(db, bind(controlStatements(schema).pruneMessages, [p.maxAgeMs, p.batchSize]));
}

/** Deletes up to `batchSize` responses stored more than `maxAgeMs` ago; how many. */
export function pruneResponses(db: Queryable, schema: string, p: { maxAgeMs: number; batchSize: number }): Promise<number> {
  return changed(db, bind(controlStatements(schema).pruneResponses, [p.maxAgeMs, p.batchSize]));
}
