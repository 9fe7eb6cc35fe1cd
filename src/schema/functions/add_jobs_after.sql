-- add_jobs() for a batch in which some job has dependencies (docs/workflows.md):
-- `depends_on`, ids of jobs already in the table, and `after`, positions (from
-- 1) of earlier jobs in the same array, each with `on_dependency_failure`
-- ('fail', the default, 'run' or 'ignore'). Returns the ids in the array's
-- order. Refuses, with SQLSTATE GV001, a dependency on a job that does not
-- exist and a position that does not name an earlier job: a job can only
-- follow jobs listed before it, so no batch can hold a cycle.
--
-- The existing dependencies are locked first, in id order, and their state is
-- read under the lock, so a dependency cannot finish unseen between the read
-- and this commit (jobs_finished.sql says why that is enough). A job with
-- dependencies is inserted 'waiting', counting them all; those already
-- finished are then resolved as their outcome write would have, so a
-- dependency that failed before the enqueue and one that fails after it
-- have the same effect.
CREATE OR REPLACE FUNCTION :SCHEMA.add_jobs_after(specs jsonb) RETURNS SETOF bigint
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  wanted bigint[];
  found_ids bigint[];
  found_states text[];
  ids bigint[];
  bad record;
BEGIN
  -- SQL callers' add_job() sends a missing list as JSON null.
  specs := (SELECT jsonb_agg(CASE WHEN s.spec->'depends_on' = 'null' THEN s.spec - 'depends_on' ELSE s.spec END ORDER BY s.ord)
              FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord));

  SELECT s.ord, s.spec->>'on_dependency_failure' AS policy INTO bad
    FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord)
   WHERE s.spec->>'on_dependency_failure' NOT IN ('fail', 'run', 'ignore')
      OR s.spec->>'key' IS NOT NULL
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'GV001', MESSAGE = CASE
      WHEN bad.policy NOT IN ('fail', 'run', 'ignore')
      THEN format('unknown on_dependency_failure %L of job %s of the batch: use fail, run or ignore', bad.policy, bad.ord)
      ELSE format('job %s of the batch has a key, and keys cannot be combined with dependencies in one batch: '
                  'enqueue the jobs with keys on their own', bad.ord) END;
  END IF;

  -- Positions must name an earlier job of the array.
  SELECT s.ord, a.value AS ref INTO bad
    FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord),
         jsonb_array_elements(coalesce(s.spec->'after', '[]')) AS a(value)
   WHERE jsonb_typeof(a.value) <> 'number' OR a.value::text !~ '^[0-9]+$' OR a.value::text::bigint NOT BETWEEN 1 AND s.ord - 1
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'GV001', MESSAGE = format(
      'job %s of the batch comes after position %s, which is not an earlier job of the same batch: '
      'list every job after the jobs it depends on (so a batch cannot hold a cycle)', bad.ord, bad.ref);
  END IF;

  SELECT s.ord, d.value AS ref INTO bad
    FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord),
         jsonb_array_elements(coalesce(s.spec->'depends_on', '[]')) AS d(value)
   WHERE d.value::text !~ '^"?[0-9]{1,18}"?$'
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'GV001', MESSAGE = format(
      'job %s of the batch depends on %s, which is not a job id', bad.ord, bad.ref);
  END IF;

  wanted := ARRAY(SELECT DISTINCT (d.value #>> '{}')::bigint
                    FROM jsonb_array_elements(specs) s(spec), jsonb_array_elements(coalesce(s.spec->'depends_on', '[]')) d);

  -- Lock every existing dependency, in id order as every batch locks jobs,
  -- and read its state under the lock: the latest committed one.
  SELECT array_agg(l.id ORDER BY l.id), array_agg(l.state ORDER BY l.id) INTO found_ids, found_states
    FROM (SELECT j.id, j.state FROM :SCHEMA.jobs j WHERE j.id = ANY(wanted) ORDER BY j.id FOR NO KEY UPDATE) l;
  IF coalesce(cardinality(found_ids), 0) < cardinality(wanted) THEN
    SELECT s.ord, w.id INTO bad
      FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord),
           jsonb_array_elements(coalesce(s.spec->'depends_on', '[]')) AS d(value),
           LATERAL (SELECT (d.value #>> '{}')::bigint AS id) w
     WHERE NOT w.id = ANY(coalesce(found_ids, '{}'))
     ORDER BY s.ord LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = 'GV001', MESSAGE = format(
      '%s depends on job %s, which does not exist (a wrong id, or a finished job already pruned or deleted)',
      CASE WHEN jsonb_array_length(specs) = 1 THEN 'the new job' ELSE format('job %s of the batch', bad.ord) END, bad.id);
  END IF;
  UPDATE :SCHEMA.jobs j SET has_dependents = true WHERE j.id = ANY(found_ids) AND NOT j.has_dependents;

  WITH t AS (SELECT * FROM :SCHEMA.job_specs(specs)),
       deps AS (
         SELECT s.ord,
                (SELECT count(DISTINCT d #>> '{}') FROM jsonb_array_elements(coalesce(s.spec->'depends_on', '[]')) d)
                + (SELECT count(DISTINCT a) FROM jsonb_array_elements(coalesce(s.spec->'after', '[]')) a) AS waiting_for
           FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord)),
       referenced AS (
         SELECT DISTINCT a.value::text::bigint AS ord
           FROM jsonb_array_elements(specs) s(spec), jsonb_array_elements(coalesce(s.spec->'after', '[]')) a(value)),
       ins AS (
         INSERT INTO :SCHEMA.jobs (task, payload, queue, run_at, priority, max_attempts, max_attempts_given, timeout_ms, group_key, state,
                                   waiting_for, has_dependents)
         SELECT t.task, t.payload, t.queue, t.run_at, t.priority, t.max_attempts, t.max_attempts_given, t.timeout_ms, t.group_key,
                CASE WHEN deps.waiting_for > 0 THEN 'waiting' ELSE 'pending' END,
                CASE WHEN deps.waiting_for > 0 THEN deps.waiting_for END,
                EXISTS (SELECT 1 FROM referenced r WHERE r.ord = t.ord)
           FROM t JOIN deps ON deps.ord = t.ord
          ORDER BY t.ord
         RETURNING id)
  SELECT ARRAY(SELECT id FROM ins) INTO ids;

  INSERT INTO :SCHEMA.job_dependencies (job_id, depends_on, on_failure)
  SELECT ids[s.ord], (d.value #>> '{}')::bigint, coalesce(s.spec->>'on_dependency_failure', 'fail')
    FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord),
         jsonb_array_elements(coalesce(s.spec->'depends_on', '[]')) d(value)
  UNION
  SELECT ids[s.ord], ids[a.value::text::integer], coalesce(s.spec->>'on_dependency_failure', 'fail')
    FROM jsonb_array_elements(specs) WITH ORDINALITY AS s(spec, ord),
         jsonb_array_elements(coalesce(s.spec->'after', '[]')) a(value);

  -- Dependencies already finished count now, as their outcome would have.
  PERFORM :SCHEMA.resolve_dependencies(ARRAY(SELECT f.id FROM unnest(found_ids, found_states) AS f(id, state)
                                              WHERE f.state IN ('succeeded', 'failed', 'cancelled') ORDER BY f.id),
                                        ARRAY(SELECT f.state FROM unnest(found_ids, found_states) AS f(id, state)
                                              WHERE f.state IN ('succeeded', 'failed', 'cancelled') ORDER BY f.id));

  RETURN QUERY SELECT x FROM unnest(ids) x;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.add_jobs_after(jsonb) FROM PUBLIC;
