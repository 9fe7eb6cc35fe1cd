/**
 * Messages between the supervisor (main thread) and its piscina threads.
 * Internal: not exported from the package. Plain data only, because every
 * message is structured-cloned across the thread boundary.
 */
import type { MessagePort } from 'node:worker_threads';
import type { SerializedError } from './errors.ts';
import type { LogFormat } from './log.ts';

/** Given to every thread once, as piscina's workerData. */
export interface ThreadConfig {
  connectionString: string;
  schema: string;
  supervisorId: string;
  /** Directory of task modules, or one module with named handler exports. */
  tasksPath: string;
  /** NULL: every queue. */
  queues: string[] | null;
  leaseMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Per thread, at most: claim and outcome-write connections, and handlers' connections. */
  systemConnections: number;
  handlerConnections: number;
  /** The supervisor's thread connection budget (a ConnectionBudget's buffer), shared by every thread. */
  budget: SharedArrayBuffer;
  logLevel: string;
  logFormat: LogFormat;
  /** Succeeded jobs nobody waits for are deleted instead of recorded. */
  deleteSucceeded: boolean;
  /** A handler's result whose JSON is larger fails its job instead of being stored. */
  maxResultBytes: number;
  /** At most one progress write per thread per this many ms (threads/progress.ts). */
  progressIntervalMs: number;
  /** False: every statement unnamed (a pooler in transaction mode). */
  preparedStatements: boolean;
  /** Handlers a thread runs at once, at most; the jobs it holds beyond that wait for one to return. */
  concurrency: number;
}

/** What the supervisor asks of a thread (one piscina task). */
export type ThreadRequest =
  | { type: 'describe' }
  // `details`: report the failures' details with 'finished' (someone listens for job events).
  | { type: 'claim-ids'; ids: string[]; tasks: string[]; port: MessagePort; details?: true }
  | { type: 'claim-next'; count: number; tasks: string[]; port: MessagePort; details?: true };

/**
 * What became of the failed and fenced jobs of a 'finished' report, for the
 * supervisor's events; sent only for batches that asked for `details`.
 * Parallel arrays: `ids[i]` failed with `errors[i]` and runs again if
 * `retrying[i]`. `fenced`: outcomes the fence refused (not this run's to report).
 */
export interface FailureDetails {
  ids: string[];
  errors: string[];
  retrying: boolean[];
  fenced: string[];
}

export type ThreadResponse =
  | { type: 'described'; tasks: string[]; error: SerializedError | null; threadId: number }
  | {
      type: 'batch-done';
      threadId: number;
      /** Ids this batch claimed (all of them reached an outcome write attempt). */
      claimed: string[];
      /** Ids handed over that another owner had, or that were not due or not ours to run. */
      skipped: number;
      /** Outcome writes rejected by the fence: the claim had been taken away meanwhile. */
      fenced: number;
      /** A claim that could not run at all (database down): nothing was claimed. */
      claimError: SerializedError | null;
      /**
       * The claim answered but its commit failed: the `claimed` jobs ran, and
       * may or may not be claimed in the table (the fence sorted out their
       * outcomes); those that rolled back are pending again.
       */
      commitError: SerializedError | null;
      /**
       * This thread could not import the task modules, so it claimed nothing.
       * piscina started it after the supervisor's start-up check (a
       * replacement for a dead thread), and it must be replaced in turn.
       */
      tasksError: SerializedError | null;
      /**
       * For a pull that came back short: whether due jobs it may run were still
       * pending just after it. SKIP LOCKED passes over rows another statement
       * holds for a moment (a waitForJob() mark, another supervisor's claim),
       * so a short pull alone does not prove the backlog drained.
       */
      dueLeft: boolean;
    };

/**
 * Posted by the thread on the batch's MessagePort while the batch runs. Kept
 * to about one message per batch: 'started' is sent only for jobs with a hard
 * timeout (its clock starts there), and jobs whose outcomes were written
 * together are reported finished together.
 */
export type BatchEvent =
  // Parallel arrays rather than an object per job: cheaper to clone.
  | { type: 'claimed'; ids: string[]; tasks: string[]; queues: string[]; attempts: number[]; threadId: number }
  | { type: 'started'; jobId: string; timeoutMs: number; threadId: number }
  // The batch's handlers have been called: `blockedMs` is how long they held
  // the thread's event loop before their first await, how CPU-bound they are.
  | { type: 'launched'; jobs: number; blockedMs: number; threadId: number }
  // Handlers returned; their outcomes are being written. Frees their slots,
  // so the next claim overlaps the outcome write instead of following it.
  | { type: 'handled'; ids: string[]; threadId: number }
  // Outcomes written (or refused by the fence): the jobs are done here.
  // `unsuccessful`: those of `ids` whose outcome was not a recorded success
  // (failures, and outcomes the fence refused); usually empty.
  // `cancelled`: those recorded as cancelled, whatever the handler did (a
  // cancel asked for while it ran, before the supervisor heard of it).
  | { type: 'finished'; ids: string[]; unsuccessful: string[]; cancelled?: string[]; threadId: number; details?: FailureDetails }
  // The thread is exiting (its process 'exit' event), with the error that
  // ended it if JavaScript saw one; the last message on the port. It reaches
  // the supervisor well before the Worker's 'exit' event, which waits for the
  // thread to be torn down.
  | { type: 'exiting'; code: number; error: SerializedError | null };

/** Posted by the supervisor on a batch's MessagePort. */
export type SupervisorSignal = { type: 'abort'; jobId: string; reason: AbortKind; message: string };

export type AbortKind = 'cancelled' | 'timeout' | 'shutdown';
