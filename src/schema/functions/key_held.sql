-- Whether a job still holds its key (docs/keys.md): dedupe_running while it
-- is pending or running, throttle until key_until, the other modes while it
-- is pending and has never started (attempts only grows). One definition for
-- add_jobs()'s statements; plain SQL of one expression, so the planner
-- inlines it where it is called. Called only from the security-definer
-- enqueue functions.
CREATE OR REPLACE FUNCTION :SCHEMA.key_held(key_mode text, state text, attempts integer, key_until timestamptz) RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
  SELECT CASE key_mode
           WHEN 'dedupe_running' THEN state IN ('pending', 'running')
           WHEN 'throttle' THEN key_until > now()
           ELSE state = 'pending' AND attempts = 0
         END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.key_held(text, text, integer, timestamptz) FROM PUBLIC;
