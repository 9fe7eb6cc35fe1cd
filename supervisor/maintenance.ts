import type pg from 'pg';
import type { Logger } from 'pino';
import { withTransaction } from '../src/db.ts';
import { throttled } from '../src/log.ts';
import { jobStatements } from '../src/sql/jobs.ts';
import { withValues } from '../src/sql/statement.ts';
import { supervisorStatements } from '../src/sql/supervisors.ts';

export interface ReaperOptions {
  pool: pg.Pool;
  schema: string;
  leaseMs: number;
  retentionMs: number;
  logger: Logger;
}

export interface ReapResult {
  leader: boolean;
  lostSupervisors: string[];
  reapedJobs: string[];
}

const PRUNE_EVERY_MS = 60_000;

/**
 * Returns jobs to the queue whose owner stopped renewing their lease
 * (supervisor killed, paused, partitioned) and prunes old rows. Every
 * supervisor calls tick() on a timer; the advisory lock inside the
 * transaction lets exactly one of them act per tick, so there is always a
 * reaper while any supervisor lives, and never two at once.
 */
export class Reaper {
  private readonly options: ReaperOptions;
  private lastPrune = 0;
  private readonly warn = throttled(1_000);

  constructor(options: ReaperOptions) {
    this.options = options;
  }

  async tick(): Promise<ReapResult> {
    const { pool, schema, leaseMs, retentionMs, logger } = this.options;
    const jobs = jobStatements(schema);
    const sups = supervisorStatements(schema);
    try {
      return await withTransaction(pool, async (client) => {
        // A reaper frozen mid-transaction (SIGSTOP, a long GC pause) would keep
        // the leader lock and stop everyone's reaping; the server ends it instead.
        await client.query(`SET LOCAL idle_in_transaction_session_timeout = ${Math.max(1_000, Math.floor(leaseMs / 2))}`);
        const { rows } = await client.query(withValues(sups.tryLeadReaper, []));
        if (!rows[0].leader) return { leader: false, lostSupervisors: [], reapedJobs: [] };
        const lost = await client.query(withValues(sups.markLost, [leaseMs]));
        const reaped = await client.query(withValues(jobs.reapExpired, []));
        const lostSupervisors = lost.rows.map((r) => r.id as string);
        const reapedJobs = (reaped.rows[0]?.ids as string[] | undefined) ?? [];
        if (lostSupervisors.length > 0) logger.warn({ supervisors: lostSupervisors }, 'supervisors stopped heartbeating; marked LOST');
        if (reapedJobs.length > 0) logger.warn({ jobs: reapedJobs.length, ids: reapedJobs.slice(0, 20) }, 'returned jobs with expired leases to the queue');
        if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
          this.lastPrune = Date.now();
          await client.query(withValues(jobs.pruneFinished, [retentionMs, 10_000]));
          await client.query(withValues(sups.pruneExited, []));
        }
        return { leader: true, lostSupervisors, reapedJobs };
      });
    } catch (err) {
      this.warn((suppressed) => logger.warn({ err: (err as Error).message, suppressed }, 'reaper tick failed'));
      return { leader: false, lostSupervisors: [], reapedJobs: [] };
    }
  }
}
