import { describe, expect, it } from 'vitest';
import { readTaskPolicy, retryDecision, taskMaxAttempts, type RetryPolicy } from '../../threads/retry-policy.ts';

const WHERE = 'task module /app/tasks/x.mjs';

function policy(retry: unknown, timeoutMs?: unknown): RetryPolicy {
  const read = readTaskPolicy(WHERE, retry, timeoutMs);
  if (typeof read === 'string') throw new Error(read);
  return read.retry!;
}

describe('readTaskPolicy', () => {
  it('accepts the documented shapes', () => {
    expect(readTaskPolicy(WHERE, undefined, undefined)).toEqual({ retry: null, timeoutMs: null });
    expect(readTaskPolicy(WHERE, { maxAttempts: 3 }, 500)).toEqual({ retry: { maxAttempts: 3, backoff: undefined }, timeoutMs: 500 });
    expect(policy({ backoff: { type: 'fixed', delayMs: 0 } }).backoff).toEqual({ type: 'fixed', delayMs: 0 });
    expect(policy({ backoff: { type: 'exponential', baseMs: 10, maxMs: 10, jitter: false } }).backoff).toMatchObject({
      type: 'exponential',
    });
    expect(typeof policy({ backoff: () => false }).backoff).toBe('function');
  });

  it('names the module and the field of what it refuses', () => {
    const refused: Array<[unknown, unknown, string]> = [
      [{ maxAttempts: 0 }, undefined, 'retry.maxAttempts must be a whole number from 1 to 1000, not 0'],
      [{ maxAtempts: 3 }, undefined, 'retry.maxAtempts is not a retry setting'],
      [{ backoff: { type: 'fixed', delayMs: -1 } }, undefined, 'retry.backoff.delayMs must be a whole number of milliseconds'],
      [{ backoff: { type: 'fixed', delay: 5 } }, undefined, 'retry.backoff.delay is not a setting of a fixed backoff (use delayMs)'],
      [{ backoff: { type: 'exponential', baseMs: 100, maxMs: 10 } }, undefined, 'retry.backoff.maxMs (10) must not be below baseMs (100)'],
      [{ backoff: 1000 }, undefined, 'retry.backoff must be'],
      [[3], undefined, 'retry must be an object'],
      [undefined, 0, 'timeoutMs must be a whole number of milliseconds from 1'],
    ];
    for (const [retry, timeoutMs, message] of refused) {
      const read = readTaskPolicy(WHERE, retry, timeoutMs);
      expect(read).toBeTypeOf('string');
      expect(read).toContain(`${WHERE}: ${message}`);
    }
  });
});

describe('retryDecision', () => {
  const job = { attempt: 2, maxAttempts: 5, fromTask: false };

  it('leaves everything to the row and the supervisor without a policy', () => {
    expect(retryDecision(null, job, new Error('x'), true)).toEqual({ retryable: true });
  });

  it("takes the task's maxAttempts only for a job given none, keeping the runs it was handed back without cost", () => {
    const p = policy({ maxAttempts: 8 });
    expect(taskMaxAttempts(p, { max_attempts: 5, max_attempts_given: false })).toBe(8);
    expect(taskMaxAttempts(p, { max_attempts: 7, max_attempts_given: false })).toBe(10);
    expect(taskMaxAttempts(policy({ maxAttempts: 1 }), { max_attempts: 5, max_attempts_given: false })).toBe(1);
    expect(taskMaxAttempts(p, { max_attempts: 3, max_attempts_given: true })).toBeNull();
    expect(taskMaxAttempts(policy({}), { max_attempts: 5, max_attempts_given: false })).toBeNull();
    expect(taskMaxAttempts(null, { max_attempts: 5, max_attempts_given: false })).toBeNull();
    expect(retryDecision(p, { ...job, maxAttempts: 8, fromTask: true }, null, true).maxAttempts).toBe(8);
    expect(retryDecision(p, job, null, true).maxAttempts).toBeUndefined();
  });

  it('computes fixed and exponential delays, capped, with or without jitter', () => {
    expect(retryDecision(policy({ backoff: { type: 'fixed', delayMs: 700 } }), job, null, true).delayMs).toBe(700);
    const exp = policy({ backoff: { type: 'exponential', baseMs: 100, maxMs: 350, jitter: false } });
    expect([1, 2, 3, 4].map((attempt) => retryDecision(exp, { ...job, attempt }, null, true).delayMs)).toEqual([100, 200, 350, 350]);
    const jittered = policy({ backoff: { type: 'exponential', baseMs: 100, maxMs: 1000 } });
    expect(retryDecision(jittered, { ...job, attempt: 1 }, null, true, () => 0).delayMs).toBe(75);
    expect(retryDecision(jittered, { ...job, attempt: 1 }, null, true, () => 1).delayMs).toBe(125);
  });

  it('asks a backoff function only when a retry is possible, and false makes the failure final', () => {
    const seen: unknown[] = [];
    const fn = policy({
      maxAttempts: 3,
      backoff: (attempt: number, error: Error) => {
        seen.push([attempt, error.message]);
        return error.message === 'stop' ? false : attempt * 10;
      },
    });
    const fnJob = { attempt: 2, maxAttempts: 3, fromTask: true };
    expect(retryDecision(fn, fnJob, new Error('stop'), true)).toEqual({ retryable: false, maxAttempts: 3 });
    expect(retryDecision(fn, fnJob, new Error('again'), true)).toEqual({ retryable: true, maxAttempts: 3, delayMs: 20 });
    // No attempt left, or not retryable: not asked.
    retryDecision(fn, { ...fnJob, attempt: 3 }, new Error('late'), true);
    retryDecision(fn, fnJob, new Error('permanent'), false);
    expect(seen).toEqual([
      [2, 'stop'],
      [2, 'again'],
    ]);
  });

  it('falls back to the supervisor backoff when the function throws or answers nonsense', () => {
    const throws = policy({
      backoff: () => {
        throw new Error('oops');
      },
    });
    const decided = retryDecision(throws, job, null, true);
    expect(decided.retryable).toBe(true);
    expect(decided.delayMs).toBeUndefined();
    expect(decided.problem).toMatch(/threw \(oops\)/);
    const nonsense = policy({ backoff: () => 'soon' });
    expect(retryDecision(nonsense, job, null, true).problem).toMatch(/returned "soon", not a delay/);
  });
});
