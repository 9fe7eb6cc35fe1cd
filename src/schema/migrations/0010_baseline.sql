-- The tables, indexes and sequences of a grapevine schema, as the first
-- release creates them. Versions 1 to 9 were pre-release migrations; this
-- file replaces them, and migrate() recognises a schema they built (its
-- migrations table holds exactly those nine) as being at this version.
--
-- Frozen once released, like every numbered file in this folder: a change is
-- a new file with the next number. :SCHEMA stands for the quoted schema name
-- and is the only substitution. The functions live in ../functions/, one
-- file each, applied after the migrations whenever their text changes.

-- Jobs ----------------------------------------------------------------------

CREATE TABLE :SCHEMA.jobs (
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

-- The claims visit this index one priority at a time and stop after the rows
-- they need, so they stay cheap however many finished or far-future rows the
-- table holds.
CREATE INDEX jobs_pending_idx ON :SCHEMA.jobs (priority DESC, run_at, id) WHERE state = 'pending';
-- The reaper only ever looks at running rows. Every index costs each job
-- about one insert per state change, so there are few: releases and lease
-- renewals go by id.
CREATE INDEX jobs_running_lease_idx ON :SCHEMA.jobs (lease_until) WHERE state = 'running';
-- Pruning finished jobs visits only the page ranges that hold old finished
-- rows. It costs almost nothing per job: rows are finished in table order
-- (each outcome write puts the new row version at the end of the heap), so
-- each range's summary stays narrow, and ranges not yet summarised are only
-- noted, to be summarised in the background.
CREATE INDEX jobs_finished_brin ON :SCHEMA.jobs USING brin (finished_at) WITH (autosummarize = on);

-- One token per claim; outcomes are fenced on (id, claim_token).
CREATE SEQUENCE :SCHEMA.claim_tokens;

-- Supervisors -----------------------------------------------------------------

CREATE TABLE :SCHEMA.supervisors (
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

-- When each fleet-wide chore last ran. A supervisor's tick claims its chore
-- here first and skips it if any supervisor ran it recently, so the
-- database's maintenance load does not grow with the fleet.
CREATE TABLE :SCHEMA.maintenance (
  chore text PRIMARY KEY CHECK (chore IN ('reap', 'prune')),
  ran_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO :SCHEMA.maintenance (chore) VALUES ('reap'), ('prune');

-- Control plane -----------------------------------------------------------------

-- One message id per send, shared by every recipient: a client asks "what did
-- everyone answer to message 42".
CREATE SEQUENCE :SCHEMA.message_ids;

-- Control messages, one row per recipient. NOTIFY on the control channel only
-- wakes the supervisor; this table is what it reads, in id order, so a
-- supervisor that reconnects or missed a notification still gets every message.
CREATE TABLE :SCHEMA.messages (
  id           bigint NOT NULL,
  worker       text NOT NULL,
  command      text NOT NULL CHECK (length(command) BETWEEN 1 AND 64),
  args         jsonb,
  sent_at      timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  PRIMARY KEY (id, worker)
);
CREATE INDEX messages_unprocessed_idx ON :SCHEMA.messages (worker, id) WHERE processed_at IS NULL;
CREATE INDEX messages_sent_idx ON :SCHEMA.messages (sent_at);

CREATE TABLE :SCHEMA.responses (
  message_id   bigint NOT NULL,
  worker       text NOT NULL,
  command      text NOT NULL,
  ok           boolean NOT NULL,
  -- json, not jsonb: an INFO answer keeps the order its fields were written in.
  value        json,
  error        json,
  responded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (message_id, worker)
);
CREATE INDEX responses_worker_idx ON :SCHEMA.responses (worker, message_id);
CREATE INDEX responses_at_idx ON :SCHEMA.responses (responded_at);

-- What each supervisor did, for operators (grapevine log). Supervisors append
-- in batches and prune their own old entries.
CREATE TABLE :SCHEMA.worker_log (
  id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  worker text NOT NULL,
  at     timestamptz NOT NULL,
  event  text NOT NULL,
  thread integer,
  detail text
);
CREATE INDEX worker_log_worker_idx ON :SCHEMA.worker_log (worker, id);
CREATE INDEX worker_log_at_idx ON :SCHEMA.worker_log (at);

-- Who is following the worker log (`grapevine log --follow`). A NOTIFY makes
-- its commit take a cluster-wide lock until the commit is on disk, so log
-- appends notify only while a follower's row is live, rather than make every
-- enqueue wait behind them for a follower that is usually not there.
CREATE TABLE :SCHEMA.log_followers (
  id text PRIMARY KEY,
  until timestamptz NOT NULL
);
