import type pg from 'pg';
import { validateName } from './config.ts';
import { GrapevineError } from './errors.ts';
import { configureQueue, listQueues, type QueueListRow, type QueueSettingsPatch, type QueueSettingsRow } from './sql/queues.ts';

/** N starts in any interval of `intervalMs`. */
export interface Rate {
  limit: number;
  intervalMs: number;
}

/**
 * What `setQueue()` changes (docs/limits.md). A field left out stays as it
 * is; null removes the limit. A rate is `{ limit, intervalMs }` or text
 * such as "10/1s", "100/m", "5/500ms".
 */
export interface QueueSettings {
  /** Jobs of the queue running at once across every supervisor. */
  concurrency?: number | null;
  /** Jobs of one group running at once; 1 makes each group serial, run in order. */
  groupConcurrency?: number | null;
  /** Starts of the queue's jobs in any interval. */
  rate?: Rate | string | null;
  /** Starts of one group's jobs in any interval. */
  groupRate?: Rate | string | null;
}

/** A queue's settings as stored. */
export interface QueueConfig {
  queue: string;
  concurrency: number | null;
  groupConcurrency: number | null;
  rate: Rate | null;
  groupRate: Rate | null;
  paused: boolean;
}

/** A queue with a setting or with jobs: its settings, its jobs by state and its oldest due job's wait. */
export interface QueueInfo extends QueueConfig {
  jobs: { pending: number; running: number; succeeded: number; failed: number; cancelled: number };
  /** Seconds since the oldest due pending job became due; null when none is due. */
  oldestPendingSeconds: number | null;
}

/** Queue settings shared by every supervisor, stored in the database: limits and a fleet-wide pause. */
export interface QueueOperations {
  /** Changes the queue's limits; answers with its settings as they now are. */
  setQueue(queue: string, settings: QueueSettings): Promise<QueueConfig>;
  /** No supervisor claims the queue's jobs until resumeQueue(); running jobs go on. Persisted. */
  pauseQueue(queue: string): Promise<QueueConfig>;
  resumeQueue(queue: string): Promise<QueueConfig>;
  /** Every queue with a setting or a job. */
  listQueues(): Promise<QueueInfo[]>;
}

const MAX_LIMIT = 1_000_000;
const MAX_INTERVAL_MS = 2_147_483_647;
const UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  sec: 1_000,
  second: 1_000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hour: 3_600_000,
};
const RATE = /^\s*(\d+)\s*\/\s*(\d*)\s*([a-z]+)\s*$/;

function invalid(message: string): GrapevineError {
  return new GrapevineError('GRAPEVINE_QUEUE_LIMIT_INVALID', message);
}

function limit(field: string, value: unknown): number | null {
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_LIMIT) {
    throw invalid(`${field} must be an integer from 1 to ${MAX_LIMIT} (or null to remove it), got ${JSON.stringify(value)}`);
  }
  return value;
}

/** "10/1s", "100/m", "5/500ms" (units ms, s, m, h) as a Rate; a clear error otherwise. */
export function parseRate(field: string, value: unknown): Rate | null {
  if (value === null) return null;
  if (typeof value === 'string') {
    const match = RATE.exec(value.toLowerCase());
    const unit = match ? UNITS[match[3]] : undefined;
    if (!match || unit === undefined) {
      throw invalid(`${field} must be N/INTERVAL such as 10/1s, 100/m or 5/500ms (units ms, s, m, h), got ${JSON.stringify(value)}`);
    }
    return parseRate(field, { limit: Number(match[1]), intervalMs: (match[2] === '' ? 1 : Number(match[2])) * unit });
  }
  if (typeof value !== 'object' || value === null) {
    throw invalid(`${field} must be N/INTERVAL text or { limit, intervalMs }, got ${JSON.stringify(value)}`);
  }
  const { limit: n, intervalMs } = value as Partial<Rate>;
  if (typeof intervalMs !== 'number' || !Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > MAX_INTERVAL_MS) {
    throw invalid(`${field}'s interval must be from 1 ms to ${MAX_INTERVAL_MS} ms, got ${JSON.stringify(intervalMs)}`);
  }
  return { limit: limit(`${field}'s limit`, n)!, intervalMs };
}

/** The stored fields a QueueSettings changes. */
export function settingsPatch(settings: QueueSettings): QueueSettingsPatch {
  if (typeof settings !== 'object' || settings === null) throw invalid(`queue settings must be an object, got ${JSON.stringify(settings)}`);
  const known = ['concurrency', 'groupConcurrency', 'rate', 'groupRate'];
  const unknown = Object.keys(settings).find((k) => !known.includes(k));
  if (unknown !== undefined) throw invalid(`unknown queue setting ${JSON.stringify(unknown)}: use ${known.join(', ')}`);
  const patch: QueueSettingsPatch = {};
  if (settings.concurrency !== undefined) patch.concurrency = limit('concurrency', settings.concurrency);
  if (settings.groupConcurrency !== undefined) patch.group_concurrency = limit('groupConcurrency', settings.groupConcurrency);
  if (settings.rate !== undefined) {
    const rate = parseRate('rate', settings.rate);
    patch.rate_limit = rate?.limit ?? null;
    patch.rate_interval_ms = rate?.intervalMs ?? null;
  }
  if (settings.groupRate !== undefined) {
    const rate = parseRate('groupRate', settings.groupRate);
    patch.group_rate_limit = rate?.limit ?? null;
    patch.group_rate_interval_ms = rate?.intervalMs ?? null;
  }
  if (Object.keys(patch).length === 0) throw invalid(`setQueue() needs at least one of ${known.join(', ')}`);
  return patch;
}

/** "10/1s"-style text for a rate, as grapevine queue list prints it. */
export function rateText(rate: Rate | null): string {
  if (rate === null) return '-';
  const { limit: n, intervalMs: ms } = rate;
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const) {
    if (ms % size === 0) return `${n}/${ms / size === 1 ? '' : ms / size}${unit}`;
  }
  return `${n}/${ms}ms`;
}

/** A queue's limits in a line ("concurrency 10, group 1, rate 5/s"), or null for none: the dashboard's. */
export function limitsText(row: QueueSettingsRow): string | null {
  const c = toConfig(row);
  const parts = [
    c.concurrency === null ? null : `concurrency ${c.concurrency}`,
    c.groupConcurrency === null ? null : `per group ${c.groupConcurrency}`,
    c.rate === null ? null : `rate ${rateText(c.rate)}`,
    c.groupRate === null ? null : `group rate ${rateText(c.groupRate)}`,
  ].filter((p) => p !== null);
  return parts.length > 0 ? parts.join(', ') : null;
}

function toConfig(row: QueueSettingsRow): QueueConfig {
  return {
    queue: row.queue,
    concurrency: row.concurrency,
    groupConcurrency: row.group_concurrency,
    rate: row.rate_limit === null ? null : { limit: row.rate_limit, intervalMs: row.rate_interval_ms! },
    groupRate: row.group_rate_limit === null ? null : { limit: row.group_rate_limit, intervalMs: row.group_rate_interval_ms! },
    paused: row.paused,
  };
}

function toInfo(row: QueueListRow): QueueInfo {
  return {
    ...toConfig(row),
    jobs: { pending: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0, ...row.jobs },
    oldestPendingSeconds: row.oldest_pending_seconds,
  };
}

/** The queue operations on `pool`'s schema; `run` wraps each (migration, connection errors). */
export function queueOperations(pool: pg.Pool, schema: string, run: <T>(fn: () => Promise<T>) => Promise<T>): QueueOperations {
  // Async throughout, so that bad input rejects rather than throws.
  const configure = async (queue: string, patch: () => QueueSettingsPatch) => {
    const name = validateName('queue', queue);
    const fields = patch();
    return run(async () => toConfig(await configureQueue(pool, schema, { queue: name, patch: fields })));
  };
  return {
    setQueue: (queue, settings) => configure(queue, () => settingsPatch(settings)),
    pauseQueue: (queue) => configure(queue, () => ({ paused: true })),
    resumeQueue: (queue) => configure(queue, () => ({ paused: false })),
    listQueues: () => run(async () => (await listQueues(pool, schema)).map(toInfo)),
  };
}
