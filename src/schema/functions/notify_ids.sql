-- notify_ids_always() behind notify()'s check. Most calls (every outcome
-- write) pass no ids, and those must not ask: pg_notification_queue_usage()
-- first moves the queue's tail forward, under two server-wide exclusive locks.
CREATE OR REPLACE FUNCTION :SCHEMA.notify_ids(channel text, ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF cardinality(ids) > 0 THEN
    IF pg_notification_queue_usage() < 0.5 THEN
      PERFORM :SCHEMA.notify_ids_always(channel, ids);
    END IF;
  END IF;
END
$fn$;
