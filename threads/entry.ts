/**
 * The piscina task module: one copy runs in every thread. It opens the
 * thread's pools (pools.ts) and handlers' helpers (helpers.ts) once, loads
 * the task modules once, and for each request claims a batch with SKIP
 * LOCKED, runs the handlers and records their outcomes.
 *
 * Nothing here may throw at import time: piscina never settles tasks queued
 * for a thread that fails while booting, so load errors are kept and reported
 * through the 'describe' request instead.
 */
import { threadId, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { serializeError } from '../src/errors.ts';
import { createLogger } from '../src/log.ts';
import type {
  AbortKind,
  BatchEvent,
  FailureDetails,
  SupervisorSignal,
  ThreadConfig,
  ThreadRequest,
  ThreadResponse,
} from '../src/protocol.ts';
import { DEFAULTS } from '../src/config.ts';
import { adoptTaskAttemptsQuery, claimByIdsQuery, claimNextQuery, hasDue, type ClaimedJobRow, type ClaimParams } from '../src/sql/jobs.ts';
import { claimBatch } from './claim.ts';
import { executeJob, JobAbortSwitch } from './execute.ts';
import { afterCommit, databaseHelpers, type ExecuteContext } from './helpers.ts';
import { OutcomeWriter, type Outcome, type OutcomeSink } from './outcomes.ts';
import { openThreadPools } from './pools.ts';
import { ProgressWriter } from './progress.ts';
import { activeTracer, traced, tracingLoaded } from './tracing.ts';
import { loadTasks, type LoadedTasks } from './registry.ts';
import { taskMaxAttempts } from './retry-policy.ts';

const config = workerData as ThreadConfig;
const logger = createLogger({ level: config.logLevel, format: config.logFormat }).child({ supervisor: config.supervisorId, threadId });
const pools = openThreadPools(config, logger);
const writer = new OutcomeWriter(
  pools.system,
  config.schema,
  { baseMs: config.retryBaseMs, maxMs: config.retryMaxMs, deleteSucceeded: config.deleteSucceeded },
  logger,
);
const progress = new ProgressWriter(pools.system, config.schema, config.progressIntervalMs, logger);
const tasks: Promise<LoadedTasks> = Promise.all([loadTasks(config.tasksPath), tracingLoaded])
  .then(([loaded]) => loaded)
  .catch((err: Error) => ({
    handlers: new Map(),
    timeouts: new Map(),
    retries: new Map(),
    error: err,
  }));
const helpers = databaseHelpers(pools, {
  schema: config.schema,
  preparedStatements: config.preparedStatements,
  deleteSucceeded: config.deleteSucceeded,
  maxResultBytes: config.maxResultBytes,
});
const worker: ExecuteContext['worker'] = { supervisorId: config.supervisorId, threadId, schema: config.schema };

// Batches whose ports are open. If the thread exits (a handler's
// process.exit(), an uncaught error), each is told why at once: the
// supervisor gives their jobs back then, instead of after the Worker's
// 'exit' event, which waits for the thread to be torn down.
const openPorts = new Set<MessagePort>();

// Handlers running in this thread, over all its batches, and the jobs
// waiting for one of them to return: the dispatcher may hand a thread of
// quick handlers more jobs than its concurrency (supervisor/claim-limit.ts),
// so that it claims in larger batches; the rest wait here, first come first
// served. An array and a read index rather than shift(), which copies.
const maxHandlers = Math.max(1, config.concurrency);
let handlersRunning = 0;
let waiting: (() => void)[] = [];
let nextWaiting = 0;

/** A handler returned: start the job that waited longest, if any. */
function handlerReturned(): void {
  handlersRunning--;
  if (nextWaiting >= waiting.length) return;
  const start = waiting[nextWaiting++];
  if (nextWaiting === waiting.length) {
    waiting = [];
    nextWaiting = 0;
  }
  handlersRunning++;
  start();
}
let fatal: unknown;
// A monitor only watches: the error still ends the thread, as it would
// without it, unless a task module listens for uncaught exceptions itself
// (then the error is its to handle, and not why the thread may exit later).
process.on('uncaughtExceptionMonitor', (err) => {
  if (process.listenerCount('uncaughtException') === 0) fatal ??= err;
});
process.on('exit', (code) => {
  const error = fatal === undefined ? null : serializeError(fatal);
  for (const port of openPorts) post(port, { type: 'exiting', code, error });
});

export default async function run(request: ThreadRequest): Promise<ThreadResponse> {
  switch (request.type) {
    case 'describe': {
      const loaded = await tasks;
      return {
        type: 'described',
        tasks: [...loaded.handlers.keys()],
        error: loaded.error ? serializeError(loaded.error) : null,
        threadId,
      };
    }
    case 'claim-ids':
    case 'claim-next':
      return runBatch(request);
  }
}

const NOTHING_CLAIMED = {
  type: 'batch-done',
  claimed: [],
  skipped: 0,
  fenced: 0,
  claimError: null,
  commitError: null,
  tasksError: null,
  dueLeft: false,
} as const satisfies Omit<Extract<ThreadResponse, { type: 'batch-done' }>, 'threadId'>;

async function runBatch(request: Extract<ThreadRequest, { type: 'claim-ids' | 'claim-next' }>): Promise<ThreadResponse> {
  const port = request.port;
  openPorts.add(port);
  const loaded = await tasks;
  if (loaded.error) {
    // Claiming with the handlers that did load would pass over the other
    // tasks' jobs and report none due, as if the queue were empty.
    endBatch(port);
    return { ...NOTHING_CLAIMED, threadId, tasksError: serializeError(loaded.error) };
  }
  const known = request.tasks.filter((t) => loaded.handlers.has(t));
  // Looked up per batch: a task module may register its tracer provider after the thread started.
  const tracer = activeTracer();
  let jobs: ClaimedJobRow[];
  let committed: Promise<Error | null>;
  try {
    const who: ClaimParams = { tasks: known, queues: config.queues, owner: config.supervisorId, thread: threadId, leaseMs: config.leaseMs };
    const claim =
      request.type === 'claim-ids'
        ? claimByIdsQuery(config.schema, { ...who, ids: request.ids })
        : claimNextQuery(config.schema, { ...who, limit: request.count });
    ({ jobs, committed } = await claimBatch(pools.system, claim, adoptTaskAttempts(loaded)));
  } catch (err) {
    endBatch(port);
    return { ...NOTHING_CLAIMED, threadId, claimError: serializeError(err) };
  }
  const requested = request.type === 'claim-ids' ? request.ids.length : request.count;
  const claimed = jobs.map((j) => j.id);
  // Looked up while the handlers run; if the lookup fails, assume jobs are left (the dispatcher pulls again, a little later).
  const dueLeft =
    request.type === 'claim-next' && jobs.length < requested
      ? // After the commit: before it, this batch's own rows still look pending.
        committed
          .then(() => hasDue(pools.system, config.schema, { tasks: known, queues: config.queues, heldToo: false }))
          .then(
            (due) => due,
            () => true,
          )
      : false;
  if (jobs.length > 0) {
    post(port, {
      type: 'claimed',
      ids: claimed,
      tasks: jobs.map((j) => j.task),
      queues: jobs.map((j) => j.queue),
      attempts: jobs.map((j) => j.attempts),
      threadId,
    });
  }
  const handled = idsReporter(port, 'handled');
  const finished = idsReporter(port, 'finished');
  // Only while the supervisor has listeners for how jobs end (its events).
  const byId = request.details ? new Map(jobs.map((j) => [j.id, j])) : null;

  // The handlers' statements wait for the claim's commit (see afterCommit).
  const context: ExecuteContext = {
    logger,
    worker,
    connectionString: config.connectionString,
    maxResultBytes: config.maxResultBytes,
    progress: (job, json) => progress.set(job.id, job.claim_token, json, committed),
    takeProgress: (id) => progress.take(id),
    ...afterCommit(helpers, committed),
  };
  // Indexed like `jobs`: a map per batch cost a rehash every time it grew,
  // and an abort is rare enough to find its job by scanning.
  // Made up front: a job waiting for a handler can be cancelled too.
  const switches: JobAbortSwitch[] = new Array(jobs.length);
  for (let i = 0; i < jobs.length; i++) switches[i] = new JobAbortSwitch();
  port.on('message', (signal: SupervisorSignal) => {
    if (signal.type !== 'abort') return;
    const i = jobs.findIndex((j) => j.id === signal.jobId);
    if (i >= 0) switches[i].abort(new JobAbort(signal.reason, signal.message));
  });

  // Outcomes are written after the claim's commit (see claimBatch): those
  // ready before it wait here, the rest go straight to the writer.
  let beforeCommit: Outcome[] | null = [];
  let commitFailed = false;
  let fenced = 0;
  let left = jobs.length;
  let allRecorded!: () => void;
  let failed!: (err: unknown) => void;
  const recorded = new Promise<void>((resolve, reject) => {
    allRecorded = resolve;
    failed = reject;
  });
  const sink: OutcomeSink = {
    recorded(outcome, accepted, cancelled = false) {
      if (!accepted) {
        fenced++;
        // A failed commit is reported once for the batch, below.
        if (!commitFailed)
          logger.warn({ jobId: outcome.id }, 'outcome rejected: the job was reassigned, cancelled or released while it ran');
      }
      finished(
        outcome.id,
        !accepted || cancelled || outcome.kind === 'failure',
        byId ? detailOf(outcome, accepted, cancelled, byId.get(outcome.id)) : undefined,
        cancelled,
      );
      if (--left === 0) allRecorded();
    },
  };
  void committed.then((err) => {
    commitFailed = err !== null;
    const ready = beforeCommit ?? [];
    beforeCommit = null;
    for (let i = 0; i < ready.length; i++) writer.record(ready[i], sink);
  });
  // executeJob never throws, so `failed` only hears a defect here; it fails
  // the batch as Promise.all did, without a promise per job to say so.
  const runJob = async (job: ClaimedJobRow, i: number) => {
    // Its handler slot is given back once, when the handler returns (or at a defect before).
    let slotHeld = true;
    try {
      const abort = switches[i];
      if (job.cancel_requested) abort.abort(new JobAbort('cancelled', 'job was cancelled'));
      const timeoutMs = job.timeout_ms ?? loaded.timeouts.get(job.task) ?? null;
      if (timeoutMs !== null) post(port, { type: 'started', jobId: job.id, timeoutMs, threadId });
      const handler = loaded.handlers.get(job.task)!;
      const retry = loaded.retries.get(job.task) ?? null;
      // What the handler sees as job.maxAttempts, and its failure writes in: its task's, unless the job was given its own.
      const fromTask = taskMaxAttempts(retry, job);
      if (fromTask !== null) job.max_attempts = fromTask;
      let outcome: Outcome;
      try {
        outcome = tracer
          ? await traced(tracer, job, abort, () => executeJob(job, handler, abort, context, retry, fromTask !== null))
          : await executeJob(job, handler, abort, context, retry, fromTask !== null);
      } finally {
        slotHeld = false;
        handlerReturned();
      }
      handled(job.id);
      // The last progress value goes with the outcome: a watcher reads it when the job ends.
      // (An exactly-once success wrote its own; what the handler reported after it is dropped.)
      const last = progress.take(job.id);
      if (last !== undefined && outcome.kind !== 'committed') outcome.progress = last;
      if (beforeCommit) beforeCommit.push(outcome);
      else writer.record(outcome, sink);
    } catch (err) {
      if (slotHeld) handlerReturned();
      failed(err);
    }
  };
  if (left === 0) allRecorded();
  // Each handler runs up to its first await inside this loop: the time it
  // takes is how long the handlers block the thread, which the dispatcher
  // sizes this thread's next claims by.
  const launchedAt = busyMs();
  let launched = 0;
  for (let i = 0; i < jobs.length; i++) {
    if (handlersRunning < maxHandlers) {
      handlersRunning++;
      launched++;
      void runJob(jobs[i], i);
    } else {
      waiting.push(() => void runJob(jobs[i], i));
    }
  }
  if (launched > 0) post(port, { type: 'launched', jobs: launched, blockedMs: busyMs() - launchedAt, threadId });
  await recorded;
  endBatch(port);
  // A commit that failed may or may not have happened; the fence sorted out the outcomes either way.
  const commitError = await committed;
  if (commitError)
    logger.warn({ err: commitError.message, jobs: claimed }, "a claim's commit failed: its jobs ran unconfirmed and may run again");
  return {
    type: 'batch-done',
    threadId,
    claimed,
    skipped: requested - jobs.length,
    fenced,
    claimError: null,
    commitError: commitError ? serializeError(commitError) : null,
    tasksError: null,
    dueLeft: await dueLeft,
  };
}

/**
 * Reports jobs in one message per microtask turn: handlers that return
 * together, or outcomes written together, go in one message. A finished job
 * is `unsuccessful` unless its success was recorded (the worker log says so).
 */
function idsReporter(
  port: MessagePort,
  type: 'handled' | 'finished',
): (id: string, unsuccessful?: boolean, detail?: FailureDetail, cancelled?: boolean) => void {
  let ids: string[] = [];
  let unsuccessful: string[] = [];
  let cancelledIds: string[] | undefined;
  let details: FailureDetails | undefined;
  return (id, failed = false, detail, cancelled = false) => {
    ids.push(id);
    if (failed) unsuccessful.push(id);
    if (cancelled) (cancelledIds ??= []).push(id);
    if (detail) {
      details ??= { ids: [], errors: [], retrying: [], fenced: [] };
      if (detail === 'fenced') details.fenced.push(id);
      else {
        details.ids.push(id);
        details.errors.push(detail.error);
        details.retrying.push(detail.retrying);
      }
    }
    if (ids.length > 1) return;
    queueMicrotask(() => {
      post(port, type === 'finished' ? { type, ids, unsuccessful, cancelled: cancelledIds, threadId, details } : { type, ids, threadId });
      ids = [];
      unsuccessful = [];
      cancelledIds = undefined;
      details = undefined;
    });
  };
}

type FailureDetail = 'fenced' | { error: string; retrying: boolean };

/** A failed or fenced outcome as the supervisor's events tell it; undefined for a recorded success (or a cancel: see `cancelled`). */
function detailOf(outcome: Outcome, accepted: boolean, cancelled: boolean, job: ClaimedJobRow | undefined): FailureDetail | undefined {
  if (!accepted) return 'fenced';
  if (cancelled || outcome.kind !== 'failure') return undefined;
  // As the outcome write decides (src/sql/jobs.ts, fail): retried while attempts are left.
  return { error: outcome.error, retrying: outcome.retryable && job !== undefined && job.attempts < job.max_attempts };
}

/**
 * This thread's CPU time, in ms, where Node can tell: on a busy host a
 * thread waits for a core, and wall time would count that wait as blocking
 * by the handlers. Wall time otherwise.
 */
const busyMs: () => number =
  typeof process.threadCpuUsage === 'function'
    ? () => {
        const { user, system } = process.threadCpuUsage();
        return (user + system) / 1_000;
      }
    : () => performance.now();

/** The tasks whose retry policy sets maxAttempts, and that number: read once, the modules load once per thread. */
let taskAttempts: Map<string, number> | null = null;

/** What a claim sends after itself so that its jobs take their tasks' maxAttempts (adoptTaskAttemptsQuery), or null. */
function adoptTaskAttempts(loaded: LoadedTasks) {
  if (!taskAttempts) {
    taskAttempts = new Map();
    for (const [task, policy] of loaded.retries) if (policy.maxAttempts !== undefined) taskAttempts.set(task, policy.maxAttempts);
  }
  return adoptTaskAttemptsQuery(config.schema, {
    owner: config.supervisorId,
    thread: threadId,
    leaseMs: config.leaseMs,
    attempts: taskAttempts,
    defaultMaxAttempts: DEFAULTS.maxAttempts,
  });
}

function endBatch(port: MessagePort): void {
  openPorts.delete(port);
  port.close();
}

function post(port: MessagePort, event: BatchEvent): void {
  port.postMessage(event);
}

/** The reason an AbortSignal carries; executeJob() reads `kind` to decide whether to retry. */
class JobAbort extends Error {
  readonly kind: AbortKind;
  constructor(kind: AbortKind, message: string) {
    super(message);
    this.name = 'AbortError';
    this.kind = kind;
  }
}
