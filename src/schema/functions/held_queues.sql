-- The queues whose claims go through claim_limited(): those with a limit or
-- paused. Every other queue is claimed as before, in one statement without
-- locks beyond its rows'. Sorted, so that claims lock queue rows in one order.
CREATE OR REPLACE FUNCTION :SCHEMA.held_queues() RETURNS text[]
LANGUAGE sql STABLE
AS $fn$
  SELECT array_agg(x.queue ORDER BY x.queue) FROM :SCHEMA.queues x
   WHERE x.paused OR x.concurrency IS NOT NULL OR x.group_concurrency IS NOT NULL
      OR x.rate_limit IS NOT NULL OR x.group_rate_limit IS NOT NULL
$fn$;
