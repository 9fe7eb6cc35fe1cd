-- Enqueue many jobs in one statement: `specs` is a JSON array of objects with
-- add_job()'s arguments as fields (task, payload, queue, run_at, priority,
-- max_attempts, timeout_ms, key, key_mode, key_window; missing ones take
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
-- job that still holds its key answers for the new one, taking its fields
-- in the replace modes; one whose hold has ended loses the key, and the
-- next round inserts. A key repeated in the array is settled one
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
  holding boolean[];
  bad record;
BEGIN
  -- One scan of the array decides: most batches have neither keys nor dependencies.
  IF NOT jsonb_path_exists(specs, '$[*] ? (@.key != null || @.depends_on != null || @.after != null)') THEN
    RETURN QUERY
      INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms)
      SELECT t.task, coalesce(t.payload, '{}'), coalesce(t.queue, 'default'), coalesce(t.run_at, now()), coalesce(t.priority, 0),
             coalesce(t.max_attempts, 5), t.max_attempts IS NOT NULL, t.timeout_ms
        FROM ROWS FROM (jsonb_to_recordset(specs)
               AS (task text, payload jsonb, queue text, run_at timestamptz, priority integer,
                   max_attempts integer, timeout_ms integer))
             WITH ORDINALITY AS t(task, payload, queue, run_at, priority, max_attempts, timeout_ms, ord)
       ORDER BY t.ord
      RETURNING id;
    RETURN;
  END IF;
  IF jsonb_path_exists(specs, '$[*] ? (@.depends_on != null || @.after != null)') THEN
    RETURN QUERY SELECT * FROM :SCHEMA.add_jobs_after(specs);
    RETURN;
  END IF;

  SELECT t.key_mode, t.key_window INTO bad FROM :SCHEMA.job_specs(specs) t
   WHERE t.key_mode NOT IN ('replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle')
      OR (t.key_mode = 'throttle') <> (t.key_window > interval '0' IS TRUE)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = CASE
      WHEN bad.key_mode NOT IN ('replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle')
      THEN format('unknown key_mode %L: use replace, preserve_run_at, dedupe, dedupe_running or throttle', bad.key_mode)
      ELSE 'key_window is the throttle''s window: give a positive one with key_mode => ''throttle'', and none with another mode' END;
  END IF;

  -- Jobs without a key in one INSERT; RETURNING gives their ids in the order inserted.
  WITH t AS (SELECT * FROM :SCHEMA.job_specs(specs) t WHERE t.key IS NULL),
       ins AS (INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms)
               SELECT t.task, t.payload, t.queue, t.run_at, t.priority, t.max_attempts, t.max_attempts_given, t.timeout_ms FROM t ORDER BY t.ord
               RETURNING id)
  SELECT ARRAY(SELECT t.ord FROM t ORDER BY t.ord), ARRAY(SELECT ins.id FROM ins) INTO found_ords, found_ids;
  ids := array_fill(NULL::bigint, ARRAY[jsonb_array_length(specs)]);
  FOR i IN 1 .. coalesce(cardinality(found_ords), 0) LOOP
    ids[found_ords[i]] := found_ids[i];
  END LOOP;
  todo := ARRAY(SELECT t.ord FROM :SCHEMA.job_specs(specs) t WHERE t.key IS NOT NULL);

  WHILE cardinality(todo) > 0 LOOP
    WITH firsts AS (SELECT DISTINCT ON (t.key) t.* FROM :SCHEMA.job_specs(specs) t JOIN unnest(todo) u(ord) ON u.ord = t.ord ORDER BY t.key, t.ord),
         ins AS (INSERT INTO :SCHEMA.jobs AS j (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, key, key_mode, key_until)
                 SELECT f.task, f.payload, f.queue, f.run_at, f.priority, f.max_attempts, f.max_attempts_given, f.timeout_ms, f.key, f.key_mode, f.key_until
                   FROM firsts f ORDER BY f.ord
                 ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
                 RETURNING j.id, j.key)
    SELECT array_agg(f.ord), array_agg(ins.id) INTO found_ords, found_ids FROM ins JOIN firsts f ON f.key = ins.key;
    FOR i IN 1 .. coalesce(cardinality(found_ords), 0) LOOP
      ids[found_ords[i]] := found_ids[i];
    END LOOP;
    todo := ARRAY(SELECT unnest(todo) EXCEPT SELECT unnest(found_ords));
    EXIT WHEN cardinality(todo) = 0;

    -- The jobs holding the other keys, locked (in id order, as any other
    -- batch locks them) so that no claim starts one before it is replaced:
    -- a job that started running keeps the payload it has.
    WITH firsts AS (SELECT DISTINCT ON (t.key) t.* FROM :SCHEMA.job_specs(specs) t JOIN unnest(todo) u(ord) ON u.ord = t.ord ORDER BY t.key, t.ord),
         held AS (
           SELECT f.ord, j.id,
                  CASE j.key_mode
                    WHEN 'dedupe_running' THEN j.state IN ('pending', 'running')
                    WHEN 'throttle' THEN j.key_until > now()
                    -- The pending modes: a job stops holding when it first starts; attempts only grows.
                    ELSE j.state = 'pending' AND j.attempts = 0
                  END AS holding
             FROM firsts f JOIN :SCHEMA.jobs j ON j.key = f.key
            ORDER BY j.id
              FOR UPDATE OF j)
    SELECT array_agg(h.ord), array_agg(h.id), array_agg(h.holding) INTO found_ords, found_ids, holding FROM held h;
    -- A key whose job was found neither by the INSERT nor here was let go meanwhile: the next round inserts.
    CONTINUE WHEN found_ords IS NULL;

    UPDATE :SCHEMA.jobs j SET key = NULL
      FROM unnest(found_ids, holding) AS h(id, holding)
     WHERE j.id = h.id AND NOT h.holding;

    -- The insert trigger sees only inserted rows: a replace checks the
    -- payload limit and announces the new run times itself.
    WITH r AS (SELECT t.*, h.id FROM unnest(found_ords, found_ids, holding) AS h(ord, id, holding)
                 JOIN :SCHEMA.job_specs(specs) t ON t.ord = h.ord
                WHERE h.holding AND t.key_mode IN ('replace', 'preserve_run_at')),
         big AS (SELECT r.task, octet_length(r.payload::text) AS bytes FROM r WHERE octet_length(r.payload::text) > 1024
                  ORDER BY 2 DESC LIMIT 1)
    SELECT big.task, big.bytes, s.max_payload_bytes INTO bad FROM big, :SCHEMA.settings s WHERE big.bytes > s.max_payload_bytes;
    IF FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
        MESSAGE = format('payload of task %s is %s bytes, over the %s-byte limit of this schema: store large data elsewhere and pass a reference',
                         to_json(bad.task), bad.bytes, bad.max_payload_bytes);
    END IF;
    WITH replaced AS (
           UPDATE :SCHEMA.jobs j
              SET task = t.task, payload = t.payload, queue = t.queue,
                  run_at = CASE WHEN t.key_mode = 'replace' THEN t.run_at ELSE j.run_at END,
                  priority = t.priority, max_attempts = t.max_attempts, max_attempts_given = t.max_attempts_given, timeout_ms = t.timeout_ms
             FROM unnest(found_ords, found_ids, holding) AS h(ord, id, holding)
             JOIN :SCHEMA.job_specs(specs) t ON t.ord = h.ord
            WHERE j.id = h.id AND h.holding AND t.key_mode IN ('replace', 'preserve_run_at')
           RETURNING j.id, j.run_at),
         channel AS (SELECT n.nspname || '_jobs' AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = ':SCHEMA.jobs'::regclass)
    SELECT :SCHEMA.notify_ids(channel.name, ARRAY(SELECT r.id FROM replaced r WHERE r.run_at <= now())),
           (SELECT :SCHEMA.notify(channel.name, 'at:' || floor(extract(epoch FROM min(r.run_at)) * 1000)::bigint)
              FROM replaced r WHERE r.run_at > now() HAVING count(*) > 0)
      INTO bad
      FROM channel;

    FOR i IN 1 .. cardinality(found_ords) LOOP
      IF holding[i] THEN
        ids[found_ords[i]] := found_ids[i];
      END IF;
    END LOOP;
    todo := ARRAY(SELECT unnest(todo) EXCEPT SELECT h.ord FROM unnest(found_ords, holding) AS h(ord, held) WHERE h.held);
  END LOOP;

  RETURN QUERY SELECT x FROM unnest(ids) x;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_jobs(jsonb) FROM PUBLIC;
