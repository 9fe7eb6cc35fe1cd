-- One statement-level trigger covers addJob, addJobs, add_job() and raw
-- INSERTs alike. NOTIFY is delivered at commit, so a rolled-back enqueue
-- never wakes anyone. Jobs due later send only their earliest due time, so
-- supervisors can set a timer instead of polling for them. The channel is
-- <schema>_jobs (channelsFor() in src/schema/channels.ts), named from the
-- table's schema so that this text is the same in every schema.
--
-- The trigger is created here rather than in a migration because it needs
-- its function to exist, and functions are applied after the migrations.
CREATE OR REPLACE FUNCTION :SCHEMA.jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  due bigint[];
  next_due timestamptz;
BEGIN
  SELECT array_agg(id) FILTER (WHERE run_at <= now()), min(run_at) FILTER (WHERE run_at > now())
    INTO due, next_due
    FROM inserted WHERE state = 'pending';
  IF cardinality(due) = 1 THEN
    PERFORM :SCHEMA.notify(TG_TABLE_SCHEMA || '_jobs', due[1]::text);
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
