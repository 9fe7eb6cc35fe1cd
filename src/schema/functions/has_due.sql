-- Is anything due for these tasks and queues: the sweep, the idle check and
-- the look after a short pull ask. It visits priorities as claim_next() does,
-- so jobs scheduled for later are never read.
--
-- Rows other statements hold count as due here (no SKIP LOCKED): the caller
-- wants to know whether to pull again, not what it could take right now.
CREATE OR REPLACE FUNCTION :SCHEMA.has_due(task_names text[], queue_names text[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off
AS $fn$
DECLARE
  p integer;
  visited integer := 0;
BEGIN
  SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL LOOP
    IF visited = 16 THEN
      RETURN EXISTS (SELECT 1 FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority <= p AND x.run_at <= now() AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names)));
    END IF;
    IF EXISTS (SELECT 1 FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now() AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names))) THEN
      RETURN true;
    END IF;
    visited := visited + 1;
    SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN false;
END
$fn$;
