-- Notification payloads are comma-separated ids where consecutive runs are
-- written "first-last", so a bulk insert costs a handful of notifications
-- instead of one per job (payloads must stay under 8,000 bytes). Callers go
-- through notify_ids(), which drops the notifications when the queue is half full.
CREATE OR REPLACE FUNCTION :SCHEMA.notify_ids_always(channel text, ids bigint[]) RETURNS void
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
