import { quoteIdent } from '../channels.ts';

export const version = 6;
export const name = 'maintenance_pace';

/**
 * When each fleet-wide chore last ran. Every supervisor ticks the reaper on
 * its own timer and the advisory lock only kept two reapers from running at
 * once, so N supervisors reaped N times per interval (and pruned N times a
 * minute): the database's maintenance load grew with the fleet. A tick now
 * claims its chore here first and skips it if any supervisor ran it recently.
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  return `
CREATE TABLE ${s}.maintenance (
  chore text PRIMARY KEY CHECK (chore IN ('reap', 'prune')),
  ran_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO ${s}.maintenance (chore) VALUES ('reap'), ('prune');
`;
}
