-- Enqueue one job: the client's addJob(), and SQL callers (triggers, other
-- languages, psql). It runs with its owner's rights, so a role that may only
-- enqueue (grapevine grant --as enqueuer) needs no right on the jobs table
-- and can add nothing but a pending job: state, lease and claim are the
-- table's defaults. Security definer, so the search_path is fixed (nothing a
-- caller creates is found before PostgreSQL's own objects) and PUBLIC may
-- not call it: `grapevine grant` gives it to the roles that enqueue.
CREATE OR REPLACE FUNCTION :SCHEMA.add_job(
  task text,
  payload jsonb DEFAULT '{}',
  queue text DEFAULT 'default',
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT 0,
  max_attempts integer DEFAULT 5,
  timeout_ms integer DEFAULT NULL
) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, timeout_ms)
  VALUES ($1, coalesce($2, '{}'), coalesce($3, 'default'), coalesce($4, now()), coalesce($5, 0),
          coalesce($6, 5), $7)
  RETURNING id
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer) FROM PUBLIC;
