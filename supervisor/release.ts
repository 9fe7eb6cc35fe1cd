/**
 * Giving jobs back to the queue from the supervisor's side: the jobs a dead
 * thread or a shutdown leaves behind, retried while the database is away
 * (the lease is the last resort), and the claims a thread committed but
 * never reported.
 */
import type pg from 'pg';
import { backoffMs } from '../src/backoff.ts';
import { withPipelinedTransaction } from '../src/db.ts';
import { throttledWarnings, type Logger } from '../src/log.ts';
import { redactSecret } from '../src/redact.ts';
import { lockJobsQuery, releaseJobsQuery, releaseUnreported, type ReleasedRow } from '../src/sql/jobs.ts';
import type { Release } from './dispatcher.ts';

export interface ReleaseOptions {
  id: string;
  schema: string;
  connectionString: string;
  /** Must pipeline: a release sends its transaction in one go. */
  pool: pg.Pool;
  logger: Logger;
}

/** Attempts before a release is left to the lease. */
const ATTEMPTS = 10;

export class JobRelease {
  private readonly o: ReleaseOptions;
  private readonly warnDb = throttledWarnings(1_000);

  constructor(options: ReleaseOptions) {
    this.o = options;
  }

  /**
   * Gives jobs back to the queue, retrying while the database is away; the
   * lease is the last resort. What the release changed, or null if it was
   * left to the lease (nobody knows then how those jobs end).
   */
  async release(released: Release[]): Promise<ReleasedRow | null> {
    const { pool, schema, id, logger } = this.o;
    // A crash reason is the handler's own error text, which may echo the connection string.
    const jobs = released.map((j) => ({ ...j, reason: redactSecret(j.reason, this.o.connectionString) }));
    const ids = jobs.map((j) => j.id);
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      try {
        // The lock waits for a claim the dead thread was still committing;
        // the release, a statement of its own, then sees that claim. Sent
        // together: a release is what a crashed job's re-run waits for.
        const [, rows] = await withPipelinedTransaction(pool, [
          lockJobsQuery(schema, { ids }),
          releaseJobsQuery(schema, { owner: id, jobs }),
        ]);
        const row = rows[0] ?? { ids: [], failed: [], cancelled: [] };
        const done = new Set(row.ids);
        const back = jobs.filter((j) => done.has(j.id));
        if (back.length > 0) logger.warn({ jobs: back.map((j) => ({ id: j.id, reason: j.reason })) }, 'released jobs back to the queue');
        return row;
      } catch (err) {
        this.warnDb(logger, { err: (err as Error).message }, 'release failed; retrying');
        await new Promise((r) => setTimeout(r, backoffMs({ attempt, baseMs: 100, maxMs: 2_000 })));
      }
    }
    logger.error({ jobs: ids }, 'could not release jobs; their leases will expire and the reaper will return them');
    return null;
  }

  /** Returns to the queue what this supervisor (one thread of it, or all with null) claimed and never reported; the ids released. */
  unreported(threadId: number | null, reason: string, count: boolean): Promise<string[]> {
    return releaseUnreported(this.o.pool, this.o.schema, { owner: this.o.id, thread: threadId, reason, count });
  }

  /**
   * The dispatcher releases the jobs a dead thread reported. A claim that
   * committed just as the thread died was never reported; look for those a
   * little later (after the dispatcher's own releases, which carry the better
   * reasons) instead of leaving them to the lease.
   */
  afterThreadDeath(threadId: number, code: number): void {
    const reason = `thread ${threadId} exited (code ${code}) after claiming this job`;
    // Late enough that the dispatcher's own release (with the real reason) has normally run.
    for (const delay of [1_000, 3_000]) {
      setTimeout(() => {
        this.unreported(threadId, reason, true).then(
          (ids) => {
            if (ids.length > 0) this.o.logger.warn({ threadId, jobs: ids }, 'released jobs a dead thread claimed but never reported');
          },
          () => {}, // the lease still covers them
        );
      }, delay).unref();
    }
  }
}
