-- A control message cannot be changed once sent, by any role: only its
-- processed_at may be set, once. Without this, a role that marks messages
-- processed (a worker) could rewrite an operator's PING into an EVAL or a
-- STOP, send it to another supervisor, or make an old one run again.
-- Setting processed_at again (a response retried) keeps the first time.
--
-- The trigger is created here rather than in a migration because it needs
-- its function to exist, and functions are applied after the migrations.
CREATE OR REPLACE FUNCTION :SCHEMA.messages_updated() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.worker IS DISTINCT FROM OLD.worker OR NEW.command IS DISTINCT FROM OLD.command
     OR NEW.args IS DISTINCT FROM OLD.args OR NEW.sent_at IS DISTINCT FROM OLD.sent_at THEN
    RAISE EXCEPTION USING
      ERRCODE = 'check_violation',
      MESSAGE = format('control message %s to supervisor %s cannot be changed once sent: only processed_at may be set', OLD.id, OLD.worker),
      HINT = 'send a new message instead';
  END IF;
  IF OLD.processed_at IS NOT NULL THEN
    IF NEW.processed_at IS NULL THEN
      RAISE EXCEPTION USING
        ERRCODE = 'check_violation',
        MESSAGE = format('control message %s to supervisor %s was processed at %s and cannot be made unprocessed', OLD.id, OLD.worker, OLD.processed_at),
        HINT = 'send a new message instead';
    END IF;
    NEW.processed_at := OLD.processed_at;
  END IF;
  RETURN NEW;
END
$fn$;

CREATE OR REPLACE TRIGGER messages_updated BEFORE UPDATE ON :SCHEMA.messages
  FOR EACH ROW EXECUTE FUNCTION :SCHEMA.messages_updated();
