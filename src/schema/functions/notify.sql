-- Every notification goes through here (or notify_ids(), which checks the
-- same once per call). PostgreSQL keeps notifications in one queue per server
-- until every listening session has read them, and a session left idle in a
-- transaction holds that queue; once it is full, every transaction that sent
-- a NOTIFY fails at COMMIT. The table is the truth and supervisors sweep it,
-- so a notification is only a shortcut: drop it once the queue is half full
-- (NOTIFY_DROP_USAGE in src/notification.ts says the same to the code that reacts).
CREATE OR REPLACE FUNCTION :SCHEMA.notify(channel text, payload text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF pg_notification_queue_usage() < 0.5 THEN
    PERFORM pg_notify(channel, payload);
  END IF;
END
$fn$;
