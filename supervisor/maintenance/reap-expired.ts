/**
 * Chore: return to the queue the jobs whose owner stopped renewing their
 * lease (supervisor killed, paused, partitioned), and mark that owner LOST.
 * Runs inside the leader's transaction.
 */
import type { Logger } from 'pino';
import type { Queryable } from '../../src/db.ts';
import { reapExpired } from '../../src/sql/jobs.ts';
import { markLostSupervisors } from '../../src/sql/supervisors.ts';

export interface Reaped {
  lostSupervisors: string[];
  reapedJobs: string[];
}

export async function reapExpiredLeases(db: Queryable, p: { schema: string; leaseMs: number; logger: Logger }): Promise<Reaped> {
  const lostSupervisors = await markLostSupervisors(db, p.schema, { lostAfterMs: p.leaseMs });
  const reapedJobs = await reapExpired(db, p.schema);
  if (lostSupervisors.length > 0) p.logger.warn({ supervisors: lostSupervisors }, 'supervisors stopped heartbeating; marked LOST');
  if (reapedJobs.length > 0)
    p.logger.warn({ jobs: reapedJobs.length, ids: reapedJobs.slice(0, 20) }, 'returned jobs with expired leases to the queue');
  return { lostSupervisors, reapedJobs };
}
