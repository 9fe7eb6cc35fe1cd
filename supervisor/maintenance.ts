import type pg from 'pg';
import type { Logger } from 'pino';
import { withTransaction } from '../src/db.ts';
import { throttledWarnings } from '../src/log.ts';
import { pruneFinished, reapExpired, unhandledTasks, type UnhandledTasksRow } from '../src/sql/jobs.ts';
import { claimChore, markLostSupervisors, pruneExitedSupervisors, tryLeadReaper } from '../src/sql/supervisors.ts';

export interface ReaperOptions {
  pool: pg.Pool;
  schema: string;
  leaseMs: number;
  /** This supervisor's tick interval; the fleet reaps at most twice per interval (see tick()). */
  intervalMs: number;
  retentionMs: number;
  logger: Logger;
}

export interface ReapResult {
  /** Whether this tick reaped: it took the lock, and no supervisor had reaped in the last half interval. */
  leader: boolean;
  /** It took the lock but left the reaping to the next tick: another supervisor reaped in the last half interval. */
  paced: boolean;
  lostSupervisors: string[];
  reapedJobs: string[];
  /** Whether this tick ran the once-a-minute chores (prune, and the look for unhandled tasks). */
  choresRan: boolean;
  /** Due jobs (among the oldest of each priority) whose task or queue no live supervisor handles; looked for with the chores. */
  unhandled: UnhandledTasks[];
}

export type UnhandledTasks = UnhandledTasksRow;

/** How many of each priority's oldest due jobs the unhandled-task check looks at. */
const UNHANDLED_SAMPLE = 1_000;

const PRUNE_EVERY_MS = 60_000;

/**
 * Returns jobs to the queue whose owner stopped renewing their lease
 * (supervisor killed, paused, partitioned) and prunes old rows. Every
 * supervisor calls tick() on a timer, so there is always a reaper while any
 * supervisor lives. The advisory lock inside the transaction keeps two from
 * running at once, and the maintenance table keeps the fleet's reaping to
 * one or two runs per interval however many supervisors tick.
 */
export class Reaper {
  private readonly options: ReaperOptions;
  private lastPrune = 0;
  private readonly warn = throttledWarnings(1_000);

  constructor(options: ReaperOptions) {
    this.options = options;
  }

  /**
   * `force` reaps now (reapNow()) whenever the last run was. A timed tick
   * skips if any supervisor reaped less than half an interval ago: half,
   * because one supervisor's timer can fire a little early against the
   * server's clock, and a lone supervisor must not skip every other tick.
   */
  async tick(options: { force?: boolean } = {}): Promise<ReapResult> {
    const { pool, schema, leaseMs, intervalMs, retentionMs, logger } = this.options;
    let result: ReapResult;
    try {
      result = await withTransaction(pool, async (client) => {
        // A reaper frozen mid-transaction (SIGSTOP, a long GC pause) would keep
        // the leader lock and stop everyone's reaping; the server ends it instead.
        await client.query(`SET LOCAL idle_in_transaction_session_timeout = ${Math.max(1_000, Math.floor(leaseMs / 2))}`);
        if (!(await tryLeadReaper(client, schema))) return idle(false);
        const paceMs = options.force ? null : Math.floor(intervalMs / 2);
        if (!(await claimChore(client, schema, { chore: 'reap', paceMs }))) return idle(true);
        const lostSupervisors = await markLostSupervisors(client, schema, { lostAfterMs: leaseMs });
        const reapedJobs = await reapExpired(client, schema);
        if (lostSupervisors.length > 0) logger.warn({ supervisors: lostSupervisors }, 'supervisors stopped heartbeating; marked LOST');
        if (reapedJobs.length > 0) logger.warn({ jobs: reapedJobs.length, ids: reapedJobs.slice(0, 20) }, 'returned jobs with expired leases to the queue');
        // The local clock only saves asking; the table decides for the fleet.
        // Half the period there, as for reaping: a lone supervisor whose
        // minute ran a little short against the server's clock still prunes.
        let choresRan = false;
        if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
          this.lastPrune = Date.now();
          if (await claimChore(client, schema, { chore: 'prune', paceMs: PRUNE_EVERY_MS / 2 })) {
            choresRan = true;
            await pruneFinished(client, schema, { retentionMs, batchSize: 10_000 });
            await pruneExitedSupervisors(client, schema);
          }
        }
        return { leader: true, paced: false, choresRan, lostSupervisors, reapedJobs, unhandled: [] };
      });
    } catch (err) {
      this.warn(logger, { err: (err as Error).message }, 'reaper tick failed');
      return idle(false);
    }
    // After the commit: a diagnostic that fails must not undo the reaping.
    if (result.choresRan) result.unhandled = await this.findUnhandled();
    return result;
  }

  private async findUnhandled(): Promise<UnhandledTasks[]> {
    const { pool, schema, leaseMs, logger } = this.options;
    try {
      const rows = await unhandledTasks(pool, schema, { liveWithinMs: leaseMs, sample: UNHANDLED_SAMPLE });
      if (rows.length > 0) {
        logger.warn(
          { unhandled: rows },
          'due jobs wait for tasks (or queues) that no running supervisor handles, so nothing will run them: check the task names, or start a supervisor whose tasks directory and queues include them',
        );
      }
      return rows;
    } catch (err) {
      this.warn(logger, { err: (err as Error).message }, 'the look for unhandled tasks failed');
      return [];
    }
  }
}

/** A tick that reaped nothing: it lost the lock (or failed), or left the reaping to the next one (`paced`). */
function idle(paced: boolean): ReapResult {
  return { leader: false, paced, choresRan: false, lostSupervisors: [], reapedJobs: [], unhandled: [] };
}
