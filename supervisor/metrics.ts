/**
 * The supervisor's HTTP port for operations: Prometheus text on /metrics,
 * and /healthz and /readyz for probes. Built only when a metrics port is
 * given; prom-client is loaded then, so a supervisor without one does no
 * registry work at all (the runtime's hook is a null check).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import type { Logger } from 'pino';
import { queueStats } from '../src/sql/operations.ts';
import type { RunningJob } from './dispatcher.ts';

/** What the port reads from the running supervisor, at scrape or probe time. */
export interface MetricsSources {
  pool: pg.Pool;
  schema: string;
  logger: Logger;
  liveThreads(): number;
  /** Threads running at least one job. */
  busyThreads(): number;
  runningJobs(): number;
  /** Connections open against maxConnections, and requests waiting for one. */
  connections(): { inUse: number; max: number; waiting: number };
  threadRestarts(): number;
  listenerReconnects(): number;
  /** What /readyz checks, each true when fine. */
  readiness(): { connected: boolean; listening: boolean; threadsUp: boolean; running: boolean };
}

/** Handler durations, in seconds: from a few milliseconds to ten minutes. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600];

export class MetricsServer {
  private readonly server: Server;
  private readonly registry: import('prom-client').Registry;
  private readonly jobs: import('prom-client').Counter<'outcome' | 'task' | 'queue'>;
  private readonly durations: import('prom-client').Histogram<'task' | 'queue'>;
  /**
   * Each (task, queue)'s label children, found once: prom-client hashes a
   * label object on every call, and finished jobs arrive by the thousand.
   */
  private readonly children = new Map<string, { outcomes: Map<string, { inc(): void }>; durations: { observe(value: number): void } }>();

  private constructor(promClient: typeof import('prom-client'), sources: MetricsSources) {
    const { Counter, Gauge, Histogram, Registry } = promClient;
    // A registry of our own: the application's default registry stays its own.
    const registers = [(this.registry = new Registry())];
    this.jobs = new Counter({
      name: 'grapevine_jobs_total',
      help: 'Job executions this supervisor finished, by outcome (succeeded, failed, cancelled, timeout, lost), task and queue.',
      labelNames: ['outcome', 'task', 'queue'],
      registers,
    });
    this.durations = new Histogram({
      name: 'grapevine_job_duration_seconds',
      help: 'How long handlers ran, from start to return.',
      labelNames: ['task', 'queue'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect: function () {
          this.set(read());
        },
      });
    gauge('grapevine_threads', 'Worker threads up.', () => sources.liveThreads());
    gauge('grapevine_threads_busy', 'Worker threads running at least one job.', () => sources.busyThreads());
    gauge('grapevine_jobs_running', 'Jobs this supervisor is running.', () => sources.runningJobs());
    gauge('grapevine_connections', 'Connections this supervisor has open, its LISTEN connection aside.', () => sources.connections().inUse);
    gauge('grapevine_connections_max', 'Its connection budget (maxConnections).', () => sources.connections().max);
    gauge(
      'grapevine_connections_waiting',
      'Requests for a connection waiting because the budget is full.',
      () => sources.connections().waiting,
    );
    // Totals the supervisor keeps anyway, exported as counters.
    const total = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect: function () {
          this.reset();
          this.inc(read());
        },
      });
    total('grapevine_thread_restarts_total', 'Worker threads replaced after a crash.', () => sources.threadRestarts());
    total('grapevine_listener_reconnects_total', 'Times the LISTEN connection was lost and connected again.', () =>
      sources.listenerReconnects(),
    );
    const queueGauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ['queue'], registers });
    const due = queueGauge('grapevine_queue_depth', 'Pending jobs due now, per queue, as the elected supervisor last measured.');
    const scheduled = queueGauge('grapevine_queue_scheduled', 'Pending jobs due later, per queue.');
    const running = queueGauge('grapevine_queue_running', 'Running jobs, per queue, on every supervisor.');
    const oldest = queueGauge('grapevine_queue_oldest_pending_age_seconds', 'How long the oldest due job of each queue has waited.');
    const measuredAgo = new Gauge({ name: 'grapevine_queue_stats_age_seconds', help: 'How old the queue measurement is.', registers });
    // One read of the leader's row per scrape, before the text is built.
    const readQueues = async () => {
      const rows = await queueStats(sources.pool, sources.schema);
      for (const g of [due, scheduled, running, oldest]) g.reset();
      for (const r of rows) {
        due.set({ queue: r.queue }, r.due);
        scheduled.set({ queue: r.queue }, r.scheduled);
        running.set({ queue: r.queue }, r.running);
        oldest.set({ queue: r.queue }, r.oldest_due_seconds);
      }
      if (rows.length > 0) measuredAgo.set(Math.min(...rows.map((r) => r.measured_seconds_ago)));
    };
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405, 'method not allowed\n');
      if (path === '/healthz') return answer(res, 200, 'ok\n');
      if (path === '/readyz') {
        const checks = sources.readiness();
        const ready = Object.values(checks).every(Boolean);
        return answer(res, ready ? 200 : 503, `${JSON.stringify(checks)}\n`, 'application/json');
      }
      if (path !== '/metrics') return answer(res, 404, 'not found: try /metrics, /healthz or /readyz\n');
      readQueues()
        .catch((err: Error) => sources.logger.warn({ err: err.message }, 'metrics: could not read the queue measurement'))
        .then(() => this.registry.metrics())
        .then(
          (text) => answer(res, 200, text, this.registry.contentType),
          (err: Error) => answer(res, 500, `${err.message}\n`),
        );
    });
  }

  /** Loads prom-client and listens on host:port (port 0: any free port). */
  static async start(sources: MetricsSources, host: string, port: number): Promise<MetricsServer> {
    const metrics = new MetricsServer(await import('prom-client'), sources);
    await new Promise<void>((resolve, reject) => {
      metrics.server.once('error', reject);
      metrics.server.listen(port, host, () => {
        metrics.server.off('error', reject);
        resolve();
      });
    });
    return metrics;
  }

  get address(): { host: string; port: number } {
    const a = this.server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** Jobs that finished together (the dispatcher reports them once per batch). */
  finished(jobs: readonly RunningJob[]): void {
    for (const job of jobs) {
      const key = `${job.task}\u0000${job.queue}`;
      let child = this.children.get(key);
      if (!child) {
        child = { outcomes: new Map(), durations: this.durations.labels({ task: job.task, queue: job.queue }) };
        this.children.set(key, child);
      }
      const outcome = outcomeOf(job);
      let counter = child.outcomes.get(outcome);
      if (!counter) {
        counter = this.jobs.labels({ outcome, task: job.task, queue: job.queue });
        child.outcomes.set(outcome, counter);
      }
      counter.inc();
      if (job.handledAt > 0) child.durations.observe((job.handledAt - job.startedAt) / 1000);
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function outcomeOf(job: RunningJob): string {
  if (job.succeeded === true) return 'succeeded';
  if (job.abortedFor === 'cancelled' || job.abortedFor === 'timeout') return job.abortedFor;
  // A thread that died, or a shutdown that released the job: nobody saw it end.
  return job.succeeded === false ? 'failed' : 'lost';
}

function answer(res: import('node:http').ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}
