import { EventEmitter } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ResourceLimits, Worker } from 'node:worker_threads';
import { Piscina, queueOptionsSymbol } from 'piscina';
import type { Logger } from 'pino';
import { backoffMs } from '../src/backoff.ts';
import type { ConnectionBudget } from '../src/connection-budget.ts';
import { GrapevineError } from '../src/errors.ts';
import { maxClaimLimit } from './claim-limit.ts';
import type { ThreadConfig, ThreadRequest, ThreadResponse } from '../src/protocol.ts';
import { redactSecret } from '../src/redact.ts';

// The thread entry sits beside this file's sibling folder with the same
// extension: .ts when run from source, .js from the built package. The test
// suites run the supervisor from source but point its threads at the build
// (GRAPEVINE_TEST_THREAD_ENTRY, see vitest.config.ts): a thread that loads .ts
// compiles Node's type stripper, which is WebAssembly, and V8 has aborted
// ("Check failed: jit_page.has_value()", "jit_page_->allocations_.erase(addr)
// == 1") under the suites' churn of threads. Task modules the suites load in
// threads import grapevine from its build for the same reason.
const here = fileURLToPath(import.meta.url);
const THREAD_ENTRY =
  process.env.GRAPEVINE_TEST_THREAD_ENTRY || path.join(path.dirname(here), '..', 'threads', `entry${path.extname(here)}`);

export interface ThreadPoolOptions {
  threads: number;
  concurrency: number;
  config: ThreadConfig;
  /** The threads' connections (config.budget's buffer): a thread that ends cannot count its own out. */
  budget: ConnectionBudget;
  resourceLimits?: ResourceLimits;
  logger: Logger;
}

export interface ThreadInfo {
  threadId: number;
  generation: number;
  startedAt: Date;
}

/**
 * The piscina pool, wrapped so the supervisor can see each thread: which
 * threads live, when one exits and why, and terminate one on purpose.
 *
 * piscina cannot resize or reload a pool, and stops refilling for good after
 * a thread fails while booting, so resizing, reloading and repairing all work
 * the same way: start a new generation, check it can load the tasks, send new
 * work to it, and destroy the old one once its batches are done.
 * Events: 'exit' (threadId, exitCode, expected: boolean), 'start' (threadId,
 * generation, restart: boolean), 'replaced' (a new generation now takes the work).
 */
export class ThreadPool extends EventEmitter {
  // All fields are owned by the main thread.
  private current: Piscina | null = null;
  private generation = 0;
  private readonly generations = new Map<Piscina, { id: number; size: number; created: number; running: number; retiring: boolean }>();
  private readonly live = new Map<number, ThreadInfo & { worker: Worker; pool: Piscina }>();
  private readonly terminating = new Set<number>();
  /** Threads that said they are exiting, until their 'exit' event: no new work goes to them. */
  private readonly exiting = new Set<number>();
  private destroyed = false;
  private repairTimer: NodeJS.Timeout | null = null;
  /** Failed repairs in a row: the pause before the next one grows with them. */
  private repairFailures = 0;
  /** Broken threads in a row: the pause before one is replaced grows while replacements keep failing to load. */
  private brokenInARow = 0;
  private lastBrokenThread = 0;
  private readonly brokenTimers = new Set<NodeJS.Timeout>();
  threads: number;
  /** Threads started to replace ones that died. */
  restarts = 0;
  /** Task names the current generation can run. */
  tasks: string[] = [];

  private readonly options: ThreadPoolOptions;

  constructor(options: ThreadPoolOptions) {
    super();
    this.options = options;
    this.threads = options.threads;
  }

  /** Starts the first generation; fails with the task path if the tasks cannot load. */
  async start(): Promise<void> {
    this.current = await this.spawnGeneration(this.threads);
  }

  /** New generation with `threads` threads (default: the same count); old one drains. */
  async replace(threads = this.threads): Promise<void> {
    const next = await this.spawnGeneration(threads);
    if (this.destroyed) {
      // The pool was destroyed while these threads started (a stop did not wait for a stuck REFRESH).
      await this.destroyGeneration(next);
      throw new Error('the thread pool was destroyed while new threads started');
    }
    const old = this.current;
    this.current = next;
    this.threads = threads;
    this.options.budget.setThreads(threads);
    if (old) this.retire(old);
    // Its threads' 'start' events came while the old generation was current.
    this.emit('replaced');
  }

  /**
   * Runs one request; with `thread`, on that thread of the current generation
   * if it is still alive (the dispatcher balances jobs, which piscina cannot
   * see: it counts batches, and learns a batch is done only after the
   * batch's jobs have already been reported finished).
   */
  run(request: ThreadRequest, transferList: Transferable[], thread?: number): Promise<ThreadResponse> {
    const pool = this.current;
    if (!pool || this.destroyed) return Promise.reject(new GrapevineError('GRAPEVINE_SHUTDOWN', 'thread pool is stopped'));
    const gen = this.generations.get(pool)!;
    gen.running++;
    // Symbol keys are not structured-cloned: the routing hint stays on this side.
    const task = thread === undefined ? request : Object.assign(request, { [queueOptionsSymbol]: { thread } });
    return pool.run(task, { transferList: transferList as never }).finally(() => {
      gen.running--;
      if (gen.retiring && gen.running === 0) void this.destroyGeneration(pool);
    });
  }

  /** Thread ids of the generation new work goes to. */
  currentThreadIds(): number[] {
    const ids: number[] = [];
    for (const entry of this.live.values()) {
      if (entry.pool === this.current && !this.terminating.has(entry.threadId) && !this.exiting.has(entry.threadId))
        ids.push(entry.threadId);
    }
    return ids;
  }

  /**
   * A thread announced that it is exiting (the dispatcher heard it on a
   * batch's port). Until piscina sees it go, it gets no new work.
   */
  markExiting(threadId: number): void {
    if (this.live.has(threadId)) this.exiting.add(threadId);
  }

  /**
   * A thread could not import the task modules (piscina started it to
   * replace one that died, and the import failed this time). It claims
   * nothing, so to the dispatcher it would look like the idlest thread with
   * an empty queue and get every batch. It gets no more work from now on and
   * is replaced after a pause: 250 ms, doubling up to 30 s for each broken
   * thread until a thread started after the last one answers a batch
   * (thread ids only grow), so a module that can no longer load does not
   * keep the CPU busy starting threads. A thread of a generation on its way
   * out is only kept from work: retiring it ends it.
   * Returns false if the thread was already reported (it may answer several
   * batches sent before its first answer) or is gone.
   */
  replaceBroken(threadId: number, reason: string): boolean {
    const entry = this.live.get(threadId);
    if (!entry || this.exiting.has(threadId) || this.terminating.has(threadId) || this.destroyed) return false;
    this.markExiting(threadId);
    const err = this.redact(reason);
    if (entry.pool !== this.current) {
      this.options.logger.warn({ threadId, err }, 'a thread could not load the task modules; its generation is retiring');
      return true;
    }
    const replaceInMs = backoffMs({ attempt: this.brokenInARow++, baseMs: 250, maxMs: 30_000 });
    this.lastBrokenThread = Math.max(this.lastBrokenThread, threadId);
    this.options.logger.warn({ threadId, err, replaceInMs }, 'a thread could not load the task modules; replacing it');
    const timer = setTimeout(() => {
      this.brokenTimers.delete(timer);
      this.terminate(threadId);
    }, replaceInMs);
    timer.unref();
    this.brokenTimers.add(timer);
    return true;
  }

  /** Text from threads (task modules' and handlers' errors) may echo the connection string. */
  redact(text: string): string {
    return redactSecret(text, this.options.config.connectionString);
  }

  /** A thread answered a batch with its tasks loaded: if it started after the last broken one, broken threads are replaced quickly again. */
  tasksLoaded(threadId: number): void {
    if (threadId > this.lastBrokenThread) this.brokenInARow = 0;
  }

  liveThreads(): ThreadInfo[] {
    return [...this.live.values()].map(({ threadId, generation, startedAt }) => ({ threadId, generation, startedAt }));
  }

  /** Terminates one thread (a runaway or cancelled job); piscina rejects its batches and starts a replacement. */
  terminate(threadId: number): boolean {
    const entry = this.live.get(threadId);
    if (!entry) return false;
    this.terminating.add(threadId);
    void entry.worker.terminate();
    return true;
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    if (this.repairTimer) clearTimeout(this.repairTimer);
    for (const timer of this.brokenTimers) clearTimeout(timer);
    this.brokenTimers.clear();
    await Promise.all([...this.generations.keys()].map((p) => this.destroyGeneration(p)));
    this.current = null;
  }

  private async spawnGeneration(threads: number): Promise<Piscina> {
    const id = ++this.generation;
    const pool = new Piscina({
      filename: THREAD_ENTRY,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Infinity,
      // The default 'sync' blocks idle threads in Atomics.wait, so their
      // event loops stop and pg never notices a dropped connection.
      atomics: 'disabled',
      // A batch per job at most: a thread holds up to maxClaimLimit() jobs.
      concurrentTasksPerWorker: maxClaimLimit(this.options.concurrency),
      workerData: this.options.config,
      resourceLimits: this.options.resourceLimits,
      recordTiming: false,
      loadBalancer: preferredThreadBalancer(maxClaimLimit(this.options.concurrency), (threadId) => this.exiting.has(threadId)),
    });
    this.generations.set(pool, { id, size: threads, created: 0, running: 0, retiring: false });
    pool.on('workerCreate', (w: { id: number }) => this.track(pool, id, w.id));
    // Without an 'error' listener, a thread that dies while idle would take the process down.
    pool.on('error', (err: Error) => this.options.logger.warn({ err: this.redact(err.message) }, 'thread failed outside a job'));
    try {
      const described = (await pool.run({ type: 'describe' } satisfies ThreadRequest)) as Extract<ThreadResponse, { type: 'described' }>;
      if (described.error) {
        throw new GrapevineError(
          'GRAPEVINE_TASKS_INVALID',
          `cannot load tasks from ${this.options.config.tasksPath}: ${this.redact(described.error.message)}`,
        );
      }
      this.tasks = described.tasks;
      return pool;
    } catch (err) {
      await this.destroyGeneration(pool);
      if (err instanceof GrapevineError) throw err;
      throw new GrapevineError(
        'GRAPEVINE_TASKS_INVALID',
        `threads could not start with tasks from ${this.options.config.tasksPath}: ${this.redact((err as Error).message)}`,
        { cause: err },
      );
    }
  }

  private track(pool: Piscina, generation: number, threadId: number): void {
    const worker = pool.threads.find((w: Worker) => w.threadId === threadId);
    if (!worker || this.live.has(threadId)) return;
    const gen = this.generations.get(pool);
    const restart = gen !== undefined && ++gen.created > gen.size;
    if (restart) this.restarts++;
    this.live.set(threadId, { threadId, generation, startedAt: new Date(), worker, pool });
    this.emit('start', threadId, generation, restart);
    worker.once('exit', (code: number) => {
      // Its sockets closed with it.
      this.options.budget.reclaim(threadId);
      this.live.delete(threadId);
      this.exiting.delete(threadId);
      const gen = this.generations.get(pool);
      const expected = this.destroyed || !gen || gen.retiring || this.terminating.delete(threadId);
      this.emit('exit', threadId, code, expected);
      if (pool === this.current && !this.destroyed) this.scheduleRepair();
    });
  }

  /**
   * piscina replaces a dead thread by itself, except after a boot failure;
   * if the pool is still short a little later, a new generation replaces it,
   * with growing pauses so a module that cannot load does not spin the CPU.
   */
  private scheduleRepair(): void {
    if (this.repairTimer) return;
    this.repairTimer = setTimeout(
      () => {
        this.repairTimer = null;
        const pool = this.current;
        if (!pool || this.destroyed) return;
        if (pool.threads.length >= this.threads) {
          this.repairFailures = 0;
          return;
        }
        this.options.logger.warn({ threads: pool.threads.length, wanted: this.threads }, 'thread pool is short; starting a new generation');
        this.replace().then(
          () => {
            this.repairFailures = 0;
          },
          (err: Error) => {
            this.options.logger.error({ err: err.message }, 'could not restore the thread pool; will retry');
            this.repairFailures++;
            this.scheduleRepair();
          },
        );
      },
      backoffMs({ attempt: this.repairFailures, baseMs: 500, maxMs: 30_000 }),
    );
    this.repairTimer.unref();
  }

  private retire(pool: Piscina): void {
    const gen = this.generations.get(pool);
    if (!gen) return;
    gen.retiring = true;
    if (gen.running === 0) void this.destroyGeneration(pool);
  }

  private async destroyGeneration(pool: Piscina): Promise<void> {
    const gen = this.generations.get(pool);
    if (!gen) return;
    gen.retiring = true;
    this.generations.delete(pool);
    // destroy(), not close(): close() in piscina 5.3 can kill running tasks of
    // other threads; by now this generation has no batches left anyway.
    await pool.destroy().catch(() => {});
  }
}

type Balancer = NonNullable<ConstructorParameters<typeof Piscina>[0]>['loadBalancer'] & {};

/**
 * The thread the dispatcher chose, if piscina still has it; otherwise what
 * piscina's own balancer would pick: an idle thread, else the least busy
 * one with room. Threads that announced their exit are skipped: piscina
 * counts them as live until their 'exit' event.
 */
function preferredThreadBalancer(maximumUsage: number, exiting: (threadId: number) => boolean): Balancer {
  return (task, workers) => {
    const wanted = (task[queueOptionsSymbol] as { thread?: number } | null)?.thread;
    let best: (typeof workers)[number] | null = null;
    for (const worker of workers) {
      if (worker.terminating || worker.destroyed || exiting(worker.id)) continue;
      if (worker.id === wanted) return worker;
      if (worker.currentUsage < maximumUsage && (best === null || worker.currentUsage < best.currentUsage)) best = worker;
    }
    return best;
  };
}
