-- Enqueue from SQL: triggers, other languages, psql.
CREATE OR REPLACE FUNCTION :SCHEMA.add_job(
  task text,
  payload jsonb DEFAULT '{}',
  queue text DEFAULT 'default',
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT 0,
  max_attempts integer DEFAULT 5,
  timeout_ms integer DEFAULT NULL
) RETURNS bigint
LANGUAGE sql AS $fn$
  INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, timeout_ms)
  VALUES ($1, coalesce($2, '{}'), coalesce($3, 'default'), coalesce($4, now()), coalesce($5, 0),
          coalesce($6, 5), $7)
  RETURNING id
$fn$;
