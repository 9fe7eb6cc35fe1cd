import { channelsFor, quoteIdent } from '../channels.ts';

export const version = 1;
export const name = 'jobs';

export function sql(schema: string): string {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  return `
CREATE TABLE ${s}.jobs (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task          text NOT NULL CHECK (length(task) BETWEEN 1 AND 128),
  queue         text NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 128),
  payload       jsonb NOT NULL DEFAULT '{}',
  state         text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  priority      integer NOT NULL DEFAULT 0,
  run_at        timestamptz NOT NULL DEFAULT now(),
  attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts  integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
  timeout_ms    integer CHECK (timeout_ms > 0),
  locked_by     text,
  locked_thread integer,
  claim_token   bigint,
  lease_until   timestamptz,
  cancel_requested_at timestamptz,
  -- Someone waits for this job (waitForJob): its end is announced on <schema>_done.
  watched       boolean NOT NULL DEFAULT false,
  last_error    text,
  result        jsonb,
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at    timestamptz,
  finished_at   timestamptz
);

-- The pull claim walks this index in order and stops after LIMIT rows, so it
-- stays cheap however many finished or far-future rows the table holds.
CREATE INDEX jobs_pending_idx ON ${s}.jobs (priority DESC, run_at, id) WHERE state = 'pending';
-- The reaper only ever looks at running rows. Every index costs each job
-- about one insert per state change, so there are no others: releases and
-- lease renewals go by id, and pruning (once a minute) can afford a scan.
CREATE INDEX jobs_running_lease_idx ON ${s}.jobs (lease_until) WHERE state = 'running';

CREATE SEQUENCE ${s}.claim_tokens;

CREATE TABLE ${s}.supervisors (
  id           text PRIMARY KEY,
  host         text NOT NULL,
  pid          integer NOT NULL,
  version      text NOT NULL,
  threads      integer NOT NULL,
  concurrency  integer NOT NULL,
  queues       text[],
  tasks        text[] NOT NULL DEFAULT '{}',
  status       text NOT NULL DEFAULT 'IDLE',
  info         jsonb NOT NULL DEFAULT '{}',
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at   timestamptz
);

-- Notification payloads are comma-separated ids where consecutive runs are
-- written "first-last", so a bulk insert of 20,000 jobs costs a handful of
-- notifications instead of 20,000 (payloads must stay under 8,000 bytes).
CREATE FUNCTION ${s}.notify_ids(channel text, ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
  token text;
  payload text := '';
BEGIN
  FOR r IN
    SELECT min(id) AS first, max(id) AS last
      FROM (SELECT id, id - row_number() OVER (ORDER BY id) AS grp
              FROM (SELECT DISTINCT unnest(ids) AS id) d
             WHERE id IS NOT NULL) runs
     GROUP BY grp
     ORDER BY 1
  LOOP
    token := CASE WHEN r.first = r.last THEN r.first::text ELSE r.first || '-' || r.last END;
    IF length(payload) + length(token) + 1 > 7900 THEN
      PERFORM pg_notify(channel, payload);
      payload := '';
    END IF;
    payload := CASE WHEN payload = '' THEN token ELSE payload || ',' || token END;
  END LOOP;
  IF payload <> '' THEN
    PERFORM pg_notify(channel, payload);
  END IF;
END
$fn$;

-- One statement-level trigger covers addJob, addJobs, add_job() and raw
-- INSERTs alike. NOTIFY is delivered at commit, so a rolled-back enqueue
-- never wakes anyone. Jobs due later send only their earliest due time, so
-- supervisors can set a timer instead of polling for them.
CREATE FUNCTION ${s}.jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  due bigint[];
  next_due timestamptz;
BEGIN
  -- One pass over the new rows; a single due job (addJob) skips the batching.
  SELECT array_agg(id) FILTER (WHERE run_at <= now()), min(run_at) FILTER (WHERE run_at > now())
    INTO due, next_due
    FROM inserted WHERE state = 'pending';
  IF cardinality(due) = 1 THEN
    PERFORM pg_notify('${ch.jobs}', due[1]::text);
  ELSIF due IS NOT NULL THEN
    PERFORM ${s}.notify_ids('${ch.jobs}', due);
  END IF;
  IF next_due IS NOT NULL THEN
    PERFORM pg_notify('${ch.jobs}', 'at:' || floor(extract(epoch FROM next_due) * 1000)::bigint);
  END IF;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER jobs_inserted AFTER INSERT ON ${s}.jobs
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ${s}.jobs_inserted();

-- The two claims. Both mark the rows running for one owner with a fresh
-- claim token and a lease, and return what the thread needs to run them.
--
-- claim_next() pulls the next due jobs. It is a function for its planner
-- settings: right after a bulk insert the statistics say "few pending rows",
-- and the planner then prefers a bitmap scan plus sort, which reads every
-- pending row on every claim (quadratic over a backlog). Walking the index in
-- order and stopping after n rows is right whatever the statistics say.
${claimFunction(s, 'claim_next', 'n integer', `
     WHERE state = 'pending' AND run_at <= now()
       AND task = ANY($2) AND ($3 IS NULL OR queue = ANY($3))
     ORDER BY priority DESC, run_at, id
     LIMIT $1
     FOR UPDATE SKIP LOCKED`, 'SET enable_bitmapscan = off SET enable_sort = off')}

-- claim_ids() claims notified ids. Unlike the pull it waits for a row lock
-- instead of skipping the row: the other holders are single short statements
-- (another supervisor claiming the same id, which then finds it taken; a
-- waitForJob() mark), and a skipped id would only come back with the next
-- sweep. lock_timeout bounds the wait should a user's transaction hold a row.
${claimFunction(s, 'claim_ids', 'ids bigint[]', `
     WHERE id = ANY($1) AND state = 'pending' AND run_at <= now()
       AND task = ANY($2) AND ($3 IS NULL OR queue = ANY($3))
     ORDER BY id
     FOR UPDATE`, "SET lock_timeout = '500ms'")}

-- Enqueue from SQL: triggers, other languages, psql.
CREATE FUNCTION ${s}.add_job(
  task text,
  payload jsonb DEFAULT '{}',
  queue text DEFAULT 'default',
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT 0,
  max_attempts integer DEFAULT 5,
  timeout_ms integer DEFAULT NULL
) RETURNS bigint
LANGUAGE sql AS $fn$
  INSERT INTO ${s}.jobs (task, payload, queue, run_at, priority, max_attempts, timeout_ms)
  VALUES ($1, coalesce($2, '{}'), coalesce($3, 'default'), coalesce($4, now()), coalesce($5, 0),
          coalesce($6, 5), $7)
  RETURNING id
$fn$;
`;
}

function claimFunction(s: string, name: string, first: string, pick: string, settings: string): string {
  return `CREATE FUNCTION ${s}.${name}(${first}, task_names text[], queue_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer,
               timeout_ms integer, claim_token bigint, cancel_requested boolean)
LANGUAGE sql
${settings}
AS $fn$
  WITH picked AS (
    SELECT id FROM ${s}.jobs${pick})
  UPDATE ${s}.jobs j
     SET state = 'running', attempts = j.attempts + 1, locked_by = $4, locked_thread = $5,
         claim_token = nextval('${s}.claim_tokens'), lease_until = now() + $6 * interval '1 millisecond',
         started_at = now(), finished_at = NULL
    FROM picked WHERE j.id = picked.id
  RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.timeout_ms, j.claim_token,
            j.cancel_requested_at IS NOT NULL
$fn$;`;
}
