import type pg from 'pg';
import type { Logger } from 'pino';
import { throttled } from '../src/log.ts';
import { appendLog } from '../src/sql/control.ts';
import type { JobRef } from './dispatcher.ts';

export type SupervisorEvent =
  | 'ALIVE'
  | 'QUEUE'
  | 'THREADS'
  | 'TASK_START'
  | 'TASK_COMPLETE'
  | 'TASK_ERROR'
  | 'THREAD_EXIT'
  | 'THREAD_RESTART'
  | 'MESSAGE'
  | 'RESPONSE'
  | 'PAUSE'
  | 'RESUME'
  | 'TIMEOUT'
  | 'POLL'
  | 'STOP';

export interface SupervisorLogOptions {
  pool: pg.Pool;
  schema: string;
  supervisor: string;
  logger: Logger;
  /** Entries written per supervisor are batched for this long (default 100 ms). */
  flushMs?: number;
  /** Entries kept in memory while the database is away; the oldest are dropped beyond this. */
  maxBuffered?: number;
}

interface Entry {
  at: string;
  /** TASK_END becomes TASK_COMPLETE or TASK_ERROR when written, from the job's state. */
  event: SupervisorEvent | 'TASK_END';
  thread: number | null;
  detail: string | null;
  job?: string;
  attempt?: number;
  /** TASK_END only: the thread reported this attempt's success as recorded (the row may be gone since: deleteSucceeded). */
  succeeded?: boolean;
}

// Per-job events would flood an info-level log on a busy supervisor.
const QUIET_EVENTS = new Set<Entry['event']>(['TASK_START', 'TASK_COMPLETE', 'TASK_ERROR', 'TASK_END']);

// Per-job entries itemised per flush. Beyond this, a busy supervisor writes
// one summary row per kind instead: at tens of thousands of jobs a second,
// two log rows per job would cost as much as the jobs themselves.
const ITEMISED_PER_FLUSH = 50;

/**
 * The supervisor's event log in the worker_log table (what `grapevine log`
 * reads), mirrored to pino. Appends are buffered and written in one
 * statement per flush, so logging every job start and finish costs one
 * insert per batch, not per job.
 */
export class SupervisorLog {
  private readonly o: Required<SupervisorLogOptions>;
  // Owned by the main thread.
  private buffer: Entry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private dropped = 0;
  /** Per-job entries itemised in the current flush window, and those only counted. */
  private itemised = 0;
  private readonly uncounted = { started: 0, finished: 0 };
  private closed = false;
  private readonly warn = throttled(5_000);

  constructor(options: SupervisorLogOptions) {
    this.o = { flushMs: 100, maxBuffered: 10_000, ...options };
  }

  append(event: SupervisorEvent, detail?: string | null, thread?: number | null): void {
    this.push({ at: new Date().toISOString(), event, thread: thread ?? null, detail: detail ?? null });
  }

  /**
   * Jobs that started together (one claim) or ended together. An ended
   * job's outcome is written by its thread, which reports only "done" (or
   * dies): TASK_END is resolved to TASK_COMPLETE or TASK_ERROR from the jobs
   * table when the log is flushed (succeeded with no later attempt started).
   * Past the per-flush allowance jobs are only counted, decided once per
   * call: on a busy supervisor this runs for every batch.
   */
  jobs(event: 'TASK_START' | 'TASK_END', jobs: readonly JobRef[]): void {
    let itemise = jobs.length;
    // With debug on, pino gets every event and push() does the counting.
    if (!this.closed && !this.o.logger.isLevelEnabled('debug')) {
      itemise = Math.max(0, Math.min(jobs.length, ITEMISED_PER_FLUSH - this.itemised));
      const counted = jobs.length - itemise;
      if (counted > 0) {
        if (event === 'TASK_START') this.uncounted.started += counted;
        else this.uncounted.finished += counted;
        this.schedule();
      }
    }
    if (itemise === 0) return;
    const at = new Date().toISOString();
    for (let i = 0; i < itemise; i++) {
      const job = jobs[i];
      const detail = `${job.id} ${job.task}`;
      this.push(
        event === 'TASK_START'
          ? { at, event, thread: job.threadId, detail }
          : { at, event, thread: job.threadId, detail, job: job.id, attempt: job.attempt, succeeded: job.succeeded },
      );
    }
  }

  private push(entry: Entry): void {
    const { event } = entry;
    const quiet = QUIET_EVENTS.has(event);
    if (!quiet || this.o.logger.isLevelEnabled('debug')) {
      const fields = { event, ...(entry.thread !== null ? { threadId: entry.thread } : {}) };
      const line = entry.detail === null ? event : `${event} ${entry.detail}`;
      if (quiet) this.o.logger.debug(fields, line);
      else this.o.logger.info(fields, line);
    }
    if (this.closed) return;
    if (quiet && ++this.itemised > ITEMISED_PER_FLUSH) {
      if (event === 'TASK_START') this.uncounted.started++;
      else this.uncounted.finished++;
      this.schedule();
      return;
    }
    this.buffer.push(entry);
    if (this.buffer.length > this.o.maxBuffered) {
      this.dropped += this.buffer.length - this.o.maxBuffered;
      this.buffer.splice(0, this.buffer.length - this.o.maxBuffered);
    }
    this.schedule();
  }

  /** Writes everything buffered so far. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => {});
    if (this.buffer.length === 0 && this.uncounted.started + this.uncounted.finished === 0) return;
    await this.writeWith((entries) => appendLog(this.o.pool, this.o.schema, { supervisor: this.o.supervisor, entries }));
  }

  /**
   * Hands what is buffered (a JSON array, possibly empty) to `write`, which
   * stores it as part of another statement; entries come back to the buffer
   * if it fails. Writes never overlap, so the log keeps its order.
   */
  async writeWith(write: (entries: string) => Promise<unknown>): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => {});
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const entries = this.buffer;
    this.buffer = [];
    this.itemised = 0;
    const at = new Date().toISOString();
    if (this.uncounted.started > 0) {
      entries.push({
        at,
        event: 'TASK_START',
        thread: null,
        detail: `and ${this.uncounted.started} more jobs (not itemised at this rate)`,
      });
    }
    if (this.uncounted.finished > 0) {
      entries.push({
        at,
        event: 'TASK_COMPLETE',
        thread: null,
        detail: `and ${this.uncounted.finished} more jobs finished (not itemised at this rate; see the jobs table)`,
      });
    }
    this.uncounted.started = 0;
    this.uncounted.finished = 0;
    this.flushing = this.write(entries, write).finally(() => {
      this.flushing = null;
      // Entries appended while this write was under way.
      if (this.buffer.length > 0 && !this.closed) this.schedule();
    });
    await this.flushing;
  }

  /** Final flush; later appends only reach pino. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.flush().catch(() => {});
  }

  private schedule(): void {
    if (this.timer || this.flushing) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush().catch(() => {});
    }, this.o.flushMs);
    this.timer.unref();
  }

  private async write(entries: Entry[], write: (entries: string) => Promise<unknown>): Promise<void> {
    try {
      await write(JSON.stringify(entries));
      if (this.dropped > 0) {
        this.o.logger.warn({ dropped: this.dropped }, 'supervisor log entries were dropped while the database was away');
        this.dropped = 0;
      }
    } catch (err) {
      // Put them back in front, in order; the next flush retries.
      this.buffer = entries.concat(this.buffer);
      if (this.buffer.length > this.o.maxBuffered) {
        this.dropped += this.buffer.length - this.o.maxBuffered;
        this.buffer.splice(0, this.buffer.length - this.o.maxBuffered);
      }
      this.warn((suppressed) =>
        this.o.logger.warn({ err: (err as Error).message, suppressed }, 'could not write the supervisor log; will retry'),
      );
      if (!this.closed && !this.timer) {
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.flush().catch(() => {});
        }, 1_000);
        this.timer.unref();
      }
      throw err;
    }
  }
}
