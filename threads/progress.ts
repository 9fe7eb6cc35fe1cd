import type pg from 'pg';
import type { Logger } from 'pino';
import { GrapevineError } from '../src/errors.ts';
import { throttledWarnings } from '../src/log.ts';
import { writeProgress, type ProgressUpdate } from '../src/sql/progress.ts';
import { LOST_IN_JSON_FIX, lostInJson, unstorableInJson } from '../src/text.ts';
import { isDataError } from './outcomes.ts';

/** The largest progress value stored, in bytes of JSON: progress is a hint for a watcher, not a place for data. */
export const MAX_PROGRESS_BYTES = 4_096;

/**
 * A progress value as JSON text, or GRAPEVINE_PROGRESS_INVALID naming what is
 * wrong with it. Checked in the handler's own call, so the mistake surfaces
 * where it was made rather than in a later write.
 */
export function progressJson(value: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new GrapevineError(
      'GRAPEVINE_PROGRESS_INVALID',
      `progress is not JSON-serializable (${(err as Error).message}): pass a number or a small plain object`,
    );
  }
  if (json === undefined)
    throw new GrapevineError(
      'GRAPEVINE_PROGRESS_INVALID',
      `progress is not JSON (got ${typeof value}): pass a number or a small plain object`,
    );
  const lost = lostInJson(value, json);
  if (lost !== null)
    throw new GrapevineError('GRAPEVINE_PROGRESS_INVALID', `progress holds a ${lost}, which JSON stores as {}: ${LOST_IN_JSON_FIX}`);
  if (json.length * 3 > MAX_PROGRESS_BYTES) {
    const bytes = Buffer.byteLength(json);
    if (bytes > MAX_PROGRESS_BYTES) {
      throw new GrapevineError(
        'GRAPEVINE_PROGRESS_INVALID',
        `progress is ${bytes} bytes of JSON, over the ${MAX_PROGRESS_BYTES}-byte limit: report a number or a few fields (e.g. { done: 40, total: 100 }), and store data elsewhere`,
      );
    }
  }
  const refused = unstorableInJson(json);
  if (refused !== null) {
    throw new GrapevineError(
      'GRAPEVINE_PROGRESS_INVALID',
      'nul' in refused
        ? 'progress holds a NUL character (\\u0000), which PostgreSQL cannot store in jsonb'
        : `progress holds a lone UTF-16 surrogate (\\u${refused.surrogate}): cut strings on code-point boundaries`,
    );
  }
  return json;
}

interface Entry extends ProgressUpdate {
  /** The claim's commit (threads/claim.ts): nothing is written for a claim that may have rolled back. */
  committed: Promise<Error | null>;
}

/**
 * Writes the thread's jobs' progress, throttled: at most one statement per
 * `intervalMs` for all of the thread's jobs together, each with its latest
 * value (values set in between replace each other). A job's last value goes
 * with its outcome (take), so it is never lost to the throttle and costs no
 * statement of its own. Writes run one at a time, so a later value never
 * lands before an earlier one.
 */
export class ProgressWriter {
  private pending = new Map<string, Entry>();
  private timer: NodeJS.Timeout | null = null;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  private flushing: Promise<void> | null = null;
  /** The entries of the write in flight, by job id. */
  private inflight: ReadonlyMap<string, Entry> = new Map();
  private readonly warn = throttledWarnings(5_000);
  private readonly pool: pg.Pool;
  private readonly schema: string;
  private readonly intervalMs: number;
  private readonly logger: Logger;

  constructor(pool: pg.Pool, schema: string, intervalMs: number, logger: Logger) {
    this.pool = pool;
    this.schema = schema;
    this.intervalMs = intervalMs;
    this.logger = logger;
  }

  /** The job's latest value, written at the next flush. */
  set(id: string, token: string, progress: string, committed: Promise<Error | null>): void {
    this.pending.set(id, { id, token, progress, committed });
    this.schedule();
  }

  /**
   * When the job's handler has returned: its last value (JSON text) for its
   * outcome's write to store, or undefined if it reported none. A value
   * still in a progress write in flight is handed over too: that write,
   * should it land after the outcome, finds the job no longer running.
   */
  take(id: string): string | undefined {
    const entry = this.pending.get(id);
    if (entry) {
      this.pending.delete(id);
      return entry.progress;
    }
    return this.inflight.get(id)?.progress;
  }

  private schedule(): void {
    if (this.timer || this.flushing) return;
    const wait = Math.max(0, this.lastFlushAt + this.intervalMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, wait);
  }

  private flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending.size === 0) return Promise.resolve();
    this.inflight = this.pending;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    this.lastFlushAt = performance.now();
    const flushing = this.write(batch).finally(() => {
      this.flushing = null;
      this.inflight = new Map();
      if (this.pending.size > 0) this.schedule();
    });
    this.flushing = flushing;
    return flushing;
  }

  private async write(batch: Entry[]): Promise<void> {
    const commits = await Promise.all(batch.map((e) => e.committed));
    const confirmed = batch.filter((_, i) => commits[i] === null);
    if (confirmed.length === 0) return;
    try {
      const rejected = await writeProgress(this.pool, this.schema, { updates: confirmed });
      if (rejected.length > 0) this.logger.debug({ jobs: rejected }, 'progress not stored: the job is no longer this run’s');
    } catch (err) {
      if (isDataError(err)) {
        // Refused for what it holds, it would be refused again: dropped.
        this.logger.warn(
          { err: (err as Error).message, jobs: confirmed.map((e) => e.id) },
          'job progress refused by PostgreSQL; not stored',
        );
        return;
      }
      // Values set since replace these; the others go out again with the next
      // write (unless their jobs' outcomes took them meanwhile: then fenced).
      for (const e of confirmed) if (!this.pending.has(e.id)) this.pending.set(e.id, e);
      this.warn(this.logger, { err: (err as Error).message, jobs: confirmed.length }, 'could not store job progress; retrying');
    }
  }
}
