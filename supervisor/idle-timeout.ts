/**
 * Stops the supervisor once no job has started or finished for the idle
 * timeout (the idleTimeoutMs option; TIMEOUT_SET changes it). Only jobs
 * count as activity: a busy supervisor is never idle, and control messages
 * do not reset the clock.
 */
import type { Logger } from 'pino';
import { throttledWarnings } from '../src/log.ts';
import type { SupervisorLog } from './supervisor-log.ts';

export interface IdleTimeoutHost {
  logger: Logger;
  log: Pick<SupervisorLog, 'append'>;
  /** Jobs queued for or running on the threads. */
  inFlight(): number;
  /** When a job last started or finished (epoch ms; 0 = never). */
  lastJobAt(): number;
  isPaused(): boolean;
  /** Whether the table holds jobs due for this supervisor. */
  hasDue(): Promise<boolean>;
  markBacklog(): void;
  stop(reason: string): void;
}

// How soon a busy supervisor, or one that just found due work, looks again.
const BUSY_RECHECK_MS = 200;
const FAILED_CHECK_RETRY_MS = 1_000;

export class IdleTimeout {
  private readonly host: IdleTimeoutHost;
  private readonly startedAt = Date.now();
  private timeoutMs: number | null;
  private timer: NodeJS.Timeout | null = null;
  private ended = false;
  private readonly warnDb = throttledWarnings(5_000);

  constructor(host: IdleTimeoutHost, timeoutMs: number | null) {
    this.host = host;
    this.timeoutMs = timeoutMs;
  }

  /** The timeout in ms (null: none). */
  get ms(): number | null {
    return this.timeoutMs;
  }

  start(): void {
    this.schedule();
  }

  /** A new timeout (null: none), counted from the last job as before. */
  set(timeoutMs: number | null): void {
    this.timeoutMs = timeoutMs;
    this.schedule();
  }

  /** For good: the supervisor is stopping. Safe to call more than once, and before start(). */
  stop(): void {
    this.ended = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** How long until the supervisor stops if no job comes (null: no timeout). */
  remainingMs(): number | null {
    if (this.timeoutMs === null) return null;
    if (this.host.inFlight() > 0) return this.timeoutMs;
    const since = Math.max(this.host.lastJobAt(), this.startedAt);
    return Math.max(0, this.timeoutMs - (Date.now() - since));
  }

  private schedule(delayMs?: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const remaining = this.remainingMs();
    if (remaining === null || this.ended) return;
    const delay = delayMs ?? (this.host.inFlight() > 0 ? BUSY_RECHECK_MS : remaining);
    this.timer = setTimeout(() => void this.check(), Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }

  private async check(): Promise<void> {
    const { host } = this;
    this.timer = null;
    const remaining = this.remainingMs();
    if (remaining === null || this.ended) return;
    if (host.inFlight() > 0 || remaining > 0) return this.schedule();
    if (!host.isPaused()) {
      // Idle, but maybe only because nobody told us about due work: take it first.
      try {
        if (await host.hasDue()) {
          host.markBacklog();
          return this.schedule(BUSY_RECHECK_MS);
        }
      } catch (err) {
        this.warnDb(host.logger, { err: (err as Error).message }, 'idle check failed');
        return this.schedule(FAILED_CHECK_RETRY_MS);
      }
    }
    if (this.ended || this.timeoutMs === null || host.inFlight() > 0) return this.schedule();
    const idleFor = (Date.now() - Math.max(host.lastJobAt(), this.startedAt)) / 1000;
    host.log.append('TIMEOUT', `no job for ${idleFor.toFixed(1)} s (idle timeout ${this.timeoutMs / 1000} s)`);
    host.stop('idle timeout');
  }
}
