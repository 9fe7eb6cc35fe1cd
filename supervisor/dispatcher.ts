import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import { backoffMs } from '../src/backoff.ts';
import { throttledWarnings } from '../src/log.ts';
import type { AbortKind, BatchEvent, FailureDetails, ThreadRequest, ThreadResponse } from '../src/protocol.ts';
import { effectiveClaimLimit, firstClaimLimit, maxClaimLimit, nextClaimLimit, QUICK_HANDLER_MS } from './claim-limit.ts';
import { decideCrashRelease, describeCrash, type Kill, type Release } from './crash-release.ts';
import type { ReleasedRow } from '../src/sql/jobs.ts';
import type { ThreadPool } from './threads.ts';

export type { Release } from './crash-release.ts';

/** How long a pull waits for more slots to free up before it claims with what it has. */
const GATHER_SLOTS_MS = 2;

export interface DispatcherOptions {
  pool: ThreadPool;
  threads: number;
  concurrency: number;
  logger: Logger;
  /** Gives jobs back (fenced on this supervisor); must not throw. What it changed, or null if it left them to the lease. */
  release: (jobs: Release[]) => Promise<ReleasedRow | null>;
  /**
   * Called with the jobs a crash took (a thread nobody asked to end), once
   * their release says how each ends: failed, cancelled, or pending again.
   */
  onCrashReleased?: (jobs: readonly CrashedJob[]) => void;
  /** Called when a job starts and ends, for the supervisor's status and idle timer. */
  onActivity?: () => void;
  /**
   * Called with the jobs of one claim when they start, and with jobs that
   * finished together, for the supervisor log: once per batch, not per job.
   */
  onJobs?: (type: 'started' | 'finished', jobs: readonly RunningJob[]) => void;
  /** Whether threads should report the details of failed jobs with each batch (someone listens for job events). */
  wantsDetails?: () => boolean;
  /** How long a cancelled or timed-out handler may take to stop before its thread is terminated. */
  killGraceMs: number;
}

/** A job a thread crash took, and what its release made of it. */
export interface CrashedJob {
  job: RunningJob;
  /** The reason stored as its last error. */
  reason: string;
  state: 'failed' | 'cancelled' | 'pending';
}

/** Which execution of which job: what the supervisor log records. */
export interface JobRef {
  id: string;
  task: string;
  attempt: number;
  threadId: number;
  /** Set when the job ends: its thread saw its success recorded. Unset if it failed, or nobody knows (a crash). */
  succeeded?: boolean;
}

/** One unit of capacity: a specific job id, or "whatever is due next". */
interface Slot {
  id: string | null;
  /** Set when the slot is sent to a thread: it counts towards that thread's load until freed. */
  batch: Batch | null;
  freed: boolean;
}

interface Batch {
  slots: Slot[];
  /** Claims the slots' ids (claim-ids), rather than whatever is due (claim-next, slots without ids). */
  byIds: boolean;
  port: MessagePort;
  /** The thread the batch was sent to, then the one that claimed it (they differ only if the first died). */
  threadId: number | null;
  /** The thread that reported claiming jobs of this batch, once it has. */
  claimedOn: number | null;
  claimed: string[];
  /** The backlog's mark when the batch was sent: see Dispatcher.backlogMark. */
  backlogMark: number;
  /**
   * Its jobs being given back because its thread died: once, whoever noticed
   * first. Every report of the death returns this promise, so p-queue (and
   * with it onIdle() and shutdown) waits for the release, whichever report
   * carried it out.
   */
  failing: Promise<void> | null;
  /** The thread said it is exiting: that was the last message it will send on the port. */
  drained: boolean;
}

/** How a job's attempt failed, as its thread reported it (only when asked: see wantsDetails). */
export interface FailureDetail {
  error: string;
  willRetry: boolean;
}

/** A claimed job, as the supervisor sees it. */
export interface RunningJob extends JobRef {
  queue: string;
  startedAt: number;
  /** When its handler returned (0: not yet, or never), for the metrics' durations. */
  handledAt: number;
  batch: Batch;
  slot: Slot | null;
  timer: NodeJS.Timeout | null;
  /** The handler has returned; the outcome is being written. */
  handled: boolean;
  /** Why the handler was asked to stop, if it was. */
  abortedFor: AbortKind | null;
  /** How it failed, when the thread was asked for details (only while someone listens to the supervisor's events). */
  failure?: FailureDetail;
  /** The fence refused its outcome: the job was no longer this run's. Known only with details, as `failure`. */
  fenced?: boolean;
}

export interface DispatchCounters {
  notifiedIds: number;
  duplicateIds: number;
  overflowIds: number;
  batches: number;
  claimed: number;
  /** Ids handed to a thread that it could not claim: the cost of racing other supervisors. */
  wastedClaims: number;
  /** Claim statements that claimed no job at all (another supervisor got there first, or the table was empty). */
  emptyClaims: number;
  fenced: number;
  threadCrashes: number;
  claimErrors: number;
  /** Claims that answered but whose commit failed: their jobs ran unconfirmed. */
  commitErrors: number;
  /** Threads replaced because they could not import the task modules (they claimed nothing). */
  brokenThreads: number;
  /** Cancel notifications for a job this supervisor runs whose row asked for no cancel: forged, or stale. */
  ignoredCancels: number;
}

/**
 * Turns job ids (from notifications) and "there is a backlog" (from sweeps)
 * into batches for the threads, never holding more than each thread's
 * claim limit (claim-limit.ts: up to twice its concurrency while its
 * handlers are quick; each thread runs at most `concurrency` handlers at
 * once and queues the rest). Ids beyond that are not kept: they stay pending in
 * the table, and the backlog flag makes the next free slots pull them from
 * there. Jobs whose handlers have returned wait for their outcome writes
 * outside that count, in batches bounded by batchLimit().
 *
 * Capacity is counted in slots, one per job, and a slot is refilled as soon
 * as its handler returns. The p-queue in front of piscina holds batches, not jobs:
 * it is what shutdown waits on. (A p-queue task per slot would cost the main
 * thread a task per job, a large share of what a short job costs.)
 *
 * All state is owned by the main thread; batch events arrive on per-batch
 * MessagePorts, not necessarily before the batch's result.
 */
export class Dispatcher {
  private readonly options: DispatcherOptions;
  private readonly queue: PQueue;
  private capacity: number;
  /** Ids that hold a slot, queued or running: a duplicate notification is a no-op. */
  private readonly holding = new Set<string>();
  private readonly running = new Map<string, RunningJob>();
  /** Threads this supervisor is terminating on purpose, and for which job. */
  private readonly killing = new Map<number, Kill>();
  /**
   * Slots held per thread (sent, not yet freed). New batches go to the
   * threads with the most room, so a CPU-bound thread is not handed more
   * work while another one sits idle.
   */
  private readonly load = new Map<number, number>();
  /** Slots each thread may hold, learned from its handlers (claim-limit.ts): at most maxClaimLimit(). */
  private readonly limits = new Map<number, number>();
  /** Threads whose last handlers returned within QUICK_HANDLER_MS of their claim: they may hold more than their concurrency. */
  private readonly quick = new Map<number, boolean>();
  private unsent: Slot[] = [];
  /** Slots taken and not yet freed: unsent, or sent to a thread. */
  private held = 0;
  private flushScheduled = false;
  private flushSoon = false;
  private fillScheduled = false;
  private backlog = false;
  /**
   * Counts the times the backlog was (re)raised. A pull that comes back short
   * proves the table was drained only as of its claim: if the backlog was
   * raised after the pull was sent (an id that did not fit, a sweep), that
   * job may have committed after the claim ran, so the flag must stay up.
   */
  private backlogMark = 0;
  /** After failed claims or pulls that found due jobs held, no pulls before this time (epoch ms). */
  private claimBackoffUntil = 0;
  private claimFailures = 0;
  /** Consecutive short pulls that left due jobs behind, held by other statements. */
  private lockedPulls = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private fillTimer: NodeJS.Timeout | null = null;
  private paused = false;
  private stopping = false;
  private readonly warn = throttledWarnings(1_000);
  /** Threads whose crash has been logged (their other batches fail with the same error). */
  private readonly crashLogged = new Set<number>();
  /** Jobs given back because their thread died, by thread, until forgetThread: for thread:crashed, which may come after. */
  private readonly takenBy = new Map<number, string[]>();
  /** Batches whose port is open: a dead thread's last reports may still wait there (see jobsTakenBy). */
  private readonly openBatches = new Set<Batch>();
  readonly counters: DispatchCounters = {
    notifiedIds: 0,
    duplicateIds: 0,
    overflowIds: 0,
    batches: 0,
    claimed: 0,
    wastedClaims: 0,
    emptyClaims: 0,
    fenced: 0,
    threadCrashes: 0,
    claimErrors: 0,
    commitErrors: 0,
    brokenThreads: 0,
    ignoredCancels: 0,
  };
  /** Jobs finished per thread, for status. */
  readonly jobsRunByThread = new Map<number, number>();
  lastJobAt = 0;

  constructor(options: DispatcherOptions) {
    this.options = options;
    this.capacity = options.threads * maxClaimLimit(options.concurrency);
    this.queue = new PQueue({ concurrency: batchLimit(this.capacity) });
  }

  get inFlight(): number {
    return this.held;
  }

  get runningJobs(): ReadonlyMap<string, RunningJob> {
    return this.running;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Job ids that were notified. Those that do not fit now are left to the table. */
  offer(ids: Iterable<number | string>): void {
    let room = this.paused || this.stopping ? 0 : this.free();
    for (const raw of ids) {
      const id = String(raw);
      if (this.holding.has(id)) {
        this.counters.duplicateIds++;
        continue;
      }
      if (room <= 0) {
        this.counters.overflowIds++;
        this.raiseBacklog();
        continue;
      }
      room--;
      this.take(id);
    }
  }

  /** Somewhere in the table there may be due jobs nobody told us about. */
  markBacklog(): void {
    this.raiseBacklog();
    this.fill();
  }

  private raiseBacklog(): void {
    this.backlog = true;
    this.backlogMark++;
  }

  hasBacklog(): boolean {
    return this.backlog;
  }

  pause(): void {
    this.paused = true;
    // Slots taken in this turn go out on the next one: they would still claim.
    // Their ids are pending in the table, where the backlog finds them on resume.
    const unsent = this.unsent;
    this.unsent = [];
    this.freeSlots(unsent);
    if (unsent.length > 0) this.raiseBacklog();
  }

  resume(): void {
    this.paused = false;
    this.markBacklog();
  }

  /** Follows a change of the thread count (SCALE): maxClaimLimit() slots per thread. */
  resize(threads: number): void {
    this.capacity = threads * maxClaimLimit(this.options.concurrency);
    this.queue.concurrency = batchLimit(this.capacity);
    this.fill();
  }

  /** Capacity for more work, in jobs: free slots that a thread which is up has room for. */
  free(): number {
    return Math.min(this.capacity - this.inFlight, this.liveRoom());
  }

  /**
   * Room on the threads that are up. A thread being replaced has none: work
   * sent its way would wait in piscina's queue until the new thread has
   * booted (hundreds of ms), holding slots that a job announced meanwhile
   * needs, such as the crashed thread's own job, released and re-notified.
   */
  private liveRoom(): number {
    let room = -this.unsent.length;
    for (const thread of this.options.pool.currentThreadIds()) room += Math.max(0, this.roomOn(thread));
    return room;
  }

  /** Slots a thread can still take: its limit less the slots sent to it and not yet freed. */
  private roomOn(thread: number): number {
    return this.limitOf(thread) - (this.load.get(thread) ?? 0);
  }

  private limitOf(thread: number): number {
    return effectiveClaimLimit(this.learnedLimitOf(thread), this.options.concurrency, this.quick.get(thread) === true);
  }

  private learnedLimitOf(thread: number): number {
    return this.limits.get(thread) ?? firstClaimLimit(this.options.concurrency);
  }

  /** A thread has started (a replacement, a new generation): it has room now. */
  threadStarted(): void {
    this.fill();
  }

  /** Resolves once no batch is running (after stop(), nothing new starts). */
  onIdle(): Promise<void> {
    return this.queue.onIdle();
  }

  /** Asks a running job's handler to stop; terminates its thread if it does not within the grace. */
  abort(jobId: string, kind: AbortKind, message: string): boolean {
    const job = this.running.get(jobId);
    // Once is enough: a cancellation can be heard by notification and again at a heartbeat.
    if (!job || job.handled || (job.abortedFor !== null && kind !== 'shutdown')) return false;
    job.abortedFor = kind;
    job.batch.port.postMessage({ type: 'abort', jobId, reason: kind, message });
    if (kind === 'shutdown') return true;
    const timer = setTimeout(() => {
      // A handler that stopped in time is done, however long its outcome write takes.
      if (this.running.get(jobId) !== job || job.handled) return;
      this.options.logger.warn({ jobId, threadId: job.threadId, kind }, 'handler ignored its abort signal; terminating its thread');
      this.killing.set(job.threadId, { jobId, kind, message });
      this.options.pool.terminate(job.threadId);
    }, this.options.killGraceMs);
    timer.unref();
    return true;
  }

  /** Stops taking work; jobs not yet sent to a thread are dropped (they are still pending in the table). */
  stop(): void {
    this.stopping = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.fillTimer) clearTimeout(this.fillTimer);
    this.freeSlots(this.unsent);
    this.unsent = [];
  }

  private take(id: string | null): void {
    if (id !== null) this.holding.add(id);
    this.held++;
    this.unsent.push({ id, batch: null, freed: false });
    this.scheduleFlush(id !== null);
  }

  /**
   * Loops over a batch's slots are indexed, here and below: they run once
   * per batch, too rarely for V8 to optimise away a for-of's iterator, which
   * then allocates an object per slot.
   */
  private freeSlots(slots: readonly Slot[]): void {
    for (let i = 0; i < slots.length; i++) this.freeSlot(slots[i]);
  }

  /** Idempotent: a slot may be freed by its job's end and again by its batch's end. */
  private freeSlot(slot: Slot): void {
    if (slot.freed) return;
    slot.freed = true;
    this.held--;
    if (slot.id !== null) this.holding.delete(slot.id);
    const thread = slot.batch?.threadId;
    if (thread != null) this.addLoad(thread, -1);
    // Once per turn, after every job that ended in it has freed its slot.
    if (this.fillScheduled) return;
    this.fillScheduled = true;
    queueMicrotask(() => {
      this.fillScheduled = false;
      this.fill();
    });
  }

  private fill(force = false): void {
    if (!this.backlog || this.paused || this.stopping) return;
    const wait = this.claimBackoffUntil - Date.now();
    if (wait > 0) {
      // Claims are failing (database down): pulling again at once would spin.
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = null;
        this.fill();
      }, wait);
      return;
    }
    const free = this.free();
    if (free <= 0) return;
    // Pull in batches worth a claim statement: while jobs finish one by one,
    // wait a moment for more slots so claims do not degenerate into one job
    // each; but never leave free slots idle for longer than that moment.
    if (free < this.gatherThreshold() && this.inFlight > 0 && !force) {
      this.fillTimer ??= setTimeout(() => {
        this.fillTimer = null;
        this.fill(true);
      }, GATHER_SLOTS_MS);
      return;
    }
    for (let n = free; n > 0; n--) this.take(null);
  }

  /** Free slots worth a pull: half a thread's limit, on average over the threads that are up. */
  private gatherThreshold(): number {
    const threads = this.options.pool.currentThreadIds();
    let sum = 0;
    for (const thread of threads) sum += this.limitOf(thread);
    return Math.ceil(sum / Math.max(1, threads.length) / 2);
  }

  /**
   * Notified ids (`soon`) go out as soon as the callback that delivered them
   * ends: waiting for the end of the event loop's turn would add to every
   * notified job's latency. Ids delivered together
   * (one notification, or several read from one socket chunk) still share a
   * batch. Pulls taken in one turn of the event loop go out together.
   */
  private scheduleFlush(soon: boolean): void {
    if (soon) {
      if (this.flushSoon) return;
      this.flushSoon = true;
      queueMicrotask(() => {
        this.flushSoon = false;
        this.flush();
      });
      return;
    }
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const slots = this.unsent;
    if (slots.length === 0) return;
    this.unsent = [];
    if (this.stopping) {
      this.freeSlots(slots);
      return;
    }
    const byId = slots.filter((s) => s.id !== null);
    const pulls = slots.filter((s) => s.id === null);
    const size = Math.max(1, this.options.concurrency);
    // Fill the threads with the most room first, each up to its concurrency.
    const rooms = this.options.pool
      .currentThreadIds()
      .map((thread) => ({ thread, room: this.roomOn(thread) }))
      .sort((a, b) => b.room - a.room);
    let i = 0;
    let j = 0;
    for (const { thread, room } of rooms) {
      if (room <= 0) break;
      const ids = byId.slice(i, i + room);
      i += ids.length;
      const next = pulls.slice(j, j + room - ids.length);
      j += next.length;
      if (ids.length > 0) this.send(ids, 'claim-ids', thread);
      if (next.length > 0) this.send(next, 'claim-next', thread);
    }
    // More slots than room: the thread count is changing (SCALE, a thread
    // being replaced); piscina places these.
    for (; i < byId.length; i += size) this.send(byId.slice(i, i + size), 'claim-ids');
    for (; j < pulls.length; j += size) this.send(pulls.slice(j, j + size), 'claim-next');
  }

  private addLoad(thread: number, delta: number): void {
    const n = (this.load.get(thread) ?? 0) + delta;
    if (n <= 0) this.load.delete(thread);
    else this.load.set(thread, n);
  }

  /** Moves a batch's unfreed slots to the thread that actually claimed it. */
  private placeBatch(batch: Batch, thread: number): void {
    if (batch.threadId === thread) return;
    const held = batch.slots.reduce((n, s) => n + (s.freed ? 0 : 1), 0);
    if (batch.threadId !== null) this.addLoad(batch.threadId, -held);
    batch.threadId = thread;
    this.addLoad(thread, held);
  }

  private send(slots: Slot[], type: 'claim-ids' | 'claim-next', thread?: number): void {
    const { port1, port2 } = new MessageChannel();
    const batch: Batch = {
      slots,
      byIds: type === 'claim-ids',
      port: port1,
      threadId: null,
      claimedOn: null,
      claimed: [],
      backlogMark: this.backlogMark,
      failing: null,
      drained: false,
    };
    for (let i = 0; i < slots.length; i++) slots[i].batch = batch;
    if (thread !== undefined) this.placeBatch(batch, thread);
    const tasks = this.options.pool.tasks;
    const request: ThreadRequest =
      type === 'claim-ids' ? { type, ids: slots.map((s) => s.id!), tasks, port: port2 } : { type, count: slots.length, tasks, port: port2 };
    if (this.options.wantsDetails?.()) request.details = true;
    port1.on('message', (event: BatchEvent) => this.onEvent(batch, event));
    this.openBatches.add(batch);
    this.counters.batches++;
    void this.queue.add(() => {
      // A batch that waited here (every thread busy writing outcomes) must
      // not claim after a pause or a stop: its jobs are still in the table.
      if (this.paused || this.stopping) return this.dropUnsentBatch(batch, port2);
      return this.options.pool.run(request, [port2], thread).then(
        (response) => this.onDone(batch, type, response),
        (err: Error) => this.onFailed(batch, err),
      );
    });
  }

  private dropUnsentBatch(batch: Batch, port2: MessagePort): void {
    this.openBatches.delete(batch);
    batch.port.close();
    port2.close();
    this.freeSlots(batch.slots);
    if (!this.stopping) this.raiseBacklog();
  }

  private onEvent(batch: Batch, event: BatchEvent): void {
    switch (event.type) {
      case 'claimed': {
        this.placeBatch(batch, event.threadId);
        batch.claimedOn = event.threadId;
        batch.claimed = event.ids;
        const claimed = batch.byIds ? new Set(event.ids) : null;
        // Give each claimed job a slot; free the slots whose ids were not claimed.
        const byId = new Map<string, Slot>();
        const unclaimedPulls: Slot[] = [];
        for (let i = 0; i < batch.slots.length; i++) {
          const slot = batch.slots[i];
          if (slot.id === null) unclaimedPulls.push(slot);
          else if (claimed?.has(slot.id)) byId.set(slot.id, slot);
          else this.freeSlot(slot);
        }
        const now = Date.now();
        this.lastJobAt = now;
        const started: RunningJob[] = [];
        let nextPull = 0;
        for (let k = 0; k < event.ids.length; k++) {
          const id = event.ids[k];
          const task = event.tasks[k];
          const attempt = event.attempts[k];
          let slot = byId.get(id) ?? null;
          if (!slot && nextPull < unclaimedPulls.length) {
            slot = unclaimedPulls[nextPull++];
            slot.id = id;
            this.holding.add(id);
          }
          const job: RunningJob = {
            id,
            threadId: event.threadId,
            task,
            queue: event.queues[k],
            attempt,
            handledAt: 0,
            succeeded: undefined,
            startedAt: now,
            batch,
            slot,
            timer: null,
            handled: false,
            abortedFor: null,
          };
          this.running.set(id, job);
          started.push(job);
        }
        this.options.onJobs?.('started', started);
        for (let i = nextPull; i < unclaimedPulls.length; i++) this.freeSlot(unclaimedPulls[i]);
        this.options.onActivity?.();
        break;
      }
      case 'started': {
        const job = this.running.get(event.jobId);
        if (!job) break;
        job.startedAt = Date.now();
        // The clock starts when the handler starts, not when the job was dispatched.
        const ms = event.timeoutMs;
        job.timer = setTimeout(() => this.abort(event.jobId, 'timeout', `job timed out after ${ms} ms`), ms);
        job.timer.unref();
        break;
      }
      case 'launched':
        // Learned as soon as the handlers start, not when they end: a thread
        // whose first jobs wait on I/O for minutes still grows to its concurrency.
        this.limits.set(
          event.threadId,
          nextClaimLimit(this.learnedLimitOf(event.threadId), this.options.concurrency, event.jobs, event.blockedMs),
        );
        this.fill();
        break;
      case 'handled':
        this.handled(batch, event.ids);
        break;
      case 'finished':
        this.finish(batch, event.ids, event.threadId, event.unsuccessful, event.details, event.cancelled);
        break;
      case 'exiting':
        this.onThreadExiting(batch, event);
        break;
    }
  }

  /**
   * The batch's thread is exiting (a handler called process.exit(), an
   * uncaught error): its jobs go back now, not when piscina reports the
   * death, which waits for the Worker's 'exit' event (the thread's teardown,
   * most of a crashed job's way back to the queue). The thread runs
   * no more of its event loop, so it starts nothing new; what it already
   * sent (a claim's commit, an outcome write) the release waits for and the
   * fence sorts out, as after any death. Deaths that run no JavaScript (out
   * of memory, terminate()) are still heard from piscina.
   */
  private onThreadExiting(batch: Batch, event: Extract<BatchEvent, { type: 'exiting' }>): void {
    batch.drained = true;
    const thread = batch.claimedOn ?? batch.threadId;
    if (thread !== null) this.options.pool.markExiting(thread);
    const { code, error } = event;
    // threadStack: where in the thread it was thrown, so the jobs' last_error points at the handler's code.
    const err = error
      ? Object.assign(new Error(error.message), { name: error.name, code: error.code, threadStack: error.stack })
      : new Error(`worker exited with code: ${code}`);
    void this.onFailed(batch, err);
  }

  /**
   * Handlers that returned free their slots before their outcomes are
   * written, so the thread's next claim overlaps the write: for CPU-bound
   * jobs the write and the claim were the idle part of every batch. The jobs
   * stay running (a thread that dies now still has them released) until
   * 'finished'; an id re-notified meanwhile costs one skipped claim.
   */
  private handled(batch: Batch, ids: readonly string[]): void {
    const now = Date.now();
    let slowest = -1;
    for (const id of ids) {
      const job = this.running.get(id);
      // Not this batch's run: the job was released and claimed again meanwhile.
      if (!job || job.batch !== batch) continue;
      slowest = Math.max(slowest, now - job.startedAt);
      job.handled = true;
      job.handledAt = now;
      // Nothing is left to time out or to abort.
      if (job.timer) clearTimeout(job.timer);
      job.timer = null;
      if (job.slot) this.freeSlot(job.slot);
    }
    // From claim (or start, for jobs with a timeout) to return, waiting for a handler included.
    const thread = batch.claimedOn;
    if (slowest >= 0 && thread !== null) this.quick.set(thread, slowest <= QUICK_HANDLER_MS);
  }

  /**
   * Jobs a thread reports done (ids it no longer runs are skipped: a batch's
   * result repeats them). `unsuccessful` comes with the thread's own report
   * only; from the batch's result, success is left unknown.
   */
  private finish(
    batch: Batch,
    ids: readonly string[],
    threadId: number,
    unsuccessful?: readonly string[],
    details?: FailureDetails,
    cancelled?: readonly string[],
  ): void {
    if (details) this.applyDetails(details);
    // The row says cancelled, whatever the handler did: the events and metrics say so too.
    if (cancelled) {
      for (const id of cancelled) {
        const job = this.running.get(id);
        if (job?.batch === batch) job.abortedFor = 'cancelled';
      }
    }
    const finished: RunningJob[] = [];
    const notOk = unsuccessful && unsuccessful.length > 0 ? new Set(unsuccessful) : null;
    for (const id of ids) {
      const job = this.running.get(id);
      if (!job || job.batch !== batch) continue;
      if (unsuccessful) job.succeeded = !notOk?.has(id);
      if (job.timer) clearTimeout(job.timer);
      this.running.delete(id);
      finished.push(job);
      if (job.slot) this.freeSlot(job.slot);
    }
    if (finished.length === 0) return;
    this.options.onJobs?.('finished', finished);
    this.jobsRunByThread.set(threadId, (this.jobsRunByThread.get(threadId) ?? 0) + finished.length);
    this.lastJobAt = Date.now();
    this.options.onActivity?.();
  }

  /** What the thread said about how its jobs failed, onto the jobs, for the events. */
  private applyDetails(details: FailureDetails): void {
    for (let i = 0; i < details.ids.length; i++) {
      const job = this.running.get(details.ids[i]);
      if (job) job.failure = { error: details.errors[i], willRetry: details.retrying[i] };
    }
    for (const id of details.fenced) {
      const job = this.running.get(id);
      if (job) job.fenced = true;
    }
  }

  /**
   * Handles the batch's events still waiting on its port, then closes it.
   * Messages on two channels are not ordered with each other: the batch's
   * result (or piscina's rejection when its thread dies) can come first, and
   * closing the port then would drop the 'claimed' event, and with it the
   * supervisor log's record of the jobs or, for a dead thread, their release.
   */
  private closeBatchPort(batch: Batch): void {
    this.readBatchPort(batch);
    this.openBatches.delete(batch);
    batch.port.close();
  }

  /** Handles the reports waiting on a batch's port now, in order, rather than at their 'message' events. */
  private readBatchPort(batch: Batch): void {
    // Checked before every read: an 'exiting' event handled here ends the reading too.
    for (;;) {
      const m = batch.drained ? undefined : receiveMessageOnPort(batch.port);
      if (!m) break;
      this.onEvent(batch, m.message as BatchEvent);
    }
  }

  private onDone(batch: Batch, type: ThreadRequest['type'], response: ThreadResponse): void {
    this.closeBatchPort(batch);
    if (response.type !== 'batch-done') return;
    if (response.tasksError) {
      // Nothing was claimed: pulls from the table find these jobs again, on
      // the other threads or on the broken thread's replacement.
      if (this.options.pool.replaceBroken(response.threadId, response.tasksError.message)) this.counters.brokenThreads++;
      this.freeSlots(batch.slots);
      this.raiseBacklog();
      return;
    }
    this.options.pool.tasksLoaded(response.threadId);
    // The thread is alive after all (a batch it rejected did not end it): log its next crash too.
    this.crashLogged.delete(response.threadId);
    this.counters.claimed += response.claimed.length;
    this.counters.fenced += response.fenced;
    if (type === 'claim-ids') this.counters.wastedClaims += response.skipped;
    const failure = response.claimError ?? response.commitError;
    if (!failure && response.claimed.length === 0) this.counters.emptyClaims++;
    if (failure) {
      if (response.claimError) this.counters.claimErrors++;
      else this.counters.commitErrors++;
      this.claimFailures++;
      this.claimBackoffUntil = Date.now() + backoffMs({ attempt: this.claimFailures, baseMs: 50, maxMs: 2_000 });
      this.warn(
        this.options.logger,
        { err: failure.message },
        response.claimError ? 'claim failed; will retry from the table' : "a claim's commit failed; its jobs may run again from the table",
      );
      // The jobs are still pending (nothing was claimed, or the claim rolled
      // back): pull them once claims work again.
      this.raiseBacklog();
    } else {
      this.claimFailures = 0;
    }
    if (!failure && type === 'claim-next' && response.claimed.length < batch.slots.length) {
      if (response.dueLeft) {
        // It passed over jobs another statement held for a moment: pull
        // again shortly, backing off while they stay held.
        this.lockedPulls++;
        this.claimBackoffUntil = Math.max(
          this.claimBackoffUntil,
          Date.now() + backoffMs({ attempt: this.lockedPulls, baseMs: 1, maxMs: 500 }),
        );
      } else if (batch.backlogMark === this.backlogMark) {
        // The table had fewer due jobs than we asked for, and nobody has
        // announced one since the pull was sent: the backlog is drained.
        this.backlog = false;
        this.lockedPulls = 0;
      }
    } else if (type === 'claim-next' && !failure) {
      this.lockedPulls = 0;
    }
    this.finish(batch, response.claimed, response.threadId);
    this.freeSlots(batch.slots);
  }

  /** The batch's thread died (or the pool was destroyed): give its jobs back at once. */
  private onFailed(batch: Batch, err: Error): Promise<void> {
    if (batch.failing) return batch.failing;
    // The thread's own 'exiting' report may still be waiting on the port when
    // piscina's rejection comes first; it carries the error as the thread saw
    // it, stack included, so reading the port hands the failure to it.
    this.closeBatchPort(batch);
    batch.failing ??= this.giveBack(batch, err);
    return batch.failing;
  }

  private async giveBack(batch: Batch, err: Error): Promise<void> {
    // Only this batch's runs: a job released by the thread sweep may already run again elsewhere here.
    const gone: RunningJob[] = [];
    for (const id of batch.claimed) {
      const job = this.running.get(id);
      if (job?.batch === batch) gone.push(job);
    }
    const { releases, crashed, logCrashOf } = decideCrashRelease(
      { claimedOn: batch.claimedOn, sentTo: batch.threadId, jobs: gone, error: err },
      { stopping: this.stopping, killing: this.killing, crashLogged: this.crashLogged },
    );
    if (crashed) this.counters.threadCrashes++;
    if (logCrashOf !== null) {
      this.crashLogged.add(logCrashOf);
      this.options.logger.warn({ threadId: logCrashOf, err: this.options.pool.redact(describeCrash(err)) }, 'a thread crashed');
    }
    // Forget the jobs and free their slots before releasing them: the release
    // notifies their ids, and an id still held here would be dropped as a
    // duplicate, leaving the job to the next sweep instead of running now.
    for (const job of gone) {
      if (job.timer) clearTimeout(job.timer);
      this.running.delete(job.id);
      const taken = this.takenBy.get(job.threadId);
      if (taken) taken.push(job.id);
      else this.takenBy.set(job.threadId, [job.id]);
    }
    if (gone.length > 0) this.options.onJobs?.('finished', gone);
    this.freeSlots(batch.slots);
    const released = releases.length > 0 ? await this.options.release(releases) : null;
    if (crashed && released && this.options.onCrashReleased) {
      // As the release stored it: a crash reason may echo the connection string.
      const stored = releases.map((r) => ({ ...r, reason: this.options.pool.redact(r.reason) }));
      this.options.onCrashReleased(crashedJobs(gone, stored, released));
    }
    // A batch whose thread died before it claimed (or before it said so)
    // took its notified ids with it, and a claim whose commit did not
    // complete (its backend ended with the thread, or the server went away)
    // rolled back: those jobs are pending, and nobody will announce them
    // again, so pull from the table. Only now: a pull sent before the release
    // would hold the surviving threads' slots while the released jobs, not
    // yet pending, could not be in it, and their notification would find no
    // room. Jobs it claimed without saying so are released by the runtime's
    // thread sweep.
    if (!this.stopping) this.markBacklog();
  }

  /** The jobs this supervisor knows the thread was running when it died: still running here, or given back already. */
  jobsTakenBy(threadId: number): string[] {
    // A thread's 'exit' can come before its last reports (the claim) are read off the ports.
    for (const batch of this.openBatches) this.readBatchPort(batch);
    const ids = new Set(this.takenBy.get(threadId));
    for (const job of this.running.values()) if (job.threadId === threadId) ids.add(job.id);
    return [...ids];
  }

  /**
   * Called when a thread has exited. The thread's 'exit' event can arrive
   * before piscina's rejections of its batches are handled, so the record of
   * why we killed it is kept a little longer (thread ids are never reused).
   */
  forgetThread(threadId: number): void {
    setTimeout(() => {
      this.takenBy.delete(threadId);
      this.killing.delete(threadId);
      this.crashLogged.delete(threadId);
      this.limits.delete(threadId);
      this.quick.delete(threadId);
    }, 10_000).unref();
  }
}

/** The jobs a crash released, each with what the release made of it; a job the release did not find (its run already over) is left out. */
function crashedJobs(gone: readonly RunningJob[], releases: readonly Release[], released: ReleasedRow): CrashedJob[] {
  const changed = new Set(released.ids);
  const failed = new Set(released.failed);
  const cancelled = new Set(released.cancelled);
  const reasons = new Map(releases.map((r) => [r.id, r.reason]));
  return gone
    .filter((job) => changed.has(job.id))
    .map((job) => ({
      job,
      reason: reasons.get(job.id) ?? '',
      state: failed.has(job.id) ? 'failed' : cancelled.has(job.id) ? 'cancelled' : 'pending',
    }));
}

/**
 * Batches in flight: every slot in a batch of its own, and as many again
 * whose handlers are done and whose outcomes are still being written.
 */
function batchLimit(capacity: number): number {
  return 2 * capacity;
}
