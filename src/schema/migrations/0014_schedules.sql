-- Recurring schedules (docs/schedules.md). A schedule is declared in code, in
-- a crontab file or by `grapevine schedule add`, and stored here, where every
-- supervisor reads it; its tick timer lives in supervisor/maintenance/fire-schedules.ts.
-- last_tick is the anchor of the missed-tick policy: the last tick the fleet
-- fired (or skipped), NULL for a schedule that has not fired yet.
CREATE TABLE :SCHEMA.schedules (
  name         text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 128),
  cron         text NOT NULL,
  tz           text NOT NULL DEFAULT 'UTC',
  task         text NOT NULL CHECK (length(task) BETWEEN 1 AND 128),
  payload      jsonb NOT NULL DEFAULT '{}',
  queue        text NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 128),
  priority     integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
  -- 'skip', 'once' or 'backfill:N' (src/schedule/schedule.ts reads it).
  missed       text NOT NULL DEFAULT 'skip' CHECK (missed ~ '^(skip|once|backfill:[0-9]{1,4})$'),
  paused       boolean NOT NULL DEFAULT false,
  last_tick    timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The job a tick added: its schedule's name and the tick's instant. Both NULL
-- for every other job, and nullable columns without a default cost an
-- insert nothing.
ALTER TABLE :SCHEMA.jobs ADD COLUMN schedule text, ADD COLUMN scheduled_for timestamptz;

-- Exactly one job per schedule and tick, whoever fires it: a second insert
-- of the same tick (a supervisor that fired it too late to see the first)
-- meets this index and adds nothing. Partial, so a job without a schedule
-- never touches it.
CREATE UNIQUE INDEX jobs_schedule_tick_idx ON :SCHEMA.jobs (schedule, scheduled_for) WHERE schedule IS NOT NULL;
