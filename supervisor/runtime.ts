/**
 * The running supervisor: wires the LISTEN connection, the dispatcher, the
 * threads, the control plane and the timers (heartbeat, reaper, sweep)
 * together. Built by startSupervisor() in index.ts.
 */
import os from 'node:os';
import type pg from 'pg';
import { backoffMs } from '../src/backoff.ts';
import { explainConnectionErrors, listenTarget, rowsOf, withAnswerDeadline, withPipelinedTransaction } from '../src/db.ts';
import { Listener } from '../src/listener.ts';
import { throttled, throttledWarnings, type Logger } from '../src/log.ts';
import { NOTIFY_DROP_USAGE, parseJobNotification, takeIds } from '../src/notification.ts';
import { describeConnection, redactSecret } from '../src/redact.ts';
import { channelsFor } from '../src/schema/channels.ts';
import { hasDue, lockJobsQuery, releaseJobsQuery, releaseUnreported, renewLeasesQuery } from '../src/sql/jobs.ts';
import { deregisterSupervisor, heartbeatQuery, registerSupervisor } from '../src/sql/supervisors.ts';
import { VERSION } from '../src/version.ts';
import { ControlPlane } from './control.ts';
import { Dispatcher, type Release } from './dispatcher.ts';
import { Reaper } from './maintenance.ts';
import { ThreadPool } from './threads.ts';
import type { Supervisor, SupervisorState, SupervisorStatus } from './index.ts';

export interface RuntimeOptions {
  id: string;
  schema: string;
  connectionString: string;
  /** Where the LISTEN connection goes: the server itself when connectionString is a pooler. */
  listenUrl: string;
  pool: pg.Pool;
  threadPool: ThreadPool;
  threads: number;
  concurrency: number;
  queues: string[] | null;
  logger: Logger;
  timing: {
    heartbeatIntervalMs: number;
    leaseMs: number;
    reaperIntervalMs: number;
    sweepIntervalMs: number;
    shutdownGraceMs: number;
    killGraceMs: number;
    listenerHealthCheckMs: number;
  };
  retentionMs: number;
  allowEval: boolean;
  idleTimeoutMs: number | null;
}

export class SupervisorRuntime implements Supervisor {
  readonly id: string;
  readonly stopped: Promise<void>;
  private readonly o: RuntimeOptions;
  private readonly dispatcher: Dispatcher;
  private readonly listener: Listener;
  private readonly reaper: Reaper;
  private readonly channels: ReturnType<typeof channelsFor>;
  /** Messages, worker log and idle timeout (supervisor/control.ts). */
  private readonly control: ControlPlane;
  private readonly timers: NodeJS.Timeout[] = [];
  private dueTimer: NodeJS.Timeout | null = null;
  private dueAt = Infinity;
  private stopping: Promise<void> | null = null;
  private forceStop: (() => void) | null = null;
  /** Set once start() has recorded the first LISTEN backend; reconnects record theirs. */
  private listening = false;
  private resolveStopped!: () => void;
  private state: SupervisorState = 'IDLE';
  private malformed = 0;
  private readonly warnMalformed = throttled(1_000);
  private readonly warnDb = throttledWarnings(1_000);
  private readonly warnNotifyQueue = throttled(60_000);

  constructor(options: RuntimeOptions) {
    this.o = options;
    this.id = options.id;
    this.channels = channelsFor(options.schema);
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    this.dispatcher = new Dispatcher({
      pool: options.threadPool,
      threads: options.threads,
      concurrency: options.concurrency,
      logger: options.logger,
      killGraceMs: options.timing.killGraceMs,
      release: (jobs) => this.release(jobs),
      onJobs: (type, jobs) => this.control.onJobs(type, jobs),
    });
    this.listener = new Listener({
      ...listenTarget(options.listenUrl, options.pool, options.connectionString),
      channels: [this.channels.jobs, this.channels.control],
      applicationName: 'grapevine-listener',
      logger: options.logger,
      healthCheckMs: options.timing.listenerHealthCheckMs,
      healthTimeoutMs: Math.min(3_000, options.timing.listenerHealthCheckMs),
    });
    this.reaper = new Reaper({
      pool: options.pool,
      schema: options.schema,
      leaseMs: options.timing.leaseMs,
      intervalMs: options.timing.reaperIntervalMs,
      retentionMs: options.retentionMs,
      logger: options.logger,
    });
    // --- control plane (supervisor/control.ts) ---
    this.control = new ControlPlane({
      id: options.id,
      schema: options.schema,
      connectionString: options.connectionString,
      pool: options.pool,
      logger: options.logger,
      threadPool: options.threadPool,
      queues: options.queues,
      concurrency: options.concurrency,
      allowEval: options.allowEval,
      idleTimeoutMs: options.idleTimeoutMs,
      status: () => this.status(),
      isPaused: () => this.dispatcher.isPaused,
      inFlight: () => this.dispatcher.inFlight,
      lastJobAt: () => this.dispatcher.lastJobAt,
      pause: () => this.pause(),
      resume: () => this.resume(),
      replaceThreads: async (threads) => {
        await options.threadPool.replace(threads);
        this.dispatcher.resize(options.threadPool.threads);
      },
      markBacklog: () => this.dispatcher.markBacklog(),
      stop: (reason) => void this.stop({ reason }),
    });
    // --- end control plane ---
  }

  get tasks(): string[] {
    return this.o.threadPool.tasks;
  }

  async start(): Promise<void> {
    const { pool, schema, logger, threadPool } = this.o;
    await explainConnectionErrors(this.o.connectionString, () =>
      registerSupervisor(pool, schema, {
        id: this.id,
        host: os.hostname(),
        pid: process.pid,
        version: VERSION,
        threads: this.o.threads,
        concurrency: this.o.concurrency,
        queues: this.o.queues,
        tasks: threadPool.tasks,
      }),
    );
    this.listener.on('notification', (channel: string, payload: string) => this.onNotification(channel, payload));
    // Notifications sent while we were not listening are gone: re-read the table.
    this.listener.on('connected', () => {
      // The first connection is start()'s to follow up, below.
      if (!this.listening) return;
      this.dispatcher.markBacklog();
      this.control.wake();
      // The row names the new LISTEN backend now, not at the next beat.
      void this.heartbeat();
    });
    threadPool.on('start', () => this.dispatcher.threadStarted());
    threadPool.on('replaced', () => this.dispatcher.threadStarted());
    threadPool.on('exit', (threadId: number, code: number, expected: boolean) => {
      if (!expected) logger.warn({ threadId, code }, 'thread exited unexpectedly; piscina is replacing it');
      this.dispatcher.forgetThread(threadId);
      this.sweepDeadThread(threadId, code);
    });
    await this.listener.start();
    // Before any claim: the row names the LISTEN backend (grapevine/testing's killListeners()
    // cuts only its own schema's), and a pause() right after start still comes first.
    await this.heartbeat();
    this.listening = true;
    this.dispatcher.markBacklog();
    // A tick that is still running when the next is due is not started
    // twice: a stalled heartbeat must not pile up and take every connection.
    const every = (ms: number, fn: () => Promise<unknown>) => {
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        void fn().finally(() => {
          running = false;
        });
      }, ms);
      this.timers.push(timer);
    };
    every(this.o.timing.heartbeatIntervalMs, () => this.heartbeat());
    every(this.o.timing.reaperIntervalMs, () => this.reaper.tick());
    every(this.o.timing.sweepIntervalMs, () => this.sweep());
    this.control.start();
    logger.info(
      {
        threads: this.o.threads,
        concurrency: this.o.concurrency,
        tasks: threadPool.tasks,
        queues: this.o.queues ?? 'all',
        database: describeConnection(this.o.connectionString),
        ...(this.o.listenUrl === this.o.connectionString ? {} : { listen: describeConnection(this.o.listenUrl) }),
        schema,
      },
      'supervisor started',
    );
  }

  status(): SupervisorStatus {
    const running = [...this.dispatcher.runningJobs.values()];
    const threads = this.o.threadPool.liveThreads().map((t) => ({
      threadId: t.threadId,
      generation: t.generation,
      currentJobs: running.filter((j) => j.threadId === t.threadId).map((j) => j.id),
      jobsRun: this.dispatcher.jobsRunByThread.get(t.threadId) ?? 0,
    }));
    return {
      id: this.id,
      state: this.currentState(),
      threads,
      restarts: this.o.threadPool.restarts,
      inFlight: this.dispatcher.inFlight,
      counters: { ...this.dispatcher.counters, malformedNotifications: this.malformed, listenerReconnects: this.listener.reconnects },
    };
  }

  pause(): void {
    this.dispatcher.pause();
    this.o.logger.info('paused: no new jobs will be claimed');
    this.control.note('PAUSE');
  }

  resume(): void {
    this.dispatcher.resume();
    this.o.logger.info('resumed');
    this.control.note('RESUME');
  }

  killThread(threadId?: number): number | null {
    const live = this.o.threadPool.liveThreads().map((t) => t.threadId);
    const busy = new Set([...this.dispatcher.runningJobs.values()].map((j) => j.threadId));
    const target = threadId ?? pick(live.filter((t) => busy.has(t))) ?? pick(live);
    if (target === undefined || !this.o.threadPool.terminate(target)) return null;
    // An outside kill is a crash like any other: its jobs count an attempt.
    return target;
  }

  listenerPid(): number | null {
    return this.listener.backendPid;
  }

  reapNow() {
    return this.reaper.tick({ force: true });
  }

  stop(options: { graceMs?: number; reason?: string } = {}): Promise<void> {
    if (this.stopping) {
      // A second stop while the first waits for running jobs means: now.
      if (options.graceMs === 0) this.forceStop?.();
      return this.stopping;
    }
    this.stopping = this.shutdown(options.graceMs ?? this.o.timing.shutdownGraceMs, options.reason);
    return this.stopping;
  }

  private currentState(): SupervisorState {
    if (this.state === 'STOPPING' || this.state === 'EXITED') return this.state;
    if (this.dispatcher.isPaused) return 'PAUSED';
    return this.dispatcher.runningJobs.size > 0 ? 'BUSY' : 'IDLE';
  }

  private async shutdown(graceMs: number, reason?: string): Promise<void> {
    const { logger, pool, schema, threadPool } = this.o;
    this.state = 'STOPPING';
    logger.info({ graceMs, reason }, 'stopping: no new jobs; waiting for running jobs');
    this.control.onStopping(reason);
    this.dispatcher.stop();
    for (const timer of this.timers) clearInterval(timer);
    if (this.dueTimer) clearTimeout(this.dueTimer);

    let graceTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.dispatcher.onIdle(),
      new Promise<void>((resolve) => {
        this.forceStop = resolve;
        graceTimer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(graceTimer);

    const left = [...this.dispatcher.runningJobs.values()];
    if (left.length > 0) {
      // Release first: the fence then rejects any outcome a handler writes later.
      logger.warn({ jobs: left.map((j) => j.id) }, 'grace period over; releasing jobs that are still running');
      await this.release(left.map((j) => ({ id: j.id, thread: j.threadId, reason: 'supervisor shut down before the job finished', count: false })));
      for (const job of left) this.dispatcher.abort(job.id, 'shutdown', 'supervisor is shutting down');
    }
    await threadPool.destroy();
    // A claim a thread had committed but not yet reported when it was ended
    // (a forced stop does not wait for it) still names this supervisor, and
    // would wait for its lease.
    await this.releaseUnreported(null, 'supervisor shut down before the job finished', false).then(
      (ids) => {
        if (ids.length > 0) logger.warn({ jobs: ids }, 'released jobs a thread claimed but had not reported when the supervisor stopped');
      },
      (err: Error) => logger.warn({ err: err.message }, 'could not release unreported claims; their leases will return them'),
    );
    await this.listener.stop();
    await deregisterSupervisor(pool, schema, { id: this.id }).catch((err: Error) =>
      logger.warn({ err: err.message }, 'could not deregister'),
    );
    await this.control.close();
    await pool.end().catch(() => {});
    this.state = 'EXITED';
    logger.info('stopped');
    this.resolveStopped();
  }

  private onNotification(channel: string, payload: string): void {
    if (channel === this.channels.jobs) {
      const parsed = parseJobNotification(payload);
      if (parsed.kind === 'ids') {
        this.dispatcher.counters.notifiedIds += parsed.count;
        const room = Math.max(0, this.dispatcher.free());
        const ids = takeIds(parsed.ranges, room);
        this.dispatcher.offer(ids);
        if (parsed.count > ids.length) {
          this.dispatcher.counters.overflowIds += parsed.count - ids.length;
          this.dispatcher.markBacklog();
        }
      } else if (parsed.kind === 'due-at') {
        this.wakeAt(parsed.at);
      } else {
        this.onMalformed(channel, parsed.reason);
      }
      return;
    }
    if (channel === this.channels.control) this.onControl(payload);
  }

  private onControl(payload: string): void {
    let message: { type?: unknown; job?: unknown; to?: unknown; id?: unknown };
    try {
      message = JSON.parse(payload);
    } catch {
      this.onMalformed(this.channels.control, 'not JSON');
      return;
    }
    if (message?.type === 'cancel' && typeof message.job === 'string') {
      if (message.to !== this.id) return;
      if (this.dispatcher.abort(message.job, 'cancelled', 'job was cancelled')) {
        this.o.logger.info({ jobId: message.job }, 'cancelling running job');
      }
      return;
    }
    if (message?.type === 'message') {
      this.control.onNotify(message);
      return;
    }
    this.onMalformed(this.channels.control, 'unknown message');
  }

  private onMalformed(channel: string, reason: string): void {
    this.malformed++;
    this.warnMalformed((suppressed) =>
      this.o.logger.warn({ channel, reason, suppressed, total: this.malformed }, 'ignored a malformed notification'),
    );
  }

  /** A job becomes due at `at` (epoch ms): make sure we look then. */
  private wakeAt(at: number): void {
    if (at >= this.dueAt || this.state === 'STOPPING') return;
    if (this.dueTimer) clearTimeout(this.dueTimer);
    this.dueAt = at;
    const delay = Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1);
    this.dueTimer = setTimeout(() => {
      this.dueTimer = null;
      this.dueAt = Infinity;
      this.dispatcher.markBacklog();
    }, delay);
  }

  /** Due jobs nobody was told about (delayed run_at, retries, lost notifications). */
  private async sweep(): Promise<void> {
    if (this.dispatcher.isPaused || this.state === 'STOPPING' || this.dispatcher.free() <= 0) return;
    if (this.dispatcher.hasBacklog()) return this.dispatcher.markBacklog();
    try {
      if (await hasDue(this.o.pool, this.o.schema, { tasks: this.o.threadPool.tasks, queues: this.o.queues })) this.dispatcher.markBacklog();
    } catch (err) {
      this.warnDb(this.o.logger, { err: (err as Error).message }, 'sweep failed');
    }
  }

  private async heartbeat(): Promise<void> {
    const { pool, schema, timing, logger } = this.o;
    const status = this.status();
    // Sooner than the pool's own deadline: a heartbeat stuck on a silent
    // connection holds up the next one, and the leases run out meanwhile.
    const answerWithinMs = Math.max(500, Math.floor(timing.leaseMs / 4));
    try {
      const beat = heartbeatQuery(schema, {
        id: this.id,
        status: status.state === 'STOPPING' ? 'BUSY' : status.state,
        threads: status.threads.length,
        // listenerPid: grapevine/testing's killListeners() cuts this schema's LISTEN connections only.
        info: { threads: status.threads, restarts: status.restarts, counters: status.counters, listenerPid: this.listener.backendPid },
        tasks: this.o.threadPool.tasks,
      });
      const rows = await rowsOf(pool, withAnswerDeadline(beat, answerWithinMs));
      if (rows[0]?.previous_status === 'LOST') {
        logger.warn('this supervisor was declared LOST (paused or cut off too long); its earlier jobs were reaped and their late outcomes are fenced');
      }
      const usage = Number(rows[0]?.notify_queue_usage ?? 0);
      if (usage >= NOTIFY_DROP_USAGE) {
        // Control messages are not announced either: look for them now rather than at the 10 s safety drain.
        this.control.wake();
        this.warnNotifyQueue((suppressed) =>
          logger.warn(
            { notifyQueueUsage: Math.round(usage * 100) / 100, sweepIntervalMs: timing.sweepIntervalMs, suppressed },
            "PostgreSQL's NOTIFY queue is half full or more, so grapevine sends no notifications: supervisors find new jobs by their sweep instead of at once. " +
              'A session that ran LISTEN and stays in one transaction holds the queue: find it among the oldest transactions ' +
              '(SELECT pid, application_name, state, xact_start FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start LIMIT 5) and end it',
          ),
        );
      }
      const ids = [...this.dispatcher.runningJobs.keys()];
      if (ids.length > 0) {
        const renew = renewLeasesQuery(schema, { owner: this.id, ids, leaseMs: timing.leaseMs });
        const renewed = await rowsOf(pool, withAnswerDeadline(renew, answerWithinMs));
        // A cancel notification sent while the LISTEN connection was down is
        // gone; the flag on the row is not.
        for (const row of renewed) {
          if (row.cancel_requested && this.dispatcher.abort(row.id, 'cancelled', 'job was cancelled')) {
            logger.info({ jobId: row.id }, 'cancelling running job (seen at heartbeat)');
          }
        }
      }
    } catch (err) {
      this.warnDb(logger, { err: (err as Error).message }, 'heartbeat failed');
    }
  }

  /**
   * The dispatcher releases the jobs a dead thread reported. A claim that
   * committed just as the thread died was never reported; look for those a
   * little later (after the dispatcher's own releases, which carry the better
   * reasons) instead of leaving them to the lease.
   */
  private sweepDeadThread(threadId: number, code: number): void {
    const reason = `thread ${threadId} exited (code ${code}) after claiming this job`;
    // Late enough that the dispatcher's own release (with the real reason) has normally run.
    for (const delay of [1_000, 3_000]) {
      setTimeout(() => {
        this.releaseUnreported(threadId, reason, true).then(
          (ids) => {
            if (ids.length > 0) this.o.logger.warn({ threadId, jobs: ids }, 'released jobs a dead thread claimed but never reported');
          },
          () => {}, // the lease still covers them
        );
      }, delay).unref();
    }
  }

  /** Returns to the queue what this supervisor (one thread of it, or all with null) claimed and never reported; the ids released. */
  private async releaseUnreported(threadId: number | null, reason: string, count: boolean): Promise<string[]> {
    return releaseUnreported(this.o.pool, this.o.schema, { owner: this.id, thread: threadId, reason, count });
  }

  /** Gives jobs back to the queue, retrying while the database is away; the lease is the last resort. */
  private async release(released: Release[]): Promise<void> {
    // A crash reason is the handler's own error text, which may echo the connection string.
    const jobs = released.map((j) => ({ ...j, reason: redactSecret(j.reason, this.o.connectionString) }));
    const { pool, schema } = this.o;
    const ids = jobs.map((j) => j.id);
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        // The lock waits for a claim the dead thread was still committing;
        // the release, a statement of its own, then sees that claim. Sent
        // together: a release is what a crashed job's re-run waits for.
        const [, rows] = await withPipelinedTransaction(pool, [lockJobsQuery(schema, { ids }), releaseJobsQuery(schema, { owner: this.id, jobs })]);
        const released = new Set(rows[0]?.ids ?? []);
        const done = jobs.filter((j) => released.has(j.id));
        if (done.length > 0) this.o.logger.warn({ jobs: done.map((j) => ({ id: j.id, reason: j.reason })) }, 'released jobs back to the queue');
        return;
      } catch (err) {
        this.warnDb(this.o.logger, { err: (err as Error).message }, 'release failed; retrying');
        await new Promise((r) => setTimeout(r, backoffMs({ attempt, baseMs: 100, maxMs: 2_000 })));
      }
    }
    this.o.logger.error({ jobs: jobs.map((j) => j.id) }, 'could not release jobs; their leases will expire and the reaper will return them');
  }
}

function pick<T>(items: T[]): T | undefined {
  return items[Math.floor(Math.random() * items.length)];
}
