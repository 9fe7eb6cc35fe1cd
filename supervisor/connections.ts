/**
 * A supervisor's connections as operators see them (status(), INFO, the
 * registry row that `grapevine supervisors` prints), and the warning when
 * its threads wait for one: the budget is too small for what they do.
 */
import type pg from 'pg';
import type { ConnectionBudget, BudgetSplit } from '../src/connection-budget.ts';
import { throttled, type Logger } from '../src/log.ts';
import { Periodic } from './periodic.ts';

/** What status() reports under `connections`. */
export interface ConnectionUsage {
  /** Open now: the supervisor's own and its threads', LISTEN aside. */
  inUse: number;
  /** maxConnections. */
  max: number;
  /** The LISTEN connection (0 in poll mode or while it reconnects). */
  listen: number;
  /** Requests for a connection that wait now because the budget is full. */
  waiting: number;
}

/** A wait shorter than this is a thread taking its turn, not worth a warning. */
const WARN_AFTER_MS = 2_000;
const CHECK_MS = 500;
/** At most one warning this often, however long the waits go on. */
const WARN_EVERY_MS = 60_000;

export class ConnectionWatch {
  private readonly pool: pg.Pool;
  private readonly budget: ConnectionBudget;
  private readonly split: BudgetSplit & { max: number };
  private readonly listening: () => boolean;
  private readonly logger: Logger;
  private readonly check: Periodic;
  private readonly warn = throttled(WARN_EVERY_MS);
  private waitingSince: number | null = null;

  constructor(options: {
    pool: pg.Pool;
    budget: ConnectionBudget;
    split: BudgetSplit & { max: number };
    listening: () => boolean;
    logger: Logger;
  }) {
    this.pool = options.pool;
    this.budget = options.budget;
    this.split = options.split;
    this.listening = options.listening;
    this.logger = options.logger;
    this.check = new Periodic(CHECK_MS, async () => this.look());
  }

  usage(): ConnectionUsage {
    return {
      inUse: this.pool.totalCount + this.budget.inUse(),
      max: this.split.max,
      listen: this.listening() ? 1 : 0,
      waiting: this.budget.waiting() + this.pool.waitingCount,
    };
  }

  start(): void {
    this.check.start();
  }

  stop(): void {
    this.check.stop();
  }

  private look(): void {
    const waiting = this.budget.waiting();
    if (waiting === 0) {
      this.waitingSince = null;
      return;
    }
    this.waitingSince ??= Date.now();
    if (Date.now() - this.waitingSince < WARN_AFTER_MS) return;
    const { max, threads, handlers } = this.split;
    this.warn((suppressed) =>
      this.logger.warn(
        { waiting, maxConnections: max, threadConnections: threads, handlerConnections: this.budget.handlersInUse(), suppressed },
        `threads are waiting for a database connection: all ${threads} of the threads' share of maxConnections (${max}) are open ` +
          `(handlers hold ${this.budget.handlersInUse()} of at most ${handlers}). Jobs wait rather than fail; ` +
          'raise maxConnections (--max-connections) if the server has room, or run fewer threads',
      ),
    );
  }
}
