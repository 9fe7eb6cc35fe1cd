/** 'waiting': enqueued with dependencies that have not all finished (docs/workflows.md); no claim reads it. */
export type JobState = 'waiting' | 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export const TERMINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.includes(state);
}

/** A row of the jobs table, as getJob() returns it. */
export interface Job {
  id: string;
  task: string;
  queue: string;
  payload: unknown;
  state: JobState;
  priority: number;
  runAt: Date;
  attempts: number;
  maxAttempts: number;
  timeoutMs: number | null;
  lockedBy: string | null;
  lockedThread: number | null;
  leaseUntil: Date | null;
  cancelRequestedAt: Date | null;
  lastError: string | null;
  result: unknown;
  /** What the handler last reported with helpers.progress() (null if it never did). */
  progress: unknown;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

/** A row of the jobs table as `SELECT *` reads it: bigint columns come back as text. */
export interface JobRow extends Pick<Job, 'id' | 'task' | 'queue' | 'payload' | 'state' | 'priority' | 'attempts' | 'result' | 'progress'> {
  run_at: Date;
  max_attempts: number;
  timeout_ms: number | null;
  locked_by: string | null;
  locked_thread: number | null;
  claim_token: string | null;
  lease_until: Date | null;
  cancel_requested_at: Date | null;
  watched: boolean;
  last_error: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

export function jobFromRow(row: JobRow): Job {
  return {
    id: String(row.id),
    task: row.task,
    queue: row.queue,
    payload: row.payload,
    state: row.state,
    priority: row.priority,
    runAt: row.run_at,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    timeoutMs: row.timeout_ms,
    lockedBy: row.locked_by,
    lockedThread: row.locked_thread,
    leaseUntil: row.lease_until,
    cancelRequestedAt: row.cancel_requested_at,
    lastError: row.last_error,
    result: row.result,
    progress: row.progress ?? null,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}
