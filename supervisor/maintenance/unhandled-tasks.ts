/**
 * Chore: warn about due jobs, and active schedules, whose task (or queue) no
 * live supervisor handles. Each supervisor knows only its own tasks, so only the fleet's
 * view in the supervisors table can tell; nobody would ever claim such a job.
 */
import type { Logger } from 'pino';
import type { Queryable } from '../../src/db.ts';
import { unhandledTasks, type UnhandledTasksRow } from '../../src/sql/jobs.ts';

export type UnhandledTasks = UnhandledTasksRow;

/** How many of each priority's oldest due jobs the look covers. */
const SAMPLE = 1_000;

export async function findUnhandledTasks(db: Queryable, p: { schema: string; leaseMs: number; logger: Logger }): Promise<UnhandledTasks[]> {
  const rows = await unhandledTasks(db, p.schema, { liveWithinMs: p.leaseMs, sample: SAMPLE });
  if (rows.length > 0) {
    p.logger.warn(
      { unhandled: rows },
      'due jobs (or schedules) wait for tasks (or queues) that no running supervisor handles, so nothing will run them: check the task names, or start a supervisor whose tasks directory and queues include them',
    );
  }
  return rows;
}
