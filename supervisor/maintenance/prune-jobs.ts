/**
 * Chore: delete finished jobs past their retention, and the registry rows of
 * supervisors gone for a day that no running job names. Runs inside the
 * leader's transaction, once per chore period for the fleet.
 */
import type { Queryable } from '../../src/db.ts';
import { pruneFinished } from '../../src/sql/jobs.ts';
import { pruneExitedSupervisors } from '../../src/sql/supervisors.ts';

/** Rows deleted per statement, so one prune never holds many locks at once. */
const BATCH = 10_000;

export async function pruneJobs(db: Queryable, p: { schema: string; retentionMs: number }): Promise<void> {
  await pruneFinished(db, p.schema, { retentionMs: p.retentionMs, batchSize: BATCH });
  await pruneExitedSupervisors(db, p.schema);
}
