-- Enqueue one job: the client's addJob(), and SQL callers (triggers, other
-- languages, psql). It runs with its owner's rights, so a role that may only
-- enqueue (grapevine grant --as enqueuer) needs no right on the jobs table
-- and can add nothing but a pending job: state, lease and claim are the
-- table's defaults. Security definer, so the search_path is fixed (nothing a
-- caller creates is found before PostgreSQL's own objects) and PUBLIC may
-- not call it: `grapevine grant` gives it to the roles that enqueue.
--
-- With a key (docs/keys.md), the job that holds the key stands for this one:
-- its id is returned, and in the replace modes it takes this job's fields.
-- The unique index on key decides between concurrent enqueuers (the INSERT
-- waits for an uncommitted holder's transaction, and inserts if that rolls
-- back); a holder whose hold has ended loses the key here, to the enqueue
-- that finds it. A job without a key takes the first branch only.
CREATE OR REPLACE FUNCTION :SCHEMA.add_job(
  task text,
  payload jsonb DEFAULT '{}',
  queue text DEFAULT 'default',
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT 0,
  max_attempts integer DEFAULT 5,
  timeout_ms integer DEFAULT NULL,
  key text DEFAULT NULL,
  key_mode text DEFAULT 'replace',
  key_window interval DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
-- The arguments are named as the columns (callers use the names); in the
-- statements below a bare name is the column.
#variable_conflict use_column
DECLARE
  mode text := coalesce(key_mode, 'replace');
  job_id bigint;
  holding boolean;
  limit_bytes integer;
  due timestamptz;
BEGIN
  IF key IS NULL THEN
    INSERT INTO :SCHEMA.jobs AS j (task, payload, queue, run_at, priority, max_attempts, timeout_ms)
    VALUES ($1, coalesce($2, '{}'), coalesce($3, 'default'), coalesce($4, now()), coalesce($5, 0), coalesce($6, 5), $7)
    RETURNING j.id INTO job_id;
    RETURN job_id;
  END IF;
  IF mode NOT IN ('replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle') THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
      MESSAGE = format('unknown key_mode %L: use replace, preserve_run_at, dedupe, dedupe_running or throttle', mode);
  END IF;
  IF (mode = 'throttle') <> (key_window > interval '0' IS TRUE) THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
      MESSAGE = 'key_window is the throttle''s window: give a positive one with key_mode => ''throttle'', and none with another mode';
  END IF;
  LOOP
    INSERT INTO :SCHEMA.jobs AS j (task, payload, queue, run_at, priority, max_attempts, timeout_ms, key, key_mode, key_until)
    VALUES ($1, coalesce($2, '{}'), coalesce($3, 'default'), coalesce($4, now()), coalesce($5, 0), coalesce($6, 5), $7,
            $8, mode, now() + key_window)
    ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
    RETURNING j.id INTO job_id;
    IF job_id IS NOT NULL THEN
      RETURN job_id;
    END IF;
    -- Locked, so that no claim takes the holder between this check and the
    -- replace below: a job that started running keeps the payload it has.
    SELECT j.id,
           CASE j.key_mode
             WHEN 'dedupe_running' THEN j.state IN ('pending', 'running')
             WHEN 'throttle' THEN j.key_until > now()
             -- A job stops holding when it first starts: attempts only grows.
             ELSE j.state = 'pending' AND j.attempts = 0
           END
      INTO job_id, holding
      FROM :SCHEMA.jobs j
     WHERE j.key = $8
       FOR UPDATE;
    CONTINUE WHEN NOT FOUND;  -- the holder let go of the key meanwhile: insert again
    IF NOT holding THEN
      UPDATE :SCHEMA.jobs j SET key = NULL WHERE j.id = job_id;
      CONTINUE;
    END IF;
    IF mode IN ('replace', 'preserve_run_at') THEN
      -- The insert trigger sees only inserted rows: check the payload limit
      -- and announce the new run time here.
      IF octet_length($2::text) > 1024 THEN
        SELECT s.max_payload_bytes INTO limit_bytes FROM :SCHEMA.settings s;
        IF octet_length($2::text) > limit_bytes THEN
          RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
            MESSAGE = format('payload of task %s is %s bytes, over the %s-byte limit of this schema: store large data elsewhere and pass a reference',
                             to_json($1), octet_length($2::text), limit_bytes);
        END IF;
      END IF;
      UPDATE :SCHEMA.jobs j
         SET task = $1, payload = coalesce($2, '{}'), queue = coalesce($3, 'default'),
             run_at = CASE WHEN mode = 'replace' THEN coalesce($4, now()) ELSE j.run_at END,
             priority = coalesce($5, 0), max_attempts = coalesce($6, 5), timeout_ms = $7
       WHERE j.id = job_id
      RETURNING j.run_at INTO due;
      PERFORM :SCHEMA.notify(n.nspname || '_jobs', CASE WHEN due <= now() THEN job_id::text
                                                   ELSE 'at:' || floor(extract(epoch FROM due) * 1000)::bigint END)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = ':SCHEMA.jobs'::regclass;
    END IF;
    RETURN job_id;
  END LOOP;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval) FROM PUBLIC;
