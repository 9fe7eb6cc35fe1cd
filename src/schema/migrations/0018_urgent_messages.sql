-- A supervisor reads its urgent messages (PING, STOP, PAUSE, RESUME) before
-- any other it has not processed (src/sql/control.ts, URGENT_COMMANDS), so
-- that 20,000 queued ECHOs do not hold up an operator's STOP. This index
-- finds them without walking the others; its predicate is repeated word for
-- word by the pending-messages statement.
CREATE INDEX messages_urgent_idx ON :SCHEMA.messages (worker, id)
  WHERE processed_at IS NULL AND command IN ('PING', 'STOP', 'PAUSE', 'RESUME');
