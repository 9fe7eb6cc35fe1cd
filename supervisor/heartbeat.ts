/**
 * The supervisor's heartbeat: every heartbeatIntervalMs it writes its row in
 * the registry (status, threads, counters) and renews the leases of the jobs
 * it runs. The renewal also brings back cancel requests whose notification
 * was lost, and the row's answer says whether this supervisor was declared
 * LOST meanwhile and how full PostgreSQL's NOTIFY queue is.
 */
import type pg from 'pg';
import { rowsOf, withAnswerDeadline } from '../src/db.ts';
import { throttled, throttledWarnings, type Logger } from '../src/log.ts';
import { NOTIFY_DROP_USAGE } from '../src/notification.ts';
import { renewLeasesQuery } from '../src/sql/jobs.ts';
import { heartbeatQuery } from '../src/sql/supervisors.ts';
import { Periodic } from './periodic.ts';
import type { SupervisorStatus } from './supervisor.ts';

export interface HeartbeatOptions {
  id: string;
  schema: string;
  pool: pg.Pool;
  logger: Logger;
  intervalMs: number;
  leaseMs: number;
  /** Named in the warning about a full NOTIFY queue: how soon supervisors find new jobs without notifications. */
  sweepIntervalMs: number;
  status(): SupervisorStatus;
  /** The LISTEN connection's backend pid, stored in the row. */
  listenerPid(): number | null;
  tasks(): string[];
  /** Ids of the jobs this supervisor runs: their leases are renewed. */
  runningJobIds(): string[];
  /** Aborts a running job whose row asks for its cancellation; whether it was running. */
  cancel(jobId: string): boolean;
  /** A cancel notification for one of this supervisor's jobs whose row asked for no cancel. */
  cancelIgnored(jobId: string): void;
  /** PostgreSQL's NOTIFY queue is too full for notifications: control messages are not announced either. */
  onNotificationsDropped(): void;
}

export class Heartbeat {
  private readonly o: HeartbeatOptions;
  private readonly timer: Periodic;
  private readonly warnDb = throttledWarnings(1_000);
  private readonly warnNotifyQueue = throttled(60_000);
  /** When a heartbeat last reached the database (epoch ms; 0: never): /readyz's "connected". */
  lastBeatAt = 0;

  constructor(options: HeartbeatOptions) {
    this.o = options;
    this.timer = new Periodic(options.intervalMs, () => this.beat());
  }

  /** Beats every intervalMs until stop(); both may be called in any order, any number of times. */
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

  /** One beat now; failures are logged (throttled), never thrown: the next beat retries. */
  async beat(): Promise<void> {
    const { pool, schema, leaseMs, logger } = this.o;
    const status = this.o.status();
    // Sooner than the pool's own deadline: a heartbeat stuck on a silent
    // connection holds up the next one, and the leases run out meanwhile.
    const answerWithinMs = Math.max(500, Math.floor(leaseMs / 4));
    try {
      const beat = heartbeatQuery(schema, {
        id: this.o.id,
        status: status.state === 'STOPPING' ? 'BUSY' : status.state,
        threads: status.threads.length,
        // listenerPid: the testing kit's killListeners() cuts this schema's LISTEN connections only.
        info: {
          threads: status.threads,
          restarts: status.restarts,
          counters: status.counters,
          listenerPid: this.o.listenerPid(),
          connections: status.connections,
        },
        tasks: this.o.tasks(),
      });
      const rows = await rowsOf(pool, withAnswerDeadline(beat, answerWithinMs));
      if (rows[0]?.previous_status === 'LOST') {
        logger.warn(
          'this supervisor was declared LOST (paused or cut off too long); its earlier jobs were reaped and their late outcomes are fenced',
        );
      }
      this.lastBeatAt = Date.now();
      this.checkNotifyQueue(Number(rows[0]?.notify_queue_usage ?? 0));
      await this.renewLeases(answerWithinMs);
    } catch (err) {
      this.warnDb(logger, { err: (err as Error).message }, 'heartbeat failed');
    }
  }

  private checkNotifyQueue(usage: number): void {
    if (usage < NOTIFY_DROP_USAGE) return;
    // Control messages are not announced either: look for them now rather than at the 10 s safety drain.
    this.o.onNotificationsDropped();
    this.warnNotifyQueue((suppressed) =>
      this.o.logger.warn(
        { notifyQueueUsage: Math.round(usage * 100) / 100, sweepIntervalMs: this.o.sweepIntervalMs, suppressed },
        "PostgreSQL's NOTIFY queue is half full or more, so grapevine sends no notifications: supervisors find new jobs by their sweep instead of at once. " +
          'A session that ran LISTEN and stays in one transaction holds the queue: find it among the oldest transactions ' +
          '(SELECT pid, application_name, state, xact_start FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start LIMIT 5) and end it',
      ),
    );
  }

  /**
   * A cancel notification names a job, but anyone who can connect may send
   * one: only a row that asks for the cancel, for a job this supervisor still
   * runs, is acted on. Renewing that one lease reads exactly that.
   */
  async checkCancel(jobId: string): Promise<void> {
    if (!this.o.runningJobIds().includes(jobId)) return;
    try {
      const acted = await this.renewLeases(Math.max(500, Math.floor(this.o.leaseMs / 4)), [jobId], 'cancelling running job');
      if (acted === 0) this.o.cancelIgnored(jobId);
    } catch (err) {
      // The next heartbeat reads the same flag.
      this.warnDb(this.o.logger, { err: (err as Error).message }, 'reading a cancel request failed');
    }
  }

  /** Renews the leases of `ids` and acts on the cancels their rows ask for; how many it cancelled. */
  private async renewLeases(
    answerWithinMs: number,
    ids = this.o.runningJobIds(),
    why = 'cancelling running job (seen at heartbeat)',
  ): Promise<number> {
    if (ids.length === 0) return 0;
    const renew = renewLeasesQuery(this.o.schema, { owner: this.o.id, ids, leaseMs: this.o.leaseMs });
    const renewed = await rowsOf(this.o.pool, withAnswerDeadline(renew, answerWithinMs));
    // A cancel notification sent while the LISTEN connection was down is
    // gone; the flag on the row is not.
    let cancelled = 0;
    for (const row of renewed) {
      if (row.cancel_requested && this.o.cancel(row.id)) {
        this.o.logger.info({ jobId: row.id }, why);
        cancelled++;
      }
    }
    return cancelled;
  }
}
