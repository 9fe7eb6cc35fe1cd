-- One statement-level trigger covers addJob, addJobs, add_job() and raw
-- INSERTs alike. NOTIFY is delivered at commit, so a rolled-back enqueue
-- never wakes anyone. Jobs due later send only their earliest due time, so
-- supervisors can set a timer instead of polling for them. The channel is
-- <schema>_jobs (channelsFor() in src/schema/channels.ts), named from the
-- table's schema so that this text is the same in every schema.
--
-- It also enforces the schema's payload limit (settings.max_payload_bytes)
-- on every path into the table. Once per statement, over the rows it already
-- reads, rather than a row trigger or a CHECK: no function call per row, and
-- the setting is read only when a payload is over 1 KiB, the least it can
-- be. It runs with its owner's rights, so that a role allowed to insert
-- needs no right on the settings.
--
-- The trigger is created here rather than in a migration because it needs
-- its function to exist, and functions are applied after the migrations.
CREATE OR REPLACE FUNCTION :SCHEMA.jobs_inserted() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  due bigint[];
  next_due timestamptz;
  largest integer;
  limit_bytes integer;
  offender text;
BEGIN
  SELECT array_agg(id) FILTER (WHERE state = 'pending' AND run_at <= now()),
         min(run_at) FILTER (WHERE state = 'pending' AND run_at > now()),
         max(octet_length(payload::text))
    INTO due, next_due, largest
    FROM inserted;
  IF largest > 1024 THEN
    SELECT s.max_payload_bytes INTO limit_bytes FROM :SCHEMA.settings s;
    IF largest > limit_bytes THEN
      SELECT i.task INTO offender FROM inserted i WHERE octet_length(i.payload::text) = largest LIMIT 1;
      RAISE EXCEPTION USING
        ERRCODE = 'program_limit_exceeded',
        MESSAGE = format('payload of task %s is %s bytes, over the %s-byte limit of schema %I: store large data elsewhere and pass a reference, '
                         'or raise the limit as the schema''s owner (UPDATE %I.settings SET max_payload_bytes = ...)',
                         to_json(offender), largest, limit_bytes, TG_TABLE_SCHEMA, TG_TABLE_SCHEMA);
    END IF;
  END IF;
  IF cardinality(due) = 1 THEN
    -- notify()'s guard inlined: one job per statement is add_job()'s and
    -- addJob()'s case, and a PL/pgSQL call per job cost 3 of its 45 us.
    IF pg_notification_queue_usage() < 0.5 THEN
      PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', due[1]::text);
    END IF;
  ELSIF due IS NOT NULL THEN
    PERFORM :SCHEMA.notify_ids(TG_TABLE_SCHEMA || '_jobs', due);
  END IF;
  IF next_due IS NOT NULL THEN
    PERFORM :SCHEMA.notify(TG_TABLE_SCHEMA || '_jobs', 'at:' || floor(extract(epoch FROM next_due) * 1000)::bigint);
  END IF;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER jobs_inserted AFTER INSERT ON :SCHEMA.jobs
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION :SCHEMA.jobs_inserted();
