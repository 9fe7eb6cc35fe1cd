import { describe, expect, it } from 'vitest';
import { decideCrashRelease, describeCrash, type DeadBatch, type DispatcherView, type Kill } from '../../supervisor/crash-release.ts';

const quiet: DispatcherView = { stopping: false, killing: new Map(), crashLogged: new Set() };

function batch(over: Partial<DeadBatch> = {}): DeadBatch {
  return {
    claimedOn: 3,
    sentTo: 3,
    jobs: [
      { id: '10', threadId: 3 },
      { id: '11', threadId: 3 },
    ],
    error: new Error('boom'),
    ...over,
  };
}

function killing(thread: number, kill: Kill): Map<number, Kill> {
  return new Map([[thread, kill]]);
}

describe('crash release: a thread nobody asked to end', () => {
  it('releases every job it ran with the attempt counted, names the error (no supervisor-side stack), counts the crash and logs it', () => {
    const decision = decideCrashRelease(batch(), quiet);
    expect(decision.releases).toEqual([
      { id: '10', thread: 3, reason: 'thread crashed: boom', count: true },
      { id: '11', thread: 3, reason: 'thread crashed: boom', count: true },
    ]);
    expect(decision.crashed).toBe(true);
    expect(decision.logCrashOf).toBe(3);
  });

  it("puts the stack the thread reported (not the supervisor's copy of the error) after the message, and the code in brackets", () => {
    const error = Object.assign(new Error('out of cheese'), {
      code: 'ERR_CHEESE',
      threadStack: 'Error: out of cheese\n    at handler (tasks/cheese.js:3:9)',
    });
    const [release] = decideCrashRelease(batch({ error }), quiet).releases;
    expect(release.reason).toBe('thread crashed: out of cheese (ERR_CHEESE)\n    at handler (tasks/cheese.js:3:9)');
    expect(release.reason).not.toContain('crash-release.test');
  });

  it('keeps each job on the thread that ran it', () => {
    const decision = decideCrashRelease(batch({ jobs: [{ id: '7', threadId: 9 }] }), quiet);
    expect(decision.releases.map((r) => r.thread)).toEqual([9]);
  });

  it('releases nothing when the batch had no jobs of its own left, yet still counts and logs a claimed batch', () => {
    const decision = decideCrashRelease(batch({ jobs: [] }), quiet);
    expect(decision.releases).toEqual([]);
    expect(decision.crashed).toBe(true);
    expect(decision.logCrashOf).toBe(3);
  });

  it('does not count a crash for a batch that never said it claimed, but logs the thread it was sent to', () => {
    const decision = decideCrashRelease(batch({ claimedOn: null, sentTo: 4, jobs: [] }), quiet);
    expect(decision.crashed).toBe(false);
    expect(decision.logCrashOf).toBe(4);
  });

  it('logs nothing for a batch that never reached a thread', () => {
    expect(decideCrashRelease(batch({ claimedOn: null, sentTo: null, jobs: [] }), quiet).logCrashOf).toBeNull();
  });

  it('logs a thread once: a second failing batch of a logged thread is quiet but still released and counted', () => {
    const decision = decideCrashRelease(batch(), { ...quiet, crashLogged: new Set([3]) });
    expect(decision.logCrashOf).toBeNull();
    expect(decision.crashed).toBe(true);
    expect(decision.releases).toHaveLength(2);
  });

  it('prefers the thread that claimed over the one the batch was first sent to', () => {
    expect(decideCrashRelease(batch({ claimedOn: 5, sentTo: 2 }), quiet).logCrashOf).toBe(5);
  });
});

describe('crash release: a thread this supervisor terminated to stop a job', () => {
  const kill: Kill = { jobId: '10', kind: 'timeout', message: 'job timed out after 50 ms' };

  it('spends an attempt of the job that ignored its abort only; the others on the thread were bystanders', () => {
    // Not a crash: nobody counts it or logs it as one.
    expect(decideCrashRelease(batch(), { ...quiet, killing: killing(3, kill) })).toEqual({
      releases: [
        {
          id: '10',
          thread: 3,
          reason: 'job timed out after 50 ms; its thread was terminated because the handler did not stop',
          count: true,
        },
        { id: '11', thread: 3, reason: 'thread 3 was terminated to stop job 10 (timeout)', count: false },
      ],
      crashed: false,
      logCrashOf: null,
    });
  });

  it('names a cancellation for what it is', () => {
    const cancel: Kill = { jobId: '99', kind: 'cancelled', message: 'job was cancelled' };
    const [release] = decideCrashRelease(batch({ jobs: [{ id: '10', threadId: 3 }] }), { ...quiet, killing: killing(3, cancel) }).releases;
    expect(release).toEqual({ id: '10', thread: 3, reason: 'thread 3 was terminated to stop job 99 (cancelled)', count: false });
  });

  it('wins over a shutdown under way: the job that would not stop still spends its attempt', () => {
    const [first] = decideCrashRelease(batch(), { ...quiet, stopping: true, killing: killing(3, kill) }).releases;
    expect(first.count).toBe(true);
  });

  it('applies only to the thread that was killed: a crash of another thread is a crash', () => {
    const decision = decideCrashRelease(batch(), { ...quiet, killing: killing(8, kill) });
    expect(decision.releases.every((r) => r.count && r.reason.startsWith('thread crashed: boom'))).toBe(true);
    expect(decision.crashed).toBe(true);
    expect(decision.logCrashOf).toBe(3);
  });

  it('is not logged as a crash even when the batch died before saying which thread claimed it', () => {
    const decision = decideCrashRelease(batch({ claimedOn: null, sentTo: 3, jobs: [] }), { ...quiet, killing: killing(3, kill) });
    expect(decision.logCrashOf).toBeNull();
  });
});

describe('crash release: a shutdown', () => {
  it('gives every job back without spending an attempt, counting or logging nothing', () => {
    const reason = 'supervisor shut down before the job finished';
    expect(decideCrashRelease(batch(), { ...quiet, stopping: true })).toEqual({
      releases: ['10', '11'].map((id) => ({ id, thread: 3, reason, count: false })),
      crashed: false,
      logCrashOf: null,
    });
  });
});

describe('describeCrash', () => {
  it('is the message, with the code when there is one', () => {
    expect(describeCrash(new Error('x'))).toBe('x');
    expect(describeCrash(Object.assign(new Error('x'), { code: 'E1' }))).toBe('x (E1)');
  });

  it("falls back to the stack's first line, then the name, for an error without a message", () => {
    const e = new TypeError('');
    e.stack = 'TypeError: from the stack\n    at f';
    expect(describeCrash(e)).toBe('TypeError: from the stack');
    const bare = new RangeError('');
    bare.stack = undefined;
    expect(describeCrash(bare)).toBe('RangeError');
  });
});
