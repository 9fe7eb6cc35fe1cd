-- Enqueue many jobs in one statement: `specs` is a JSON array of objects with
-- add_job()'s arguments as fields (task, payload, queue, run_at, priority,
-- max_attempts, timeout_ms; missing ones take add_job()'s defaults). Returns
-- the ids in the array's order. The client's addJobs() sends its chunks here.
-- Owner's rights, fixed search_path and no PUBLIC, as for add_job().
CREATE OR REPLACE FUNCTION :SCHEMA.add_jobs(specs jsonb) RETURNS SETOF bigint
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, timeout_ms)
  SELECT t.task, coalesce(t.payload, '{}'), coalesce(t.queue, 'default'), coalesce(t.run_at, now()), coalesce(t.priority, 0),
         coalesce(t.max_attempts, 5), t.timeout_ms
    FROM ROWS FROM (jsonb_to_recordset(specs)
           AS (task text, payload jsonb, queue text, run_at timestamptz, priority integer,
               max_attempts integer, timeout_ms integer))
         WITH ORDINALITY AS t(task, payload, queue, run_at, priority, max_attempts, timeout_ms, ord)
   ORDER BY t.ord
  RETURNING id
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_jobs(jsonb) FROM PUBLIC;
