-- Enqueue many jobs in one statement: `specs` is a JSON array of objects with
-- add_job()'s arguments as fields (task, payload, queue, run_at, priority,
-- max_attempts, timeout_ms, key, key_mode, key_window, group_key; missing ones take
-- add_job()'s defaults), and for dependencies depends_on, after and
-- on_dependency_failure, which add_jobs_after() settles. Returns the ids in
-- the array's order. The client's
-- addJobs() sends its chunks here, and add_job() its jobs with a key.
-- Owner's rights, fixed search_path and no PUBLIC, as for add_job().
--
-- Without keys, one INSERT. With keys (docs/keys.md), rounds until every
-- job is settled: the first unsettled job of each key is inserted unless
-- the unique index on key finds a job with it (the INSERT waits for an
-- uncommitted one's transaction, and inserts if that rolls back). A found
-- job that still holds its key answers for the new one: in the replace
-- modes the INSERT's ON CONFLICT DO UPDATE gives it the new fields, so a
-- duplicate costs that one statement; in the others an INSERT ... DO
-- NOTHING and one read find it. One whose hold has ended loses the key,
-- and the next round inserts. A key repeated in the array is settled one
-- occurrence per round, as separate calls in the array's order would be.
CREATE OR REPLACE FUNCTION :SCHEMA.add_jobs(specs jsonb) RETURNS SETOF bigint
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  ids bigint[];
  todo bigint[];
  found_ords bigint[];
  found_ids bigint[];
  replacing bigint[];
  same_ords bigint[];
  same_ids bigint[];
  keeping bigint[];
  settled bigint[];
  unsettled bigint[];
  lost bigint[];
  due bigint[];
  next_due timestamptz;
  channel text;
  unkeyed boolean;
  bad_ord bigint;
  largest integer;
  limit_bytes integer;
  bad record;
BEGIN
  -- One scan of the array decides: most batches have neither keys nor dependencies.
  IF NOT jsonb_path_exists(specs, '$[*] ? (@.key != null || @.depends_on != null || @.after != null)') THEN
    RETURN QUERY
      INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, group_key)
      SELECT t.task, coalesce(t.payload, '{}'), coalesce(t.queue, 'default'), coalesce(t.run_at, now()), coalesce(t.priority, 0),
             coalesce(t.max_attempts, 5), t.max_attempts IS NOT NULL, t.timeout_ms, t.group_key
        FROM ROWS FROM (jsonb_to_recordset(specs)
               AS (task text, payload jsonb, queue text, run_at timestamptz, priority integer,
                   max_attempts integer, timeout_ms integer, group_key text))
             WITH ORDINALITY AS t(task, payload, queue, run_at, priority, max_attempts, timeout_ms, group_key, ord)
       ORDER BY t.ord
      RETURNING id;
    RETURN;
  END IF;
  IF jsonb_path_exists(specs, '$[*] ? (@.depends_on != null || @.after != null)') THEN
    RETURN QUERY SELECT * FROM :SCHEMA.add_jobs_after(specs);
    RETURN;
  END IF;

  -- One pass over the array: the keyed jobs, whether any has no key, the
  -- first bad key mode, and the largest payload a replace could write (the
  -- insert trigger checks only inserted rows, so replacements are checked
  -- here, up front).
  SELECT array_agg(t.ord ORDER BY t.ord) FILTER (WHERE t.key IS NOT NULL),
         bool_or(t.key IS NULL),
         (array_agg(t.ord ORDER BY t.ord) FILTER (
            WHERE t.key_mode NOT IN ('replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle')
               OR (t.key_mode = 'throttle') <> (t.key_window > interval '0' IS TRUE)))[1],
         max(octet_length(t.payload::text)) FILTER (WHERE t.key_mode IN ('replace', 'preserve_run_at'))
    INTO todo, unkeyed, bad_ord, largest
    FROM :SCHEMA.job_specs(specs) t;
  IF bad_ord IS NOT NULL THEN
    SELECT t.key_mode, t.key_window INTO bad FROM :SCHEMA.job_specs(specs) t WHERE t.ord = bad_ord;
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = CASE
      WHEN bad.key_mode NOT IN ('replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle')
      THEN format('unknown key_mode %L: use replace, preserve_run_at, dedupe, dedupe_running or throttle', bad.key_mode)
      ELSE 'key_window is the throttle''s window: give a positive one with key_mode => ''throttle'', and none with another mode' END;
  END IF;
  IF largest > 1024 THEN
    SELECT s.max_payload_bytes INTO limit_bytes FROM :SCHEMA.settings s;
    IF largest > limit_bytes THEN
      SELECT t.task INTO bad FROM :SCHEMA.job_specs(specs) t
       WHERE t.key_mode IN ('replace', 'preserve_run_at') AND octet_length(t.payload::text) = largest LIMIT 1;
      RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
        MESSAGE = format('payload of task %s is %s bytes, over the %s-byte limit of this schema: store large data elsewhere and pass a reference',
                         to_json(bad.task), largest, limit_bytes);
    END IF;
  END IF;

  ids := array_fill(NULL::bigint, ARRAY[jsonb_array_length(specs)]);
  IF unkeyed THEN
    -- Jobs without a key in one INSERT; RETURNING gives their ids in the order inserted.
    WITH t AS (SELECT * FROM :SCHEMA.job_specs(specs) t WHERE t.key IS NULL),
         ins AS (INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, group_key)
                 SELECT t.task, t.payload, t.queue, t.run_at, t.priority, t.max_attempts, t.max_attempts_given, t.timeout_ms, t.group_key
                   FROM t ORDER BY t.ord
                 RETURNING id)
    SELECT ARRAY(SELECT t.ord FROM t ORDER BY t.ord), ARRAY(SELECT ins.id FROM ins) INTO found_ords, found_ids;
    FOR i IN 1 .. coalesce(cardinality(found_ords), 0) LOOP
      ids[found_ords[i]] := found_ids[i];
    END LOOP;
  END IF;

  -- Each round settles the first unsettled occurrence of each key. A job
  -- holds its key while its own mode says so (key_held()).
  WHILE cardinality(todo) > 0 LOOP
    settled := '{}';

    -- Replace modes: one statement per duplicate. The INSERT adds the keys no
    -- job has; a conflict locks the job with the key (so no claim starts it
    -- halfway) and replaces its fields if it holds the key; one that does not
    -- hold is locked and left as it is, and not returned; so is a holder the
    -- replace would not change, so that the same job enqueued again writes
    -- no new row version (the read below answers for it). A job already due
    -- keeps its run time when the new one is due too, and with it its place
    -- among the due jobs: a key enqueued again and again under a backlog would
    -- otherwise go to the back each time and might never run. xmax tells a
    -- replaced row (its new version carries the conflict's lock) from an
    -- inserted one, which the insert trigger announces itself. The round's
    -- first occurrences are read (and split by mode) in the same statement.
    -- A replacing enqueue that the snapshot shows would change nothing of a
    -- holder (the test repeats the conflict's) is answered by that read
    -- (`same`), without the conflict's row lock: a burst of duplicates then
    -- costs an index lookup each. The holder may start meanwhile, as it
    -- could right after the answer; the conflict still catches a holder the
    -- snapshot does not show.
    WITH f0 AS (SELECT DISTINCT ON (t.key) t.* FROM :SCHEMA.job_specs(specs) t JOIN unnest(todo) u(ord) ON u.ord = t.ord
                 ORDER BY t.key, t.ord),
         same AS (
           SELECT f0.ord, j.id FROM f0 JOIN :SCHEMA.jobs j ON j.key = f0.key
            WHERE f0.key_mode IN ('replace', 'preserve_run_at')
              AND :SCHEMA.key_held(j.key_mode, j.state, j.attempts, j.key_until)
              AND (j.task, j.payload, j.queue, j.priority, j.max_attempts, j.max_attempts_given, j.timeout_ms, j.group_key,
                   f0.key_mode = 'replace' AND (f0.run_at > now() OR j.run_at > now()) AND f0.run_at <> j.run_at)
                  IS NOT DISTINCT FROM
                  (f0.task, f0.payload, f0.queue, f0.priority, f0.max_attempts, f0.max_attempts_given, f0.timeout_ms, f0.group_key, false)),
         f AS (SELECT f0.* FROM f0 WHERE NOT EXISTS (SELECT 1 FROM same WHERE same.ord = f0.ord)),
         up AS (
             INSERT INTO :SCHEMA.jobs AS j (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, key, key_mode, key_until,
                                            group_key)
             SELECT f.task, f.payload, f.queue, f.run_at, f.priority, f.max_attempts, f.max_attempts_given, f.timeout_ms, f.key, f.key_mode, f.key_until,
                    f.group_key
               FROM f WHERE f.key_mode IN ('replace', 'preserve_run_at') ORDER BY f.ord
             ON CONFLICT (key) WHERE key IS NOT NULL DO UPDATE
               SET task = excluded.task, payload = excluded.payload, queue = excluded.queue,
                   run_at = CASE WHEN excluded.key_mode = 'replace' AND (excluded.run_at > now() OR j.run_at > now()) THEN excluded.run_at ELSE j.run_at END,
                   priority = excluded.priority, max_attempts = excluded.max_attempts, max_attempts_given = excluded.max_attempts_given,
                   timeout_ms = excluded.timeout_ms, group_key = excluded.group_key
             WHERE :SCHEMA.key_held(j.key_mode, j.state, j.attempts, j.key_until)
               AND (j.task, j.payload, j.queue, j.priority, j.max_attempts, j.max_attempts_given, j.timeout_ms, j.group_key,
                    excluded.key_mode = 'replace' AND (excluded.run_at > now() OR j.run_at > now()) AND excluded.run_at <> j.run_at)
                   IS DISTINCT FROM
                   (excluded.task, excluded.payload, excluded.queue, excluded.priority, excluded.max_attempts, excluded.max_attempts_given,
                    excluded.timeout_ms, excluded.group_key, false)
             RETURNING j.id, j.key, j.run_at, j.xmax <> 0 AS replaced),
         done AS (
           SELECT array_agg(f.ord) AS ords, array_agg(up.id) AS ids,
                  array_agg(up.id) FILTER (WHERE up.replaced AND up.run_at <= now()) AS due,
                  min(up.run_at) FILTER (WHERE up.replaced AND up.run_at > now()) AS next_due
             FROM up JOIN f ON f.key = up.key)
    SELECT ARRAY(SELECT f.ord FROM f WHERE f.key_mode IN ('replace', 'preserve_run_at') UNION ALL SELECT same.ord FROM same),
           ARRAY(SELECT f.ord FROM f WHERE f.key_mode NOT IN ('replace', 'preserve_run_at')),
           done.ords, done.ids, done.due, done.next_due,
           ARRAY(SELECT same.ord FROM same), ARRAY(SELECT same.id FROM same)
      INTO replacing, keeping, found_ords, found_ids, due, next_due, same_ords, same_ids
      FROM done;
    found_ords := coalesce(found_ords, '{}') || same_ords;
    found_ids := coalesce(found_ids, '{}') || same_ids;
    FOR i IN 1 .. coalesce(cardinality(found_ords), 0) LOOP
      ids[found_ords[i]] := found_ids[i];
    END LOOP;
    settled := coalesce(found_ords, '{}');
    IF due IS NOT NULL OR next_due IS NOT NULL THEN
      SELECT n.nspname || '_jobs' INTO channel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.oid = ':SCHEMA.jobs'::regclass;
      PERFORM :SCHEMA.notify_ids(channel, due);
      IF next_due IS NOT NULL THEN
        PERFORM :SCHEMA.notify(channel, 'at:' || floor(extract(epoch FROM next_due) * 1000)::bigint);
      END IF;
    END IF;

    -- The other modes change nothing they find: the INSERT adds the keys no
    -- job has, and the read below answers for the rest.
    IF cardinality(keeping) > 0 THEN
      WITH f AS (SELECT t.* FROM :SCHEMA.job_specs(specs) t JOIN unnest(keeping) u(ord) ON u.ord = t.ord),
           ins AS (
             INSERT INTO :SCHEMA.jobs AS j (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, key, key_mode, key_until,
                                            group_key)
             SELECT f.task, f.payload, f.queue, f.run_at, f.priority, f.max_attempts, f.max_attempts_given, f.timeout_ms, f.key, f.key_mode, f.key_until,
                    f.group_key
               FROM f ORDER BY f.ord
             ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
             RETURNING j.id, j.key)
      SELECT array_agg(f.ord), array_agg(ins.id) INTO found_ords, found_ids FROM ins JOIN f ON f.key = ins.key;
      FOR i IN 1 .. coalesce(cardinality(found_ords), 0) LOOP
        ids[found_ords[i]] := found_ids[i];
      END LOOP;
      settled := settled || coalesce(found_ords, '{}');
    END IF;

    -- This round's jobs still unsettled met a job with their key: one that
    -- holds it answers for a keeping enqueue; one that does not (a replacing
    -- enqueue found only such, locked) loses the key, re-checked as it is
    -- cleared, and the next round inserts. A key whose job is gone
    -- meanwhile is also inserted by the next round.
    -- (Each job is settled at most once a round, so equal counts mean all of them.)
    IF cardinality(settled) = cardinality(replacing) + cardinality(keeping) THEN
      unsettled := '{}';
    ELSE
      unsettled := ARRAY(SELECT unnest(replacing || keeping) EXCEPT SELECT unnest(settled));
    END IF;
    IF cardinality(unsettled) > 0 THEN
      SELECT array_agg(t.ord) FILTER (WHERE h.holding), array_agg(h.id) FILTER (WHERE h.holding),
             array_agg(h.id) FILTER (WHERE NOT h.holding)
        INTO found_ords, found_ids, lost
        FROM :SCHEMA.job_specs(specs) t
        JOIN unnest(unsettled) u(ord) ON u.ord = t.ord
        JOIN LATERAL (
          SELECT j.id, :SCHEMA.key_held(j.key_mode, j.state, j.attempts, j.key_until) AS holding
            FROM :SCHEMA.jobs j WHERE j.key = t.key) h ON true;
      FOR i IN 1 .. coalesce(cardinality(found_ords), 0) LOOP
        ids[found_ords[i]] := found_ids[i];
      END LOOP;
      settled := settled || coalesce(found_ords, '{}');
      IF lost IS NOT NULL THEN
        UPDATE :SCHEMA.jobs j SET key = NULL
         WHERE j.id = ANY(lost)
           AND NOT :SCHEMA.key_held(j.key_mode, j.state, j.attempts, j.key_until);
      END IF;
    END IF;
    IF cardinality(settled) = cardinality(todo) THEN
      todo := '{}';
    ELSE
      todo := ARRAY(SELECT unnest(todo) EXCEPT SELECT unnest(settled));
    END IF;
  END LOOP;

  RETURN QUERY SELECT x FROM unnest(ids) x;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_jobs(jsonb) FROM PUBLIC;
