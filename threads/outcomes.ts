import type pg from 'pg';
import type { Logger } from 'pino';
import { backoffMs } from '../src/backoff.ts';
import { completeJobs, deleteSucceeded, failJobs, type CompletedJob, type FailedJob } from '../src/sql/jobs.ts';

export type Outcome =
  | { kind: 'success'; id: string; token: string; result: string }
  | { kind: 'failure'; id: string; token: string; error: string; retryable: boolean };

/**
 * Hears what became of the outcomes it handed in: one object per batch, not
 * a promise per job (a promise, its executor and its resolvers were a tenth
 * of what a short job allocates).
 */
export interface OutcomeSink {
  /** Called once per recorded outcome: accepted is false if the fence turned it away. */
  recorded(outcome: Outcome, accepted: boolean): void;
}

interface Pending {
  outcome: Outcome;
  sink: OutcomeSink;
  /** Settled already (deleted as succeeded): not part of a retry. */
  settled?: boolean;
}

/**
 * Collects the outcomes of jobs that finish close together and writes them in
 * one statement per kind. While one write is in flight, new outcomes queue up
 * and go out together in the next, so the batch grows with the load. A write
 * that fails (database down) is retried with backoff: an outcome is never
 * dropped, and if the claim was lost meanwhile the fence rejects it.
 */
export class OutcomeWriter {
  private queue: Pending[] = [];
  private flushing = false;
  private scheduled = false;
  private failures = 0;

  private readonly pool: pg.Pool;
  private readonly options: { baseMs: number; maxMs: number; deleteSucceeded: boolean };
  private readonly logger: Logger;
  private readonly schema: string;

  constructor(pool: pg.Pool, schema: string, options: { baseMs: number; maxMs: number; deleteSucceeded: boolean }, logger: Logger) {
    this.pool = pool;
    this.options = options;
    this.logger = logger;
    this.schema = schema;
  }

  /** Queues an outcome; `sink.recorded` hears whether the fence accepted it, once it is written. */
  record(outcome: Outcome, sink: OutcomeSink): void {
    this.queue.push({ outcome, sink });
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    const go = () => {
      this.scheduled = false;
      void this.flush();
    };
    if (delayMs > 0) setTimeout(go, delayMs);
    else setImmediate(go);
  }

  private async flush(): Promise<void> {
    if (this.queue.length === 0) return;
    this.flushing = true;
    const batch = this.queue;
    this.queue = [];
    const successes = batch.filter((p) => p.outcome.kind === 'success');
    const failures = batch.filter((p) => p.outcome.kind === 'failure');
    try {
      const rejected = new Set<string>();
      const writes: Promise<void>[] = [];
      if (successes.length > 0) writes.push(this.writeSuccesses(successes, rejected));
      if (failures.length > 0) {
        const jobs = failures.map(({ outcome: o }) => {
          const f = o as Extract<Outcome, { kind: 'failure' }>;
          return { id: f.id, token: f.token, error: f.error, retryable: f.retryable } satisfies FailedJob;
        });
        writes.push(
          failJobs(this.pool, this.schema, { jobs, retryBaseMs: this.options.baseMs, retryMaxMs: this.options.maxMs }).then((ids) => this.collect(ids, rejected)),
        );
      }
      await Promise.all(writes);
      this.failures = 0;
      // Indexed loops here: this runs once per write, too rarely for V8 to
      // optimise away a for-of's iterator, which then allocates per element.
      for (let i = 0; i < batch.length; i++) {
        const p = batch[i];
        if (!p.settled) p.sink.recorded(p.outcome, !rejected.has(p.outcome.id));
      }
    } catch (err) {
      // The statements are idempotent under the fence, so what is not settled can be retried.
      this.failures++;
      this.queue = retryFirst(batch, this.queue);
      const delay = backoffMs({ attempt: this.failures, baseMs: 50, maxMs: 2_000 });
      if (this.failures === 1 || this.failures % 20 === 0) {
        this.logger.warn({ err: (err as Error).message, jobs: batch.length }, 'could not record job outcomes; retrying');
      }
      this.flushing = false;
      this.schedule(delay);
      return;
    }
    this.flushing = false;
    if (this.queue.length > 0) this.schedule(0);
  }

  /**
   * Records successes; with deleteSucceeded, deletes them first and records
   * only those the delete left (someone waits for them, a cancel was asked,
   * or the fence turned them away — `complete` then sorts those out).
   */
  private async writeSuccesses(successes: Pending[], rejected: Set<string>): Promise<void> {
    let record = successes;
    if (this.options.deleteSucceeded) {
      const { once, repeats } = oncePerJob(successes);
      record = repeats;
      const ids: string[] = new Array(once.length);
      const tokens: string[] = new Array(once.length);
      for (let i = 0; i < once.length; i++) {
        ids[i] = once[i].outcome.id;
        tokens[i] = once[i].outcome.token;
      }
      const kept = new Set(await deleteSucceeded(this.pool, this.schema, { ids, tokens }));
      for (let i = 0; i < once.length; i++) {
        const p = once[i];
        if (kept.has(p.outcome.id)) {
          record.push(p);
        } else {
          // Deleted: settled now, so a failure of what follows cannot report it as rejected.
          p.settled = true;
          p.sink.recorded(p.outcome, true);
        }
      }
      if (record.length === 0) return;
    }
    // The outcomes themselves: a success is a CompletedJob, and a copy per job would cost an object each.
    const jobs: CompletedJob[] = record.map((p) => p.outcome as Extract<Outcome, { kind: 'success' }>);
    this.collect(await completeJobs(this.pool, this.schema, { jobs }), rejected);
  }

  private collect(ids: string[], rejected: Set<string>): void {
    for (const id of ids) rejected.add(id);
  }
}

/**
 * The delete pairs ids with tokens by position, so each id goes in once: a
 * second outcome for the same job (a stale claim) is left to `complete`,
 * whose fence sorts it out.
 */
export function oncePerJob<T extends { outcome: { id: string } }>(items: readonly T[]): { once: T[]; repeats: T[] } {
  const seen = new Set<string>();
  const once: T[] = [];
  const repeats: T[] = [];
  for (let i = 0; i < items.length; i++) {
    const p = items[i];
    if (seen.has(p.outcome.id)) repeats.push(p);
    else {
      seen.add(p.outcome.id);
      once.push(p);
    }
  }
  return { once, repeats };
}

/** After a failed write: its unsettled outcomes go out again first, before those that queued up meanwhile. */
export function retryFirst<T extends { settled?: boolean }>(failed: readonly T[], queued: readonly T[]): T[] {
  return failed.filter((p) => !p.settled).concat(queued);
}
