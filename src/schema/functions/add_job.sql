-- Enqueue one job: the client's addJob(), and SQL callers (triggers, other
-- languages, psql). It runs with its owner's rights, so a role that may only
-- enqueue (grapevine grant --as enqueuer) needs no right on the jobs table
-- and can add nothing but a pending job: state, lease and claim are the
-- table's defaults. Security definer, so the search_path is fixed (nothing a
-- caller creates is found before PostgreSQL's own objects) and PUBLIC may
-- not call it: `grapevine grant` gives it to the roles that enqueue.
--
-- A job with a key (docs/keys.md) or dependencies (docs/workflows.md) goes
-- through add_jobs(), which settles them; any other job takes the plain
-- INSERT only.

-- The key arguments came with migration 0012, the dependencies with 0016.
-- Arguments are part of a function's identity, so the ones without them go:
-- a call could otherwise match both. (Roles granted them need `grapevine
-- grant` again.)
DROP FUNCTION IF EXISTS :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer);
DROP FUNCTION IF EXISTS :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval);
-- group_key came with migration 0015 (docs/limits.md), last so that
-- positional callers of the 0016 signature keep working: the same again.
DROP FUNCTION IF EXISTS :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval, text);
DROP FUNCTION IF EXISTS :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval, bigint[], text);

CREATE OR REPLACE FUNCTION :SCHEMA.add_job(
  task text,
  payload jsonb DEFAULT '{}',
  queue text DEFAULT 'default',
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT 0,
  max_attempts integer DEFAULT NULL,
  timeout_ms integer DEFAULT NULL,
  key text DEFAULT NULL,
  key_mode text DEFAULT 'replace',
  key_window interval DEFAULT NULL,
  depends_on bigint[] DEFAULT NULL,
  on_dependency_failure text DEFAULT NULL,
  group_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  -- Plain SQL, which costs a plain job less per call than PL/pgSQL: the
  -- other branch is cut off before it runs (a one-time filter) for a job
  -- with neither key nor dependencies, and the INSERT inserts nothing for one with either.
  WITH plain AS (
    INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, group_key)
    SELECT $1, coalesce($2, '{}'), coalesce($3, 'default'), coalesce($4, now()), coalesce($5, 0), coalesce($6, 5), $6 IS NOT NULL, $7, $13
     WHERE $8 IS NULL AND $11 IS NULL
    RETURNING id)
  SELECT id FROM plain
  UNION ALL
  SELECT keyed.id FROM :SCHEMA.add_jobs(jsonb_build_array(jsonb_build_object(
           'task', $1, 'payload', $2, 'queue', $3, 'run_at', $4, 'priority', $5, 'max_attempts', $6, 'timeout_ms', $7,
           'key', $8, 'key_mode', $9, 'key_window', $10, 'depends_on', $11, 'on_dependency_failure', $12,
           'group_key', $13))) AS keyed(id)
   WHERE $8 IS NOT NULL OR $11 IS NOT NULL
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval, bigint[], text, text) FROM PUBLIC;
