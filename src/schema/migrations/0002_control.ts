import { quoteIdent } from '../channels.ts';

export const version = 2;
export const name = 'control';

export function sql(schema: string): string {
  const s = quoteIdent(schema);
  return `
-- One message id per send, shared by every recipient: a client asks "what did
-- everyone answer to message 42".
CREATE SEQUENCE ${s}.message_ids;

-- Control messages, one row per recipient. NOTIFY on the control channel only
-- wakes the supervisor; this table is what it reads, in id order, so a
-- supervisor that reconnects or missed a notification still gets every message.
CREATE TABLE ${s}.messages (
  id           bigint NOT NULL,
  worker       text NOT NULL,
  command      text NOT NULL CHECK (length(command) BETWEEN 1 AND 64),
  args         jsonb,
  sent_at      timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  PRIMARY KEY (id, worker)
);
CREATE INDEX messages_unprocessed_idx ON ${s}.messages (worker, id) WHERE processed_at IS NULL;
CREATE INDEX messages_sent_idx ON ${s}.messages (sent_at);

CREATE TABLE ${s}.responses (
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
CREATE INDEX responses_worker_idx ON ${s}.responses (worker, message_id);
CREATE INDEX responses_at_idx ON ${s}.responses (responded_at);

-- What each supervisor did, for operators (grapevine log). Supervisors append
-- in batches and prune their own old entries.
CREATE TABLE ${s}.worker_log (
  id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  worker text NOT NULL,
  at     timestamptz NOT NULL,
  event  text NOT NULL,
  thread integer,
  detail text
);
CREATE INDEX worker_log_worker_idx ON ${s}.worker_log (worker, id);
CREATE INDEX worker_log_at_idx ON ${s}.worker_log (at);
`;
}
