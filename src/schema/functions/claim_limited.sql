-- The claim of one limited or paused queue (a row in queues with a limit),
-- called by claim_next() and claim_ids(). It locks the queue's row first, so
-- claims of the queue take turns across the fleet, and each counts what the
-- one before it committed (every statement of a PL/pgSQL function sees the
-- commits made before it started): no number of racing supervisors runs more
-- than the limits, or starts more than the rates allow. Claims of queues
-- without limits never come here.
--
-- A slot frees when its job's outcome is written or it is released; those
-- statements announce it (see `announce` in src/sql/jobs.ts), and a queue
-- held back by a rate announces when its window opens ('at:' hint), so no
-- one polls for a free slot.
--
-- Starts are stamped with the clock read under the lock, so that in claim
-- order they only grow and "at most N in any interval" is exact.
-- Dropped first, as the claims are: its columns are theirs.
DROP FUNCTION IF EXISTS :SCHEMA.claim_limited(text, integer, text[], text, integer, integer);
CREATE FUNCTION :SCHEMA.claim_limited(q text, n integer, task_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer, max_attempts_given boolean,
               timeout_ms integer, claim_token bigint, cancel_requested boolean, scheduled_for timestamptz)
LANGUAGE plpgsql
SET lock_timeout = '5s'
AS $fn$
DECLARE
  cfg :SCHEMA.queues;
  ts timestamptz;
  room integer := n;
  recent timestamptz[];
  picked bigint[];
  picked_groups text[];
  wake timestamptz;
BEGIN
  SELECT * INTO cfg FROM :SCHEMA.queues x WHERE x.queue = q FOR UPDATE;
  IF NOT FOUND OR cfg.paused OR n <= 0 THEN
    RETURN;
  END IF;
  ts := clock_timestamp();
  IF cfg.concurrency IS NOT NULL THEN
    room := least(room, cfg.concurrency - (SELECT count(*) FROM :SCHEMA.jobs r
                                            WHERE r.state = 'running' AND r.limited AND r.queue = q)::integer);
  END IF;
  IF cfg.rate_limit IS NOT NULL THEN
    recent := ARRAY(SELECT t FROM unnest(cfg.starts) t WHERE t > ts - cfg.rate_interval_ms * interval '1 millisecond' ORDER BY t);
    room := least(room, cfg.rate_limit - cardinality(recent));
  END IF;
  IF cfg.group_rate_limit IS NOT NULL THEN
    DELETE FROM :SCHEMA.group_starts s WHERE s.queue = q AND s.last_at <= ts - cfg.group_rate_interval_ms * interval '1 millisecond';
  END IF;

  IF room > 0 THEN
    -- Locked and checked again: a row another statement changed meanwhile
    -- (a cancel, a key's replace) is taken as it now is, or left.
    SELECT array_agg(x.id), array_agg(x.group_key) INTO picked, picked_groups
      FROM (SELECT x.id, x.group_key FROM :SCHEMA.jobs x
             WHERE x.id = ANY(ARRAY(SELECT c.job_id FROM :SCHEMA.limited_candidates(
                     q, cfg.group_concurrency, cfg.group_rate_limit, cfg.group_rate_interval_ms, task_names, room, ts) c))
               AND x.state = 'pending'
             ORDER BY x.id
               FOR UPDATE) x;
  END IF;

  IF picked IS NOT NULL THEN
    RETURN QUERY
    UPDATE :SCHEMA.jobs j
       SET state = 'running', attempts = j.attempts + 1, locked_by = owner, locked_thread = thread,
           claim_token = (SELECT nextval(':SCHEMA.claim_tokens')), lease_until = now() + lease_ms * interval '1 millisecond',
           started_at = ts, finished_at = NULL, limited = true
     WHERE j.id = ANY(picked)
    RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.max_attempts_given, j.timeout_ms, j.claim_token,
              j.cancel_requested_at IS NOT NULL, j.scheduled_for;
    IF cfg.group_rate_limit IS NOT NULL THEN
      INSERT INTO :SCHEMA.group_starts AS s (queue, group_key, starts, last_at)
      SELECT q, g.group_key, array_fill(ts, ARRAY[count(*)::integer]), ts
        FROM unnest(picked_groups) g(group_key) WHERE g.group_key IS NOT NULL GROUP BY g.group_key
      ON CONFLICT ON CONSTRAINT group_starts_pkey DO UPDATE
        SET starts = ARRAY(SELECT t FROM unnest(s.starts) t
                            WHERE t > ts - cfg.group_rate_interval_ms * interval '1 millisecond' ORDER BY t) || excluded.starts,
            last_at = ts;
    END IF;
  END IF;

  IF cfg.rate_limit IS NOT NULL THEN
    recent := recent || array_fill(ts, ARRAY[coalesce(cardinality(picked), 0)]);
    IF cardinality(recent) >= cfg.rate_limit THEN
      wake := recent[cardinality(recent) - cfg.rate_limit + 1] + cfg.rate_interval_ms * interval '1 millisecond';
    END IF;
  END IF;
  IF cfg.group_rate_limit IS NOT NULL THEN
    wake := least(wake, (SELECT min(s.starts[cardinality(s.starts) - cfg.group_rate_limit + 1])
                           FROM :SCHEMA.group_starts s
                          WHERE s.queue = q AND cardinality(s.starts) >= cfg.group_rate_limit
                            AND s.starts[cardinality(s.starts) - cfg.group_rate_limit + 1]
                                > ts - cfg.group_rate_interval_ms * interval '1 millisecond')
                        + cfg.group_rate_interval_ms * interval '1 millisecond');
  END IF;
  -- Each opening of a window is announced once: a supervisor woken early (its
  -- clock ahead) finds the same opening and leaves it to the sweep.
  IF wake IS NOT NULL AND wake IS DISTINCT FROM cfg.wake_at THEN
    PERFORM :SCHEMA.notify(ns.nspname || '_jobs', 'at:' || ceil(extract(epoch FROM wake) * 1000)::bigint)
       FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE c.oid = ':SCHEMA.jobs'::regclass;
  END IF;
  IF cfg.rate_limit IS NOT NULL OR wake IS DISTINCT FROM cfg.wake_at THEN
    UPDATE :SCHEMA.queues x
       SET starts = CASE WHEN cfg.rate_limit IS NULL THEN x.starts ELSE recent[greatest(1, cardinality(recent) - cfg.rate_limit + 1):] END,
           wake_at = coalesce(wake, x.wake_at)
     WHERE x.queue = q;
  END IF;
END
$fn$;
