-- What a running handler last reported with helpers.progress() (a number or
-- small JSON, src/progress.ts), and until when a watcher (waitForJob() with
-- onProgress, `grapevine job ID --follow`) wants each new value announced on
-- <schema>_progress. A watcher renews its mark while it watches, so once it
-- is gone the progress writes go back to costing one UPDATE and no NOTIFY.
-- Both NULL for most jobs; adding them rewrites nothing.
ALTER TABLE :SCHEMA.jobs ADD COLUMN progress jsonb;
ALTER TABLE :SCHEMA.jobs ADD COLUMN progress_watched_until timestamptz;
