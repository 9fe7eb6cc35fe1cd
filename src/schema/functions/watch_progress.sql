-- waitForJob() with onProgress: marks the job's progress as watched for the
-- next `watch_ms` and answers its state and progress. The mark is written only
-- when less than half of it is left, so a watcher polled on every progress
-- notification does not rewrite the row each time. A function for the same
-- reason as get_job(), and with the same rights. A mark lasts 5 minutes at
-- most: any enqueuer may call this, and a mark for weeks would make every
-- progress write of the job NOTIFY long after its watcher left.
CREATE OR REPLACE FUNCTION :SCHEMA.watch_progress(job_id bigint, watch_ms integer)
RETURNS TABLE (state text, progress jsonb)
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH m AS (SELECT least(greatest(watch_ms, 0), 300000) / 1000.0 AS secs),
  renewed AS (
    UPDATE :SCHEMA.jobs j
       SET progress_watched_until = now() + make_interval(secs => m.secs)
      FROM m
     WHERE j.id = job_id AND j.state IN ('pending', 'running')
       AND (j.progress_watched_until IS NULL
            OR j.progress_watched_until < now() + make_interval(secs => m.secs / 2))
    RETURNING j.state::text AS state, j.progress)
  SELECT r.state, r.progress FROM renewed r
  UNION ALL
  SELECT j.state::text, j.progress FROM :SCHEMA.jobs j
   WHERE j.id = job_id AND NOT EXISTS (SELECT 1 FROM renewed)
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.watch_progress(bigint, integer) FROM PUBLIC;
