import type pg from 'pg';
import type { Logger } from 'pino';
import { backoffMs } from '../src/backoff.ts';
import { isDataError } from '../src/db.ts';
import { serializeError, storedErrorText, type ErrorCode } from '../src/errors.ts';
import { completeJobs, deleteSucceeded, failJobs, type CompletedJob, type FailedJob, type RecordedOutcomes } from '../src/sql/jobs.ts';
import { LOST_IN_JSON_FIX, lostInJson, storableText, unstorableInJson } from '../src/text.ts';

export { isDataError };

// `progress`: the job's last helpers.progress() value not yet stored, written with the outcome.
export type Outcome =
  | { kind: 'success'; id: string; token: string; result: string; progress?: string }
  | {
      kind: 'failure';
      id: string;
      token: string;
      error: string;
      retryable: boolean;
      /** From the task's retry policy (retry-policy.ts): the job's attempts and the delay before its retry. */
      maxAttempts?: number;
      delayMs?: number;
      progress?: string;
    }
  /** A success the handler's exactly-once transaction already committed (threads/helpers.ts): nothing left to write. */
  | { kind: 'committed'; id: string; token: string; result: string };

/**
 * Hears what became of the outcomes it handed in: one object per batch, not
 * a promise per job (a promise, its executor and its resolvers are a large
 * part of what a short job allocates).
 */
export interface OutcomeSink {
  /**
   * Called once per recorded outcome: accepted is false if the fence turned
   * it away; cancelled, if it was recorded as a cancel (one was asked for
   * while the handler ran, before its owner heard of it).
   */
  recorded(outcome: Outcome, accepted: boolean, cancelled?: boolean): void;
}

interface Pending {
  /** Replaced by a failure when PostgreSQL refuses to store it (see park). */
  outcome: Outcome;
  sink: OutcomeSink;
  /** Its sink has heard: not part of a retry. */
  settled?: boolean;
}

/**
 * Collects the outcomes of jobs that finish close together and writes them in
 * one statement per kind. While one write is in flight, new outcomes queue up
 * and go out together in the next, so the batch grows with the load. A write
 * that fails (database down) is retried with backoff: an outcome is never
 * dropped, and if the claim was lost meanwhile the fence rejects it. A write
 * refused for a value it holds is split instead, so that one job's outcome
 * cannot hold up the others (see writeKind).
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
    if (outcome.kind === 'committed') {
      sink.recorded(outcome, true);
      return;
    }
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
    const [successError, failureError] = await Promise.all([
      this.writeKind(batch.filter((p) => p.outcome.kind === 'success')),
      this.writeKind(batch.filter((p) => p.outcome.kind === 'failure')),
    ]);
    const err = successError ?? failureError;
    this.flushing = false;
    if (err === null) {
      this.failures = 0;
      if (this.queue.length > 0) this.schedule(0);
      return;
    }
    // The statements are idempotent under the fence, so what is not settled can be retried.
    this.failures++;
    this.queue = retryFirst(batch, this.queue);
    const delay = backoffMs({ attempt: this.failures, baseMs: 50, maxMs: 2_000 });
    if (this.failures === 1 || this.failures % 20 === 0) {
      this.logger.warn({ err: (err as Error).message, jobs: batch.length }, 'could not record job outcomes; retrying');
    }
    this.schedule(delay);
  }

  /**
   * Writes outcomes of one kind together, and settles them. A write refused
   * for a value it holds (isDataError) would be refused again, so it is not
   * retried as it was: each outcome is written on its own, and one still
   * refused fails its job instead (park). Returns the error to retry the
   * unsettled outcomes on, or null.
   */
  private async writeKind(items: Pending[]): Promise<unknown> {
    if (items.length === 0) return null;
    try {
      await this.write(items);
      return null;
    } catch (err) {
      if (!isDataError(err)) return err;
      const left = items.filter((p) => !p.settled);
      if (left.length === 1) return this.park(left[0], err);
      for (const p of left) {
        const refused = await this.write([p]).then(
          () => null,
          (alone: unknown) => alone,
        );
        const retry = refused === null || !isDataError(refused) ? refused : await this.park(p, refused);
        // A connection error: the rest wait for the retry with this one.
        if (retry !== null) return retry;
      }
      return null;
    }
  }

  /** One statement for outcomes of one kind; their sinks hear whether the fence accepted each. */
  private async write(items: Pending[]): Promise<void> {
    let written: RecordedOutcomes;
    if (items[0].outcome.kind === 'success') {
      written = await this.writeSuccesses(items);
    } else {
      const jobs = items.map(({ outcome: o }) => {
        const f = o as Extract<Outcome, { kind: 'failure' }>;
        return {
          id: f.id,
          token: f.token,
          error: f.error,
          retryable: f.retryable,
          max_attempts: f.maxAttempts,
          delay_ms: f.delayMs,
          progress: f.progress,
        } satisfies FailedJob;
      });
      written = await failJobs(this.pool, this.schema, { jobs, retryBaseMs: this.options.baseMs, retryMaxMs: this.options.maxMs });
    }
    const fenced = written.rejected.length === 0 ? null : new Set(written.rejected);
    const cancelled = written.cancelled.length === 0 ? null : new Set(written.cancelled);
    // Indexed loops here: this runs once per write, too rarely for V8 to
    // optimise away a for-of's iterator, which then allocates per element.
    for (let i = 0; i < items.length; i++) {
      const p = items[i];
      if (p.settled) continue;
      p.settled = true;
      p.sink.recorded(p.outcome, !fenced?.has(p.outcome.id), cancelled?.has(p.outcome.id) === true);
    }
  }

  /**
   * Fails the job whose outcome PostgreSQL refused, fenced on its claim like
   * any outcome, with a description of the refusal in place of the value.
   * Not retried: the handler would most likely return the same again.
   * Returns the error to retry on (the description itself is always
   * storable), or null.
   */
  private async park(p: Pending, refusal: unknown): Promise<unknown> {
    const { id, token, kind } = p.outcome;
    const error = refusedOutcomeText(kind, refusal);
    this.logger.warn({ jobId: id, err: error }, 'a job outcome could not be stored; the job failed instead');
    p.outcome = { kind: 'failure', id, token, error, retryable: false };
    return this.write([p]).then(
      () => null,
      (err: unknown) => err,
    );
  }

  /**
   * Records successes; with deleteSucceeded, deletes them first and records
   * only those the delete left (someone waits for them, a cancel was asked,
   * or the fence turned them away — `complete` then sorts those out).
   * Returns what completeJobs does.
   */
  private async writeSuccesses(successes: Pending[]): Promise<RecordedOutcomes> {
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
      if (record.length === 0) return NOTHING_RECORDED;
    }
    // The outcomes themselves: a success is a CompletedJob, and a copy per job would cost an object each.
    const jobs: CompletedJob[] = record.map((p) => p.outcome as Extract<Outcome, { kind: 'success' }>);
    return completeJobs(this.pool, this.schema, { jobs });
  }
}

const NOTHING_RECORDED: RecordedOutcomes = { rejected: [], cancelled: [] };

/** The longest description of a refusal kept: PostgreSQL's detail may quote part of the value. */
const MAX_REFUSAL_CHARS = 2_000;

/** What a parked job's last_error says: which field, and why PostgreSQL (or the write) refused it. */
export function refusedOutcomeText(kind: Outcome['kind'], refusal: unknown): string {
  const field = kind === 'success' ? 'result' : 'error';
  const e = (refusal ?? {}) as { code?: unknown; message?: unknown; detail?: unknown; name?: unknown };
  const why =
    typeof e.code === 'string'
      ? `PostgreSQL refused it with ${e.code}: ${String(e.message)}${typeof e.detail === 'string' ? ` (${e.detail})` : ''}`
      : `${String(e.name)}: ${String(e.message)}`;
  return storedErrorText(
    kind === 'success' ? 'GRAPEVINE_RESULT_UNSTORABLE' : 'GRAPEVINE_ERROR_UNSTORABLE',
    storableText(
      `the job's ${field} could not be stored, ${why}; this description replaces it, and the job failed without a retry`,
      MAX_REFUSAL_CHARS,
    ),
  );
}

/**
 * Why a result's JSON cannot be stored, as the job's error, or null if it
 * can: over `maxResultBytes`, or holding what jsonb refuses. Checked here,
 * before the write, so that the batch it would share is written as usual;
 * whatever slips through is caught by the write itself (writeKind).
 */
export function unstorableResult(json: string, maxResultBytes: number): string | null {
  const why = unstorableReason(json, maxResultBytes);
  return why === null ? null : storedErrorText(why.code, why.message);
}

/** A value a handler returned, as the JSON text to store, or why it cannot be stored. */
export function resultJson(value: unknown, maxResultBytes: number): string | { code: ErrorCode; message: string } {
  const json = toJson(value);
  if (json instanceof Error) return { code: 'GRAPEVINE_RESULT_UNSTORABLE', message: json.message };
  return unstorableReason(json, maxResultBytes) ?? json;
}

/** The handler's return value as JSON text, or an error naming why it cannot be stored. */
export function toJson(value: unknown): string | Error {
  if (value === undefined) return 'null';
  try {
    const text = JSON.stringify(value);
    if (text === undefined) return new Error(`result is not JSON-serializable: handler returned a ${typeof value}`);
    const lost = lostInJson(value, text);
    if (lost !== null)
      return new Error(`result is not JSON-serializable: it holds a ${lost}, which JSON stores as {}: ${LOST_IN_JSON_FIX}`);
    return text;
  } catch (err) {
    // A toJSON() may throw anything, null included.
    return new Error(`result is not JSON-serializable: ${serializeError(err).message}`);
  }
}

function unstorableReason(json: string, maxResultBytes: number): { code: ErrorCode; message: string } | null {
  // A UTF-16 unit takes one to three bytes: a short result needs no count.
  if (json.length * 3 > maxResultBytes) {
    const bytes = Buffer.byteLength(json);
    if (bytes > maxResultBytes) {
      return {
        code: 'GRAPEVINE_RESULT_TOO_LARGE',
        message:
          `the result is ${bytes} bytes of JSON, over maxResultBytes (${maxResultBytes} bytes), so it was not stored: ` +
          'store large data elsewhere and return a reference to it, or raise maxResultBytes',
      };
    }
  }
  const refused = unstorableInJson(json);
  if (refused === null) return null;
  if ('nul' in refused) {
    return {
      code: 'GRAPEVINE_RESULT_UNSTORABLE',
      message:
        'the result holds a NUL character (\\u0000), which PostgreSQL cannot store in jsonb, so it was not stored: ' +
        'remove it, or return binary data encoded (base64, hex)',
    };
  }
  return {
    code: 'GRAPEVINE_RESULT_UNSTORABLE',
    message:
      `the result holds a lone UTF-16 surrogate (\\u${refused.surrogate} without its other half, often a string cut inside an emoji), ` +
      'which PostgreSQL cannot store in jsonb, so it was not stored: cut strings on code-point boundaries',
  };
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
