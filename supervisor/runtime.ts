/**
 * The running supervisor: wires the LISTEN connection, the dispatcher, the
 * threads, the control plane, the heartbeat and the maintenance together,
 * and runs its start and stop. Built by startSupervisor() in index.ts.
 */
import os from 'node:os';
import type pg from 'pg';
import { connectionsWith, type BudgetSplit, type ConnectionBudget } from '../src/connection-budget.ts';
import { explainConnectionErrors, listenTarget } from '../src/db.ts';
import { Listener } from '../src/listener.ts';
import { throttled, throttledWarnings, type Logger } from '../src/log.ts';
import { isAddressedTo, parseControlNotification, parseJobNotification, takeIds } from '../src/notification.ts';
import { describeConnection } from '../src/redact.ts';
import { channelsFor } from '../src/schema/channels.ts';
import { hasDue } from '../src/sql/jobs.ts';
import { deregisterSupervisor, registerSupervisor } from '../src/sql/supervisors.ts';
import { VERSION } from '../src/version.ts';
import { ConnectionWatch } from './connections.ts';
import { ControlPlane } from './control.ts';
import { Dispatcher } from './dispatcher.ts';
import { Heartbeat } from './heartbeat.ts';
import { IdleTimeout } from './idle-timeout.ts';
import { ScheduleFiring } from './maintenance/fire-schedules.ts';
import { Maintenance } from './maintenance/leader.ts';
import { Periodic } from './periodic.ts';
import { SupervisorEventBus, type SupervisorEventListener, type SupervisorEventName } from './events.ts';
import { MetricsServer } from './metrics.ts';
import { JobRelease } from './release.ts';
import { SupervisorLog } from './supervisor-log.ts';
import type { Supervisor, SupervisorState, SupervisorStatus } from './supervisor.ts';
import type { ThreadPool } from './threads.ts';

export interface RuntimeOptions {
  id: string;
  schema: string;
  connectionString: string;
  /** Where the LISTEN connection goes: the server itself when connectionString is a pooler. */
  listenUrl: string;
  /** No LISTEN: due jobs and control messages are looked for every pollIntervalMs. */
  poll: boolean;
  pollIntervalMs: number;
  pool: pg.Pool;
  /** The threads' share of maxConnections, and how maxConnections was split. */
  budget: ConnectionBudget;
  split: BudgetSplit & { max: number };
  /** The most one thread opens: its claim and outcome connections and its handlers'. */
  connectionsPerThread: number;
  threadPool: ThreadPool;
  threads: number;
  /** The most threads SCALE may ask for. */
  maxThreads: number;
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
  /** Serve /metrics, /healthz and /readyz here; null: no port, and no metrics work. */
  metrics: { host: string; port: number; queueStatsIntervalMs: number } | null;
}

export class SupervisorRuntime implements Supervisor {
  readonly id: string;
  readonly stopped: Promise<void>;
  private readonly o: RuntimeOptions;
  private readonly dispatcher: Dispatcher;
  private readonly listener: Listener;
  private readonly maintenance: Maintenance;
  private readonly schedules: ScheduleFiring;
  private readonly heartbeat: Heartbeat;
  /** The sweep, or in poll mode the poll (replaced when LISTEN turns out unavailable). */
  private sweeper: Periodic;
  /** No LISTEN: from the start (poll), or since the listener found it cannot work. */
  private polling: boolean;
  private polls = 0;
  private readonly releases: JobRelease;
  private readonly channels: ReturnType<typeof channelsFor>;
  private readonly log: SupervisorLog;
  private readonly idleTimeout: IdleTimeout;
  private readonly control: ControlPlane;
  private readonly connections: ConnectionWatch;
  private metrics: MetricsServer | null = null;
  private readonly events: SupervisorEventBus;
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

  constructor(options: RuntimeOptions) {
    const { id, schema, pool, logger, threadPool, timing } = options;
    this.o = options;
    this.id = id;
    this.channels = channelsFor(schema);
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    this.log = new SupervisorLog({ pool, schema, supervisor: id, logger });
    this.events = new SupervisorEventBus(logger);
    this.releases = new JobRelease({ id, schema, connectionString: options.connectionString, pool, logger });
    this.dispatcher = new Dispatcher({
      pool: threadPool,
      threads: options.threads,
      concurrency: options.concurrency,
      logger,
      killGraceMs: timing.killGraceMs,
      release: (jobs) => this.releases.release(jobs),
      onJobs: (type, jobs) => {
        this.log.jobs(type === 'started' ? 'TASK_START' : 'TASK_END', jobs);
        if (type === 'finished') {
          this.metrics?.finished(jobs);
          this.events.finished(jobs);
        } else this.events.started(jobs);
      },
      onCrashReleased: (jobs) => this.events.crashEnded(jobs),
      wantsDetails: () => this.events.wantsOutcomes(),
    });
    this.listener = new Listener({
      ...listenTarget(options.listenUrl, options.pool, options.connectionString),
      channels: [this.channels.jobs, this.channels.control],
      applicationName: 'grapevine-listener',
      logger: options.logger,
      healthCheckMs: options.timing.listenerHealthCheckMs,
      healthTimeoutMs: Math.min(3_000, options.timing.listenerHealthCheckMs),
    });
    this.connections = new ConnectionWatch({
      pool,
      budget: options.budget,
      split: options.split,
      listening: () => this.listener.connected,
      logger,
    });
    this.maintenance = new Maintenance({
      pool,
      schema,
      leaseMs: timing.leaseMs,
      intervalMs: timing.reaperIntervalMs,
      retentionMs: options.retentionMs,
      queueStatsIntervalMs: options.metrics?.queueStatsIntervalMs ?? null,
      logger,
    });
    this.schedules = new ScheduleFiring({ pool, schema, logger });
    this.heartbeat = new Heartbeat({
      id,
      schema,
      pool,
      logger,
      intervalMs: timing.heartbeatIntervalMs,
      leaseMs: timing.leaseMs,
      sweepIntervalMs: timing.sweepIntervalMs,
      status: () => this.status(),
      listenerPid: () => this.listener.backendPid,
      tasks: () => threadPool.tasks,
      runningJobIds: () => [...this.dispatcher.runningJobs.keys()],
      cancel: (jobId) => this.dispatcher.abort(jobId, 'cancelled', 'job was cancelled'),
      cancelIgnored: (jobId) => {
        this.dispatcher.counters.ignoredCancels++;
        logger.debug({ jobId }, "ignored a cancel notification: the job's row asks for no cancel");
      },
      onNotificationsDropped: () => {
        this.control.wake();
        this.schedules.wake();
      },
    });
    this.polling = options.poll;
    this.sweeper = this.polling ? this.poller() : new Periodic(timing.sweepIntervalMs, () => this.sweep());
    this.idleTimeout = new IdleTimeout(
      {
        logger,
        log: this.log,
        inFlight: () => this.dispatcher.inFlight,
        lastJobAt: () => this.dispatcher.lastJobAt,
        isPaused: () => this.dispatcher.isPaused,
        hasDue: () => hasDue(pool, schema, { tasks: threadPool.tasks, queues: options.queues }),
        markBacklog: () => this.dispatcher.markBacklog(),
        stop: (reason) => void this.stop({ reason }),
      },
      options.idleTimeoutMs,
    );
    this.control = new ControlPlane({
      id,
      schema,
      connectionString: options.connectionString,
      pool,
      logger,
      threadPool,
      queues: options.queues,
      concurrency: options.concurrency,
      maxThreads: options.maxThreads,
      maxConnections: options.split.max,
      pollIntervalMs: () => (this.polling ? options.pollIntervalMs : null),
      connectionsWith: (threads) => connectionsWith(options.split, threads, options.connectionsPerThread),
      allowEval: options.allowEval,
      log: this.log,
      idleTimeout: this.idleTimeout,
      status: () => this.status(),
      pause: () => this.pause(),
      resume: () => this.resume(),
      replaceThreads: async (threads) => {
        await threadPool.replace(threads);
        this.dispatcher.resize(threadPool.threads);
      },
      stop: (reason) => void this.stop({ reason }),
    });
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
    this.listener.on('disconnected', (err: Error) => {
      if (this.events.listening('listen:lost')) this.events.emit('listen:lost', { error: err.message });
    });
    this.listener.on('connected', () => {
      // The first connection is start()'s to follow up, below.
      if (!this.listening) return;
      if (this.events.listening('listen:restored')) this.events.emit('listen:restored', {});
      this.dispatcher.markBacklog();
      this.control.wake();
      this.schedules.wake();
      // The row names the new LISTEN backend now, not at the next beat.
      void this.heartbeat.beat();
    });
    threadPool.on('start', (threadId: number, generation: number, restart: boolean) => {
      this.dispatcher.threadStarted();
      if (restart) this.log.append('THREAD_RESTART', `generation ${generation}`, threadId);
      if (restart && this.events.listening('thread:replaced')) this.events.emit('thread:replaced', { threadId, generation });
    });
    threadPool.on('replaced', () => this.dispatcher.threadStarted());
    threadPool.on('exit', (threadId: number, code: number, expected: boolean) => {
      if (!expected) {
        logger.warn({ threadId, code }, 'thread exited unexpectedly; piscina is replacing it');
        if (this.events.listening('thread:crashed')) {
          this.events.emit('thread:crashed', { threadId, exitCode: code, jobIds: this.dispatcher.jobsTakenBy(threadId) });
        }
      }
      this.dispatcher.forgetThread(threadId);
      this.releases.afterThreadDeath(threadId, code);
      // A thread we stopped (the pool destroyed, a generation retired) exits with code 1
      // too; only an exit nobody asked for is a crash worth its exit code.
      this.log.append('THREAD_EXIT', expected ? 'stopped' : `exit code ${code} (unexpected)`, threadId);
    });
    this.listener.once('unavailable', (err: Error) => this.fallBackToPolling(err));
    if (!this.polling) await this.listener.start();
    // Before any claim: the row names the LISTEN backend (the testing kit's killListeners()
    // cuts only its own schema's), and a pause() right after start still comes first.
    await this.heartbeat.beat();
    this.listening = true;
    this.dispatcher.markBacklog();
    this.heartbeat.start();
    this.maintenance.start();
    this.schedules.start();
    this.sweeper.start();
    this.connections.start();
    this.log.append('ALIVE', `${os.hostname()} pid ${process.pid} grapevine ${VERSION} node ${process.version}`);
    this.log.append('QUEUE', this.o.queues ? this.o.queues.join(' ') : '(all queues)');
    this.log.append('THREADS', `${threadPool.threads} x ${this.o.concurrency}`);
    this.control.start();
    this.idleTimeout.start();
    if (this.o.metrics) await this.startMetrics(this.o.metrics.host, this.o.metrics.port);
    logger.info(
      {
        threads: this.o.threads,
        concurrency: this.o.concurrency,
        tasks: threadPool.tasks,
        queues: this.o.queues ?? 'all',
        database: describeConnection(this.o.connectionString),
        ...(this.polling
          ? { poll: this.o.pollIntervalMs }
          : this.o.listenUrl === this.o.connectionString
            ? {}
            : { listen: describeConnection(this.o.listenUrl) }),
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
      connections: this.connections.usage(),
      counters: { ...this.dispatcher.counters, malformedNotifications: this.malformed, listenerReconnects: this.listener.reconnects },
    };
  }

  pause(): void {
    this.dispatcher.pause();
    this.o.logger.info('paused: no new jobs will be claimed');
    this.log.append('PAUSE');
  }

  resume(): void {
    this.dispatcher.resume();
    this.o.logger.info('resumed');
    this.log.append('RESUME');
  }

  killThread(threadId?: number): number | null {
    const live = this.o.threadPool.liveThreads().map((t) => t.threadId);
    const busy = new Set([...this.dispatcher.runningJobs.values()].map((j) => j.threadId));
    const target = threadId ?? pick(live.filter((t) => busy.has(t))) ?? pick(live);
    if (target === undefined || !this.o.threadPool.terminate(target)) return null;
    // An outside kill is a crash like any other: its jobs count an attempt.
    return target;
  }

  on<E extends SupervisorEventName>(event: E, listener: SupervisorEventListener<E>): this {
    this.events.on(event, listener);
    return this;
  }

  off<E extends SupervisorEventName>(event: E, listener: SupervisorEventListener<E>): this {
    this.events.off(event, listener);
    return this;
  }

  metricsAddress(): { host: string; port: number } | null {
    return this.metrics?.address ?? null;
  }

  private async startMetrics(host: string, port: number): Promise<void> {
    const { pool, schema, logger, threadPool, timing } = this.o;
    const busyThreads = () => new Set([...this.dispatcher.runningJobs.values()].map((j) => j.threadId)).size;
    this.metrics = await MetricsServer.start(
      {
        pool,
        schema,
        logger,
        liveThreads: () => threadPool.liveThreads().length,
        connections: () => this.connections.usage(),
        busyThreads,
        runningJobs: () => this.dispatcher.runningJobs.size,
        threadRestarts: () => threadPool.restarts,
        listenerReconnects: () => this.listener.reconnects,
        readiness: () => ({
          connected: Date.now() - this.heartbeat.lastBeatAt < timing.leaseMs,
          listening: this.polling || this.listener.connected,
          threadsUp: threadPool.liveThreads().length > 0,
          running: this.state !== 'STOPPING' && this.state !== 'EXITED',
        }),
      },
      host,
      port,
    );
    logger.info({ metrics: `http://${host}:${this.metrics.address.port}/metrics` }, 'serving metrics and health probes');
  }

  listenerPid(): number | null {
    return this.listener.backendPid;
  }

  reapNow() {
    return this.maintenance.tick({ force: true });
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
    this.control.onStopping();
    this.idleTimeout.stop();
    this.log.append('STOP', reason ?? 'no reason given');
    this.dispatcher.stop();
    this.heartbeat.stop();
    this.maintenance.stop();
    this.schedules.stop();
    this.sweeper.stop();
    this.connections.stop();
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
      await this.releases.release(
        left.map((j) => ({ id: j.id, thread: j.threadId, reason: 'supervisor shut down before the job finished', count: false })),
      );
      for (const job of left) this.dispatcher.abort(job.id, 'shutdown', 'supervisor is shutting down');
    }
    await threadPool.destroy();
    // A claim a thread had committed but not yet reported when it was ended
    // (a forced stop does not wait for it) still names this supervisor, and
    // would wait for its lease.
    await this.releases.unreported(null, 'supervisor shut down before the job finished', false).then(
      (ids) => {
        if (ids.length > 0) logger.warn({ jobs: ids }, 'released jobs a thread claimed but had not reported when the supervisor stopped');
      },
      (err: Error) => logger.warn({ err: err.message }, 'could not release unreported claims; their leases will return them'),
    );
    await this.listener.stop();
    await this.metrics?.close();
    await this.schedules.idle();
    await deregisterSupervisor(pool, schema, { id: this.id }).catch((err: Error) =>
      logger.warn({ err: err.message }, 'could not deregister'),
    );
    await this.control.close();
    // Last: the answers to what was left, and the STOP, are in the log.
    await this.log.close();
    // A heartbeat or maintenance tick begun before the stop still uses the pool;
    // one stalled on a dead server is not waited for past a few seconds.
    let idleTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([this.heartbeat.idle(), this.maintenance.idle(), this.sweeper.idle()]),
      new Promise((resolve) => {
        idleTimer = setTimeout(resolve, 5_000);
      }),
    ]);
    clearTimeout(idleTimer);
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
      } else if (parsed.kind === 'schedules') {
        this.schedules.wake();
      } else {
        this.onMalformed(channel, parsed.reason);
      }
      return;
    }
    if (channel === this.channels.control) this.onControl(payload);
  }

  private onControl(payload: string): void {
    const message = parseControlNotification(payload);
    if (message.kind === 'malformed') {
      this.onMalformed(this.channels.control, message.reason);
      return;
    }
    if (!isAddressedTo(message, this.id)) return;
    if (message.kind === 'message') {
      this.control.wake();
      return;
    }
    void this.heartbeat.checkCancel(message.job);
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

  /**
   * Poll mode's timer: each interval, whatever a notification would have
   * said. Due jobs by the sweep's has_due; control messages by reading them;
   * the schedules every tenth time (a change made elsewhere is rarely
   * urgent). Cancels need nothing more: the heartbeat's lease renewal reads
   * them every heartbeatIntervalMs.
   */
  private poller(): Periodic {
    return new Periodic(this.o.pollIntervalMs, async () => {
      this.control.wake();
      if (this.polls++ % 10 === 9) this.schedules.wake();
      await this.sweep();
    });
  }

  /** The listener found that LISTEN cannot work where it connects (a pooler in transaction mode): poll from now on. */
  private fallBackToPolling(err: Error): void {
    if (this.polling || this.state === 'STOPPING' || this.state === 'EXITED') return;
    this.polling = true;
    this.o.logger.warn(
      { err: err.message, listen: describeConnection(this.o.listenUrl), pollIntervalMs: this.o.pollIntervalMs },
      `LISTEN is not available, so this supervisor polls every ${this.o.pollIntervalMs} ms instead: new jobs and control messages ` +
        'are found up to that late. Set listenUrl (--listen-url) to reach PostgreSQL directly, or start with poll: true (--poll) to say so',
    );
    this.log.append('POLL', `LISTEN unavailable; polling every ${this.o.pollIntervalMs} ms`);
    this.sweeper.stop();
    this.sweeper = this.poller();
    this.sweeper.start();
    this.dispatcher.markBacklog();
    this.control.wake();
    this.schedules.wake();
  }

  /** Due jobs nobody was told about (delayed run_at, retries, lost notifications). */
  private async sweep(): Promise<void> {
    if (this.dispatcher.isPaused || this.state === 'STOPPING' || this.dispatcher.free() <= 0) return;
    if (this.dispatcher.hasBacklog()) return this.dispatcher.markBacklog();
    try {
      if (await hasDue(this.o.pool, this.o.schema, { tasks: this.o.threadPool.tasks, queues: this.o.queues }))
        this.dispatcher.markBacklog();
    } catch (err) {
      this.warnDb(this.o.logger, { err: (err as Error).message }, 'sweep failed');
    }
  }
}

function pick<T>(items: T[]): T | undefined {
  return items[Math.floor(Math.random() * items.length)];
}
