-- The rows of add_jobs()'s `specs` array, with their position (ord, from 1)
-- and each key's mode and throttle end resolved. One definition for every
-- statement of add_jobs() that reads the array; plain SQL, so the planner
-- inlines it. Called only from the security-definer enqueue functions.
-- Dropped first: CREATE OR REPLACE cannot change the columns a function
-- returns (group_key came with 0015, max_attempts_given with 0020); only add_jobs() calls it.
DROP FUNCTION IF EXISTS :SCHEMA.job_specs(jsonb);
CREATE FUNCTION :SCHEMA.job_specs(specs jsonb)
RETURNS TABLE (ord bigint, task text, payload jsonb, queue text, run_at timestamptz, priority integer, max_attempts integer,
               max_attempts_given boolean, timeout_ms integer, key text, key_mode text, key_window interval, key_until timestamptz,
               group_key text)
LANGUAGE sql STABLE
AS $fn$
  SELECT t.ord, t.task, coalesce(t.payload, '{}'), coalesce(t.queue, 'default'), coalesce(t.run_at, now()), coalesce(t.priority, 0),
         coalesce(t.max_attempts, 5), t.max_attempts IS NOT NULL, t.timeout_ms, t.key, CASE WHEN t.key IS NOT NULL THEN coalesce(t.key_mode, 'replace') END,
         t.key_window, now() + t.key_window, t.group_key
    FROM ROWS FROM (jsonb_to_recordset(specs)
           AS (task text, payload jsonb, queue text, run_at timestamptz, priority integer, max_attempts integer,
               timeout_ms integer, key text, key_mode text, key_window interval, group_key text))
         WITH ORDINALITY AS t(task, payload, queue, run_at, priority, max_attempts, timeout_ms, key, key_mode, key_window, group_key, ord)
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.job_specs(jsonb) FROM PUBLIC;
