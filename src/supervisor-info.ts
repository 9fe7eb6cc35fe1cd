/**
 * A supervisor as the registry (the supervisors table) sees it: the row its
 * heartbeat writes, and the one shape operators read it in (Control.supervisors()).
 */

/** A supervisor's status in the registry: LOST when its heartbeat stopped without a goodbye. */
export type RegistryStatus = 'IDLE' | 'BUSY' | 'PAUSED' | 'EXITED' | 'LOST';

/** One thread of a supervisor: as status() reports it, and as the heartbeat stores it. */
export interface ThreadStatus {
  threadId: number;
  generation: number;
  currentJobs: string[];
  jobsRun: number;
}

/** What a supervisor's heartbeat stores in its row's `info` column (empty until the first beat). */
export interface SupervisorDetails {
  threads: ThreadStatus[];
  /** Threads started to replace ones that died. */
  restarts: number;
  /** The dispatcher's counters, for operators. */
  counters: object;
  /** The LISTEN connection's backend: the testing kit's killListeners() cuts only its own schema's. */
  listenerPid: number | null;
  /** Connections open at the beat against maxConnections; the LISTEN connection apart (0 in poll mode). */
  connections: SupervisorConnections;
}

export interface SupervisorConnections {
  inUse: number;
  max: number;
  listen: number;
  /** Requests for a connection waiting because the budget was full. */
  waiting: number;
}

/** A row of the supervisors table, its status as seen now (see listSupervisors). */
export interface SupervisorRow
  extends Pick<SupervisorInfo, 'id' | 'host' | 'pid' | 'version' | 'status' | 'threads' | 'concurrency' | 'queues' | 'tasks'> {
  info: Partial<SupervisorDetails>;
  started_at: Date;
  heartbeat_at: Date;
  stopped_at: Date | null;
}

export interface SupervisorInfo {
  id: string;
  host: string;
  pid: number;
  version: string;
  status: RegistryStatus;
  threads: number;
  concurrency: number;
  /** NULL: every queue. */
  queues: string[] | null;
  tasks: string[];
  /** Per-thread state as of the last heartbeat. */
  threadStates: ThreadStatus[];
  /** Threads started to replace ones that died. */
  restarts: number;
  /** Connections as of the last heartbeat (null before it, or from a supervisor older than the budget). */
  connections: SupervisorConnections | null;
  startedAt: Date;
  heartbeatAt: Date;
  stoppedAt: Date | null;
}

export function supervisorFromRow(row: SupervisorRow): SupervisorInfo {
  const info = row.info ?? {};
  return {
    id: row.id,
    host: row.host,
    pid: row.pid,
    version: row.version,
    status: row.status,
    threads: row.threads,
    concurrency: row.concurrency,
    queues: row.queues ?? null,
    tasks: row.tasks ?? [],
    threadStates: Array.isArray(info.threads) ? info.threads : [],
    restarts: info.restarts ?? 0,
    connections: info.connections ?? null,
    startedAt: row.started_at,
    heartbeatAt: row.heartbeat_at,
    stoppedAt: row.stopped_at ?? null,
  };
}
