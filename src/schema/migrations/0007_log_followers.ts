import { quoteIdent } from '../channels.ts';

export const version = 7;
export const name = 'log_followers';

/**
 * Who is following the worker log (`grapevine log --follow`, followLog()).
 * Every supervisor wrote its log with a NOTIFY, about ten times a second
 * while jobs ran. A NOTIFY makes its commit take a cluster-wide lock until
 * the commit is on disk, so every enqueue (which notifies too) waited behind
 * the log writes of every supervisor, to wake a follower that is usually not
 * there. Appends now notify only while a follower's row is live.
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  return `
CREATE TABLE ${s}.log_followers (
  id text PRIMARY KEY,
  until timestamptz NOT NULL
);
`;
}
