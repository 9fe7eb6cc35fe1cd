/**
 * The fleet's maintenance, run by one elected supervisor at a time. Every
 * supervisor ticks on a timer, so there is always a leader while any
 * supervisor lives; the advisory lock inside the tick's transaction keeps
 * two from running at once, and the maintenance table keeps the fleet's
 * reaping to one or two runs per interval and the other chores to one or
 * two per period, however many supervisors tick. The chores themselves live
 * one per file beside this one.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { DEFAULTS } from '../../src/config.ts';
import { withTransaction } from '../../src/db.ts';
import { throttledWarnings } from '../../src/log.ts';
import { claimChore, tryLeadReaper } from '../../src/sql/supervisors.ts';
import { Periodic } from '../periodic.ts';
import { chorePaceMs, choresDueLocally, leaderIdleTimeoutMs, reapPaceMs } from './pacing.ts';
import { pruneControlTables, type ControlRetention } from './prune-control.ts';
import { pruneJobs } from './prune-jobs.ts';
import { reapExpiredLeases } from './reap-expired.ts';
import { measureQueueDepth } from './queue-stats.ts';
import { findUnhandledTasks, type UnhandledTasks } from './unhandled-tasks.ts';

export type { UnhandledTasks };

export interface MaintenanceOptions extends Partial<ControlRetention> {
  pool: pg.Pool;
  schema: string;
  leaseMs: number;
  /** This supervisor's tick interval; the fleet reaps at most twice per interval (see tick()). */
  intervalMs: number;
  retentionMs: number;
  logger: Logger;
  /** How often the fleet prunes and looks for unhandled tasks (default DEFAULTS.pruneIntervalMs). */
  pruneIntervalMs?: number;
  /** How often the fleet measures the queues for /metrics; null (the default): this supervisor serves no metrics and never measures. */
  queueStatsIntervalMs?: number | null;
}

export interface ReapResult {
  /** Whether this tick reaped: it took the lock, and no supervisor had reaped in the last half interval. */
  leader: boolean;
  /** It took the lock but left the reaping to the next tick: another supervisor reaped in the last half interval. */
  paced: boolean;
  lostSupervisors: string[];
  reapedJobs: string[];
  /** Whether this tick ran the periodic chores (pruning, and the look for unhandled tasks). */
  choresRan: boolean;
  /** Due jobs (among the oldest of each priority) whose task or queue no live supervisor handles; looked for with the chores. */
  unhandled: UnhandledTasks[];
}

export class Maintenance {
  private readonly o: Required<MaintenanceOptions>;
  private readonly timer: Periodic;
  private lastChoresAskedAt = 0;
  private lastStatsAskedAt = 0;
  private readonly warn = throttledWarnings(1_000);

  constructor(options: MaintenanceOptions) {
    this.o = {
      pruneIntervalMs: DEFAULTS.pruneIntervalMs,
      logKeep: DEFAULTS.supervisorLogKeep,
      logMaxAgeMs: DEFAULTS.supervisorLogMaxAgeMs,
      messageMaxAgeMs: DEFAULTS.messageMaxAgeMs,
      queueStatsIntervalMs: null,
      ...options,
    };
    this.timer = new Periodic(options.intervalMs, () => this.tick());
  }

  /** Ticks every intervalMs until stop(); both may be called in any order, any number of times. */
  start(): void {
    this.timer.start();
  }

  stop(): void {
    this.timer.stop();
  }

  /** Resolves once a run under way has finished. */
  idle(): Promise<void> {
    return this.timer.idle();
  }

  /** `force` reaps now (reapNow()) whenever the last run was; a timed tick is paced (see reapPaceMs). */
  async tick(options: { force?: boolean } = {}): Promise<ReapResult> {
    const { pool, schema, leaseMs, intervalMs, retentionMs, logger, pruneIntervalMs } = this.o;
    let result: ReapResult;
    let measure = false;
    try {
      result = await withTransaction(pool, async (client) => {
        await client.query(`SET LOCAL idle_in_transaction_session_timeout = ${leaderIdleTimeoutMs(leaseMs)}`);
        if (!(await tryLeadReaper(client, schema))) return idle(false);
        // Before the reap's pacing: the leader of any tick may measure.
        measure = await this.claimQueueStats(client);
        if (!(await claimChore(client, schema, { chore: 'reap', paceMs: reapPaceMs(intervalMs, options.force === true) })))
          return idle(true);
        const reaped = await reapExpiredLeases(client, { schema, leaseMs, logger });
        let choresRan = false;
        if (choresDueLocally(Date.now(), this.lastChoresAskedAt, pruneIntervalMs)) {
          this.lastChoresAskedAt = Date.now();
          if (await claimChore(client, schema, { chore: 'prune', paceMs: chorePaceMs(pruneIntervalMs) })) {
            choresRan = true;
            await pruneJobs(client, { schema, retentionMs });
          }
        }
        return { leader: true, paced: false, choresRan, ...reaped, unhandled: [] };
      });
    } catch (err) {
      this.warn(logger, { err: (err as Error).message }, 'reaper tick failed');
      return idle(false);
    }
    // After the commit: a diagnostic or a slow delete that fails must not undo the reaping.
    if (measure) {
      await measureQueueDepth(pool, { schema }).catch((err: Error) =>
        this.warn(logger, { err: err.message }, 'could not measure the queues for metrics'),
      );
    }
    if (result.choresRan) {
      result.unhandled = await findUnhandledTasks(pool, { schema, leaseMs, logger }).catch((err: Error) => {
        this.warn(logger, { err: err.message }, 'the look for unhandled tasks failed');
        return [];
      });
      await pruneControlTables(pool, {
        schema,
        logKeep: this.o.logKeep,
        logMaxAgeMs: this.o.logMaxAgeMs,
        messageMaxAgeMs: this.o.messageMaxAgeMs,
      }).catch((err: Error) => this.warn(logger, { err: err.message }, 'could not prune the control tables'));
    }
    return result;
  }

  private async claimQueueStats(client: pg.ClientBase): Promise<boolean> {
    const everyMs = this.o.queueStatsIntervalMs;
    if (everyMs === null || !choresDueLocally(Date.now(), this.lastStatsAskedAt, everyMs)) return false;
    this.lastStatsAskedAt = Date.now();
    return claimChore(client, this.o.schema, { chore: 'stats', paceMs: chorePaceMs(everyMs) });
  }
}

/** A tick that reaped nothing: it lost the lock (or failed), or left the reaping to the next one (`paced`). */
function idle(paced: boolean): ReapResult {
  return { leader: false, paced, choresRan: false, lostSupervisors: [], reapedJobs: [], unhandled: [] };
}
