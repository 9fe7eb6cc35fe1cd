import { channelsFor, quoteIdent } from '../channels.ts';

export const version = 8;
export const name = 'best_effort_notify';

/**
 * Notifications no longer make an enqueue fail.
 *
 * PostgreSQL keeps notifications in one queue per server until every session
 * that ran LISTEN has read them, and a session reads them only between
 * transactions. A listener left idle in a transaction (a crashed tool, a
 * debugging session) therefore holds the queue, and when it is full every
 * transaction that sent a NOTIFY fails at COMMIT: every enqueue (the insert
 * trigger notifies), every release of a crashed thread's job, every outcome
 * someone waits for. The table is the truth and supervisors sweep it, so a
 * notification is only a shortcut; notify() drops it once the queue is half
 * full (NOTIFY_DROP_USAGE in src/notification.ts says the same to the code
 * that reacts), and the supervisors' heartbeat warns (supervisor/runtime.ts).
 *
 * notify_ids() checks the same, once per call (a call sends a few payloads of
 * ids); the insert trigger is redefined to use notify(), and the statements in
 * src/sql/ call it instead of pg_notify().
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  return `
CREATE FUNCTION ${s}.notify(channel text, payload text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF pg_notification_queue_usage() < 0.5 THEN
    PERFORM pg_notify(channel, payload);
  END IF;
END
$fn$;

-- notify_ids() keeps its body, under another name, behind the same check.
-- Most calls (every outcome write) pass no ids, and those must not ask:
-- pg_notification_queue_usage() first moves the queue's tail forward, under
-- two server-wide exclusive locks.
ALTER FUNCTION ${s}.notify_ids(text, bigint[]) RENAME TO notify_ids_always;

CREATE FUNCTION ${s}.notify_ids(channel text, ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF cardinality(ids) > 0 THEN
    IF pg_notification_queue_usage() < 0.5 THEN
      PERFORM ${s}.notify_ids_always(channel, ids);
    END IF;
  END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION ${s}.jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  due bigint[];
  next_due timestamptz;
BEGIN
  SELECT array_agg(id) FILTER (WHERE run_at <= now()), min(run_at) FILTER (WHERE run_at > now())
    INTO due, next_due
    FROM inserted WHERE state = 'pending';
  IF cardinality(due) = 1 THEN
    PERFORM ${s}.notify('${ch.jobs}', due[1]::text);
  ELSIF due IS NOT NULL THEN
    PERFORM ${s}.notify_ids('${ch.jobs}', due);
  END IF;
  IF next_due IS NOT NULL THEN
    PERFORM ${s}.notify('${ch.jobs}', 'at:' || floor(extract(epoch FROM next_due) * 1000)::bigint);
  END IF;
  RETURN NULL;
END
$fn$;
`;
}
