-- Enqueue many jobs in one statement: `specs` is a JSON array of objects with
-- add_job()'s arguments as fields (task, payload, queue, run_at, priority,
-- max_attempts, timeout_ms, key, key_mode, key_window; missing ones take
-- add_job()'s defaults). Returns the ids in the array's order. The client's
-- addJobs() sends its chunks here. Owner's rights, fixed search_path and no
-- PUBLIC, as for add_job().
--
-- Jobs without keys go in with one INSERT. When any job has a key, each goes
-- through add_job() in the array's order, so that a key repeated within the
-- array is resolved as it would be by separate calls.
CREATE OR REPLACE FUNCTION :SCHEMA.add_jobs(specs jsonb) RETURNS SETOF bigint
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  spec record;
BEGIN
  IF NOT jsonb_path_exists(specs, '$[*].key ? (@ != null)') THEN
    RETURN QUERY
      INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, timeout_ms)
      SELECT t.task, coalesce(t.payload, '{}'), coalesce(t.queue, 'default'), coalesce(t.run_at, now()), coalesce(t.priority, 0),
             coalesce(t.max_attempts, 5), t.timeout_ms
        FROM ROWS FROM (jsonb_to_recordset(specs)
               AS (task text, payload jsonb, queue text, run_at timestamptz, priority integer,
                   max_attempts integer, timeout_ms integer))
             WITH ORDINALITY AS t(task, payload, queue, run_at, priority, max_attempts, timeout_ms, ord)
       ORDER BY t.ord
      RETURNING id;
    RETURN;
  END IF;
  FOR spec IN
    SELECT * FROM jsonb_to_recordset(specs)
      AS (task text, payload jsonb, queue text, run_at timestamptz, priority integer, max_attempts integer,
          timeout_ms integer, key text, key_mode text, key_window interval)
  LOOP
    RETURN NEXT :SCHEMA.add_job(spec.task, spec.payload, spec.queue, spec.run_at, spec.priority, spec.max_attempts,
                                spec.timeout_ms, spec.key, spec.key_mode, spec.key_window);
  END LOOP;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_jobs(jsonb) FROM PUBLIC;
