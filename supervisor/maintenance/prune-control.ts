/**
 * Chore: keep the control plane's tables small. Each registered supervisor
 * keeps its newest `logKeep` log entries, nobody's older than
 * `logMaxAgeMs`; messages and responses go after `messageMaxAgeMs`. Run by
 * the leader after its transaction commits, so a slow delete never holds up
 * the reaping.
 */
import type { Queryable } from '../../src/db.ts';
import { pruneLogPerSupervisor, pruneMessages, pruneOldLog, pruneResponses } from '../../src/sql/control.ts';

export interface ControlRetention {
  logKeep: number;
  logMaxAgeMs: number;
  messageMaxAgeMs: number;
}

/** Rows deleted per statement, so one prune never holds many locks at once. */
const BATCH = 10_000;

/** How many rows it deleted. */
export async function pruneControlTables(db: Queryable, p: { schema: string } & ControlRetention): Promise<number> {
  const { schema } = p;
  let deleted = await pruneLogPerSupervisor(db, schema, { keep: p.logKeep });
  deleted += await pruneOldLog(db, schema, { maxAgeMs: p.logMaxAgeMs, batchSize: BATCH });
  deleted += await pruneMessages(db, schema, { maxAgeMs: p.messageMaxAgeMs, batchSize: BATCH });
  deleted += await pruneResponses(db, schema, { maxAgeMs: p.messageMaxAgeMs, batchSize: BATCH });
  return deleted;
}
