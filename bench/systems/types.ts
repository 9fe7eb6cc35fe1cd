// The one small interface every system adapter implements, so a workload is written
// once and runs unchanged against grapevine, graphile-worker, pg-boss and BullMQ.

export type SystemName = 'grapevine' | 'graphile' | 'pgboss' | 'bullmq';
export const ALL_SYSTEMS: readonly SystemName[] = ['grapevine', 'graphile', 'pgboss', 'bullmq'];

/**
 * Which settings a system runs with. "tuned": the best settings its docs recommend for
 * throughput; "defaults": no flags or options at all beyond where the database is and
 * what the handlers are (a fresh install as a user first runs it).
 */
export type Profile = 'tuned' | 'defaults';
export const ALL_PROFILES: readonly Profile[] = ['tuned', 'defaults'];

/** Task names: the same three exist in every system (grapevine: bench/tasks/<name>.mjs). */
export type TaskName = 'noop' | 'latency' | 'cpu';

/** Payloads. latency carries the monotonic ms at which the enqueue was sent; cpu the
 * calibrated iteration count of lib/burn.mjs. */
export interface BenchPayload {
  sentAt?: number;
  iterations?: number;
  seq?: number;
}

/** What handlers report back to the workload. */
export interface Probe {
  /** A latency job's handler started, at monotonic time `atMs`. */
  latencyStart(payload: BenchPayload, atMs: number): void;
  /** `count` handlers returned (the DB may not say "finished" yet). */
  handled(count: number): void;
}

export interface WorkerOptions {
  /** Worker threads (grapevine) — the others run handlers on their main thread. */
  threads: number;
  /** The handlers are synchronous CPU work (the cpu workload). */
  cpuBound?: boolean;
}

/** Another bulk enqueue path a system offers besides its client API (grapevine: SQL). */
export interface EnqueuePath {
  /** As the enqueue table names it. */
  name: string;
  /** Enqueues `count` jobs of `task` with empty payloads. */
  run(task: TaskName, count: number): Promise<void>;
}

export interface SystemAdapter {
  readonly name: SystemName;
  /** Exact settings of this adapter's profile, for BENCHMARKS.md. */
  settings(opts: WorkerOptions): Record<string, string>;
  /** Create/migrate this system's schema and queue. No workers yet. */
  setup(): Promise<void>;
  /** Many jobs, the way the system documents bulk enqueue. */
  enqueueBulk(task: TaskName, payloads: BenchPayload[]): Promise<void>;
  /** One job, the way the system documents a single enqueue. */
  enqueueOne(task: TaskName, payload: BenchPayload): Promise<void>;
  /** `count` noop jobs due in hours, written with INSERT ... SELECT generate_series
   * straight into the system's own table (the library API would take minutes). */
  fillNotDue(count: number): Promise<void>;
  /** Boot workers as far as the system allows without taking jobs yet (connections,
   * threads). Throughput numbers start counting at startProcessing(), because a
   * long-lived worker boots once, not once per backlog. */
  bootWorkers(probe: Probe, opts: WorkerOptions): Promise<void>;
  /** Begin taking jobs. */
  startProcessing(): Promise<void>;
  /** Due jobs not yet recorded as finished in the database. */
  unfinished(): Promise<number>;
  stopWorkers(): Promise<void>;
  /** Close producer connections. */
  close(): Promise<void>;
  /** One no-op job per key through the bulk API, with the system's default key mode; a key may
   * repeat across calls (a job with it is then pending), never within one. */
  enqueueKeyed?(task: TaskName, keys: string[]): Promise<void>;
  /** Bulk enqueue paths besides enqueueBulk; a path the installed schema lacks is left out. */
  enqueuePaths?(): Promise<EnqueuePath[]>;
  /** Extra numbers the system can report (e.g. wasted claim attempts). */
  extraStats?(): Promise<Record<string, number>>;
}

export interface AdapterContext {
  connectionString: string;
  schema: string;
  profile: Profile;
}
