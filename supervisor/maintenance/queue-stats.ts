/**
 * Chore: measure every queue's pending and running jobs into the
 * queue_stats table, which each supervisor's /metrics reads. Run by the
 * leader after its transaction commits, once per metrics interval for the
 * fleet, and only by supervisors that serve metrics: a fleet without them
 * never counts.
 */
import type { Queryable } from '../../src/db.ts';
import { measureQueues } from '../../src/sql/operations.ts';

export async function measureQueueDepth(db: Queryable, p: { schema: string }): Promise<void> {
  await measureQueues(db, p.schema);
}
