/**
 * The running supervisor's interface and the shapes it reports, in a module
 * of their own: startSupervisor() (index.ts) returns one, the runtime
 * implements it, the control plane and the heartbeat read its status, and
 * none of them needs to import another for that.
 */
import type { ThreadStatus } from '../src/supervisor-info.ts';
import type { ConnectionUsage } from './connections.ts';
import type { DispatchCounters } from './dispatcher.ts';
import type { SupervisorEventListener, SupervisorEventName } from './events.ts';

export type { ThreadStatus };

export type SupervisorState = 'IDLE' | 'BUSY' | 'PAUSED' | 'STOPPING' | 'EXITED';

export interface SupervisorStatus {
  id: string;
  state: SupervisorState;
  threads: ThreadStatus[];
  restarts: number;
  inFlight: number;
  /** Connections open now against maxConnections, the LISTEN connection counted apart. */
  connections: ConnectionUsage;
  counters: DispatchCounters & { malformedNotifications: number; listenerReconnects: number };
}

export interface Supervisor {
  readonly id: string;
  /** Task names this supervisor runs. */
  readonly tasks: string[];
  status(): SupervisorStatus;
  /** Starts no more claims until resume() (a claim a thread has already been handed still runs); running jobs go on. */
  pause(): void;
  /** Claims again, starting with whatever is due in the table. */
  resume(): void;
  /** Graceful stop: no new claims, running jobs get `graceMs`, the rest are released. Idempotent. */
  stop(options?: { graceMs?: number; reason?: string }): Promise<void>;
  /** Resolves when the supervisor has stopped, for whatever reason. */
  readonly stopped: Promise<void>;
  /** Chaos and operations: terminate one thread (default: a random busy one). Returns its id. */
  killThread(threadId?: number): number | null;
  /**
   * Listens for a lifecycle event (docs/operations.md#events): job:started,
   * job:succeeded, job:failed, job:retried, job:cancelled, job:timedOut,
   * thread:crashed, thread:replaced, listen:lost, listen:restored. Listeners
   * run on the supervisor's thread: keep them short. With none attached the
   * events cost nothing.
   */
  on<E extends SupervisorEventName>(event: E, listener: SupervisorEventListener<E>): this;
  off<E extends SupervisorEventName>(event: E, listener: SupervisorEventListener<E>): this;
  /** The LISTEN connection's backend pid (tests use it to cut the connection). */
  listenerPid(): number | null;
  /** Where /metrics, /healthz and /readyz are served (the port chosen, for metricsPort 0); null without metricsPort. */
  metricsAddress(): { host: string; port: number } | null;
  /**
   * Runs the reaper once now, however recently it ran. (On its timers the
   * schema's supervisors together reap one or two times per reaperIntervalMs.)
   */
  reapNow(): Promise<{ leader: boolean; reapedJobs: string[] }>;
}
