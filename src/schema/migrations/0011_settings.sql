-- Settings of a schema that the database itself enforces: one row, changed
-- by the schema's owner with an UPDATE, read by clients once each.
--
-- max_payload_bytes: the largest job payload, in bytes of its JSON text as
-- PostgreSQL prints it. The insert trigger (functions/jobs_inserted.sql)
-- refuses a larger one from any path, add_job() or a plain INSERT alike;
-- clients check it before sending, so a large payload does not travel. It
-- is at least 1 KiB, so that the trigger reads it only for a statement that
-- holds a payload larger than that, and most enqueues pay nothing for it.
CREATE TABLE :SCHEMA.settings (
  only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  max_payload_bytes integer NOT NULL DEFAULT 1048576 CHECK (max_payload_bytes >= 1024)
);
INSERT INTO :SCHEMA.settings DEFAULT VALUES;
