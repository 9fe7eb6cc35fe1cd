-- Whether a claim of held queue `q` would find a job it may start now: the
-- look has_due() takes for limited and paused queues, so that jobs waiting on
-- a limit count as not due (a supervisor would otherwise pull again and again
-- for jobs it may not start). Reads without locks: a hint, as has_due() is.
CREATE OR REPLACE FUNCTION :SCHEMA.limited_due(q text, task_names text[]) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
  cfg :SCHEMA.queues;
  ts timestamptz := clock_timestamp();
BEGIN
  SELECT * INTO cfg FROM :SCHEMA.queues x WHERE x.queue = q;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  IF cfg.paused
     OR cfg.concurrency <= (SELECT count(*) FROM :SCHEMA.jobs r WHERE r.state = 'running' AND r.limited AND r.queue = q)
     OR cfg.rate_limit <= (SELECT count(*) FROM unnest(cfg.starts) t WHERE t > ts - cfg.rate_interval_ms * interval '1 millisecond') THEN
    RETURN false;
  END IF;
  RETURN EXISTS (SELECT 1 FROM :SCHEMA.limited_candidates(q, cfg.group_concurrency, cfg.group_rate_limit, cfg.group_rate_interval_ms,
                                                          task_names, 1, ts));
END
$fn$;
