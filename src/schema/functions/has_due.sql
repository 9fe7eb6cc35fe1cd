-- Is anything due for these tasks and queues: the sweep, the idle check and
-- the look after a short pull ask. It visits priorities as claim_next() does,
-- so jobs scheduled for later are never read.
--
-- Queues with limits or paused (held_queues()) are asked limited_due(),
-- which counts a job only if a claim may start it now; with `held_too` false they
-- are left out: a thread's look after a short pull asks so, because a held
-- queue's jobs are announced when they may start (a freed slot, an opened
-- rate window, a resume), and a short pull is a held queue's usual answer.
--
-- JIT is off for the reason claim_next() gives.
--
-- Rows other statements hold count as due here (no SKIP LOCKED): the caller
-- wants to know whether to pull again, not what it could take right now.
-- Dropped first: 0015 added `held`, and a call could otherwise match both.
DROP FUNCTION IF EXISTS :SCHEMA.has_due(text[], text[]);
CREATE OR REPLACE FUNCTION :SCHEMA.has_due(task_names text[], queue_names text[], held_too boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
DECLARE
  p integer;
  visited integer := 0;
  held text[] := :SCHEMA.held_queues();
  hq text;
BEGIN
  IF held IS NOT NULL THEN
    FOREACH hq IN ARRAY held LOOP
      EXIT WHEN NOT held_too;
      CONTINUE WHEN queue_names IS NOT NULL AND NOT hq = ANY(queue_names);
      IF :SCHEMA.limited_due(hq, task_names) THEN
        RETURN true;
      END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM :SCHEMA.pending_queues() pq WHERE pq <> ALL(held)) THEN
      RETURN false;
    END IF;
  END IF;
  SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL LOOP
    IF visited = 16 THEN
      RETURN EXISTS (SELECT 1 FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority <= p AND x.run_at <= now() AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names)) AND (held IS NULL OR x.queue <> ALL(held)));
    END IF;
    IF EXISTS (SELECT 1 FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now() AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names)) AND (held IS NULL OR x.queue <> ALL(held))) THEN
      RETURN true;
    END IF;
    visited := visited + 1;
    SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN false;
END
$fn$;
