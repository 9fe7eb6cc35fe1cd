import { stackFrames } from '../src/errors.ts';
import type { AbortKind } from '../src/protocol.ts';

/**
 * What becomes of the jobs of a batch whose thread died: which go back to
 * the queue, why, and whether the attempt counts. Pure rules; the dispatcher
 * gathers what it knows about the batch and carries out the answer.
 */

/** A job this supervisor should give back to the queue, and why. */
export interface Release {
  id: string;
  /** The thread that ran it: a job claimed meanwhile by another thread of this supervisor is not touched. */
  thread: number;
  reason: string;
  /** Whether the attempt counts towards max_attempts. */
  count: boolean;
}

/** Why this supervisor terminated a thread on purpose: to stop one job's handler. */
export interface Kill {
  jobId: string;
  kind: AbortKind;
  message: string;
}

export interface DeadBatch {
  /** The thread that reported claiming the batch's jobs, or null if none did. */
  claimedOn: number | null;
  /** The thread the batch was sent to (differs from claimedOn only if the first one died). */
  sentTo: number | null;
  /**
   * The batch's claimed jobs that are still this batch's runs, with the
   * thread that ran each. A job already released and claimed again (by the
   * thread sweep) is another run and is left out by the caller.
   */
  jobs: readonly { id: string; threadId: number }[];
  /** How the thread ended, as reported (the thread's own error, or piscina's). */
  error: Error;
}

export interface DispatcherView {
  /** The supervisor is shutting down: its threads end because it asked them to. */
  stopping: boolean;
  /** Threads this supervisor is terminating on purpose, and for which job. */
  killing: ReadonlyMap<number, Kill>;
  /** Threads whose crash was logged already. */
  crashLogged: ReadonlySet<number>;
}

export interface CrashDecision {
  releases: Release[];
  /** A death nobody asked for: it counts in the thread-crash counter. */
  crashed: boolean;
  /** The thread whose crash to log now (once per thread, though each of its batches fails), or null. */
  logCrashOf: number | null;
}

/**
 * The job whose handler ignored its abort and got its thread terminated
 * spends an attempt; the other jobs on that thread were bystanders. A
 * shutdown costs nobody an attempt. A crash counts for every job the thread
 * ran, since any of them may be the one that brought it down.
 */
export function decideCrashRelease(batch: DeadBatch, view: DispatcherView): CrashDecision {
  const threadId = batch.claimedOn;
  const killed = threadId === null ? undefined : view.killing.get(threadId);
  let crashReason: string | undefined;
  const releases: Release[] = batch.jobs.map(({ id, threadId: thread }) => {
    if (killed && killed.jobId === id) {
      return { id, thread, reason: `${killed.message}; its thread was terminated because the handler did not stop`, count: true };
    }
    if (killed)
      return { id, thread, reason: `thread ${threadId} was terminated to stop job ${killed.jobId} (${killed.kind})`, count: false };
    if (view.stopping) return { id, thread, reason: 'supervisor shut down before the job finished', count: false };
    crashReason ??= `thread crashed: ${describeCrash(batch.error)}${stackFrames(threadStack(batch.error))}`;
    return { id, thread, reason: crashReason, count: true };
  });
  // The counter counts dead batches that had claimed jobs, not threads: a
  // thread that died before claiming anything cost no job a run.
  const crashed = !killed && !view.stopping && threadId !== null;
  // Piscina reports an error on its pool ('thread failed outside a job') only
  // when the thread had no batch at all, and released jobs carry the error
  // only if it had claimed some: so the dispatcher logs it, once per thread.
  const dead = batch.claimedOn ?? batch.sentTo;
  const logCrashOf = !view.stopping && dead !== null && !view.killing.has(dead) && !view.crashLogged.has(dead) ? dead : null;
  return { releases, crashed, logCrashOf };
}

/** One line for an error: its message (or first stack line, or name) and its code. */
export function describeCrash(err: Error): string {
  const code = (err as { code?: string }).code;
  const message = err.message || (err.stack?.split('\n')[0] ?? err.name);
  return code ? `${message} (${code})` : message;
}

/** Where in the thread the error was thrown, when the thread reported it before exiting. */
function threadStack(err: Error): string | undefined {
  return (err as { threadStack?: string }).threadStack;
}
