import { backoffMs } from '../src/backoff.ts';
import { DEFAULTS } from '../src/config.ts';

/**
 * A task's retry policy, as its module exports it (`export const retry =
 * { … }`, or `handler.retry` in a module of named exports): docs/jobs.md#retries.
 * A job's own maxAttempts (addJob's option) wins over the task's.
 */
export interface RetryPolicy {
  /** Runs a job of this task gets when it was enqueued without maxAttempts. */
  maxAttempts?: number;
  backoff?: Backoff;
}

export type Backoff =
  | { type: 'exponential'; baseMs: number; maxMs: number; jitter?: boolean }
  | { type: 'fixed'; delayMs: number }
  /** The delay in ms before the next run, or false: do not retry (the job fails). */
  | ((attempt: number, error: unknown) => number | false);

/** What a failed run's outcome says about its retry, beyond retryable: both absent when the task has no policy. */
export interface RetryDecision {
  retryable: boolean;
  /** The job's max attempts, to be written into its row. */
  maxAttempts?: number;
  delayMs?: number;
  /** Why the task's backoff function could not decide: the supervisor's backoff applies instead. */
  problem?: string;
}

const MAX_ATTEMPTS = 1_000;
/** PostgreSQL's integer, as for a job's timeoutMs; also about 24 days, which setTimeout holds. */
const MAX_MS = 2_147_483_647;

/**
 * Reads and checks a task module's `retry` and `timeoutMs`. Returns an error
 * message naming the module and the field, or the policy; `where` says which
 * module (and export) they came from.
 */
export function readTaskPolicy(
  where: string,
  retry: unknown,
  timeoutMs: unknown,
): { retry: RetryPolicy | null; timeoutMs: number | null } | string {
  if (timeoutMs !== undefined && !isWholeIn(timeoutMs, 1, MAX_MS)) {
    return `${where}: timeoutMs must be a whole number of milliseconds from 1 to ${MAX_MS}, not ${describe(timeoutMs)}`;
  }
  if (retry === undefined) return { retry: null, timeoutMs: (timeoutMs as number | undefined) ?? null };
  if (retry === null || typeof retry !== 'object' || Array.isArray(retry)) {
    return `${where}: retry must be an object like { maxAttempts: 5, backoff: { type: 'exponential', baseMs: 1000, maxMs: 60000 } }, not ${describe(retry)}`;
  }
  const { maxAttempts, backoff, ...rest } = retry as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) return `${where}: retry.${unknown[0]} is not a retry setting (use maxAttempts and backoff)`;
  if (maxAttempts !== undefined && !isWholeIn(maxAttempts, 1, MAX_ATTEMPTS)) {
    return `${where}: retry.maxAttempts must be a whole number from 1 to ${MAX_ATTEMPTS}, not ${describe(maxAttempts)}`;
  }
  const checked = checkBackoff(backoff);
  if (typeof checked === 'string') return `${where}: retry.backoff${checked}`;
  return {
    retry: { maxAttempts: maxAttempts as number | undefined, backoff: checked },
    timeoutMs: (timeoutMs as number | undefined) ?? null,
  };
}

/** The backoff, or what is wrong with it (after "retry.backoff"). */
function checkBackoff(backoff: unknown): Backoff | undefined | string {
  if (backoff === undefined || typeof backoff === 'function') return backoff as Backoff | undefined;
  if (backoff === null || typeof backoff !== 'object') {
    return ` must be { type: 'exponential', baseMs, maxMs }, { type: 'fixed', delayMs } or a function (attempt, error) => ms or false, not ${describe(backoff)}`;
  }
  const b = backoff as Record<string, unknown>;
  const ms = (field: string) =>
    isWholeIn(b[field], 0, MAX_MS)
      ? null
      : `.${field} must be a whole number of milliseconds from 0 to ${MAX_MS}, not ${describe(b[field])}`;
  const extra = (allowed: string[]) => {
    const other = Object.keys(b).find((k) => !allowed.includes(k));
    return other === undefined ? null : `.${other} is not a setting of a ${String(b.type)} backoff (use ${allowed.slice(1).join(', ')})`;
  };
  if (b.type === 'exponential') {
    const wrong = extra(['type', 'baseMs', 'maxMs', 'jitter']) ?? ms('baseMs') ?? ms('maxMs');
    if (wrong) return wrong;
    if ((b.maxMs as number) < (b.baseMs as number)) return `.maxMs (${b.maxMs}) must not be below baseMs (${b.baseMs})`;
    if (b.jitter !== undefined && typeof b.jitter !== 'boolean') return `.jitter must be true or false, not ${describe(b.jitter)}`;
    return backoff as Backoff;
  }
  if (b.type === 'fixed') return extra(['type', 'delayMs']) ?? ms('delayMs') ?? (backoff as Backoff);
  return `.type must be 'exponential' or 'fixed', not ${describe(b.type)}`;
}

/**
 * The attempts of a job under its task's policy, or null when the row's
 * number stands (the job was given its own, its task sets none, or a failed
 * run already wrote the task's in). Until then the row holds the schema's
 * default plus one for each run handed back without costing an attempt
 * (crash releases, shutdown), which the job keeps.
 */
export function taskMaxAttempts(policy: RetryPolicy | null, row: { max_attempts: number; max_attempts_given: boolean }): number | null {
  if (row.max_attempts_given || policy?.maxAttempts === undefined) return null;
  return Math.max(1, policy.maxAttempts + row.max_attempts - DEFAULTS.maxAttempts);
}

/**
 * What a failed run's outcome says about its retry under its task's policy:
 * the job's attempts, when they come from the task (`maxAttempts` is then
 * taskMaxAttempts()), to be written into its row; and when to run it again,
 * or not at all if a backoff function says false. `attempt` is the run that
 * failed (1 for the first).
 */
export function retryDecision(
  policy: RetryPolicy | null,
  job: { attempt: number; maxAttempts: number; fromTask: boolean },
  error: unknown,
  retryable: boolean,
  random: () => number = Math.random,
): RetryDecision {
  if (policy === null) return { retryable };
  const decision: RetryDecision = { retryable, maxAttempts: job.fromTask ? job.maxAttempts : undefined };
  const left = job.attempt < job.maxAttempts;
  const { backoff } = policy;
  if (!retryable || !left || backoff === undefined) return decision;
  if (typeof backoff === 'function') {
    let delay: unknown;
    try {
      delay = backoff(job.attempt, error);
    } catch (err) {
      return { ...decision, problem: `the task's retry.backoff function threw (${err instanceof Error ? err.message : String(err)})` };
    }
    if (delay === false) return { ...decision, retryable: false };
    if (typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0) {
      return {
        ...decision,
        problem: `the task's retry.backoff function returned ${describe(delay)}, not a delay in ms (a number from 0) or false`,
      };
    }
    return { ...decision, delayMs: Math.min(delay, MAX_MS) };
  }
  if (backoff.type === 'fixed') return { ...decision, delayMs: backoff.delayMs };
  const delay = backoffMs({ attempt: job.attempt - 1, baseMs: backoff.baseMs, maxMs: backoff.maxMs });
  // The supervisor's own backoff spreads retries the same way: 75% to 125% of the delay.
  return { ...decision, delayMs: backoff.jitter === false ? delay : delay * (0.75 + random() * 0.5) };
}

function isWholeIn(value: unknown, min: number, max: number): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.slice(0, 40));
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  return String(value);
}
