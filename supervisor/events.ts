/**
 * The supervisor's lifecycle events (supervisor.on(name, listener)), typed.
 * With no listener they cost a listener count per batch of jobs: no event
 * object is built, and threads are asked for the failures' details
 * (error text, whether the job will run again) only while someone listens.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { CrashedJob, RunningJob } from './dispatcher.ts';

/** Which execution of which job: in every job event. */
export interface JobEvent {
  id: string;
  task: string;
  queue: string;
  /** 1 on the first run, 2 on the first retry, ... */
  attempt: number;
  threadId: number;
}

/** A job event at the end of an execution. */
export interface JobEndEvent extends JobEvent {
  /** How long the handler ran, in ms; null if the supervisor did not see it return. */
  durationMs: number | null;
}

export interface SupervisorEvents {
  /** A thread claimed the job and is starting its handler. */
  'job:started': JobEvent;
  /** The job's success was recorded. */
  'job:succeeded': JobEndEvent;
  /**
   * The attempt failed (its thread crashed too: then `durationMs` is null and
   * `error` is the crash) and the job will not run again (`willRetry` false), or
   * the attempt failed and whether it runs again is unknown (`willRetry`
   * null, `error` null): its batch was sent before the first listener was
   * attached, so its thread was not asked for details.
   */
  'job:failed': JobEndEvent & { error: string | null; willRetry: false | null };
  /** The attempt failed and the job is pending again, due after its backoff. */
  'job:retried': JobEndEvent & { error: string };
  /** The job was cancelled while it ran (cancelJob, grapevine cancel). */
  'job:cancelled': JobEndEvent;
  /**
   * The attempt ran over its timeout and was aborted; `willRetry` as for
   * job:failed, and null too when the handler ignored its signal and its
   * thread was terminated (the job is then given back without a report).
   */
  'job:timedOut': JobEndEvent & { willRetry: boolean | null };
  /**
   * A thread ended without being asked to (a handler's process.exit(), an
   * uncaught error, out of memory). `jobIds`: the jobs this supervisor knew it
   * was running, which are given back (each then gets job:retried, or
   * job:failed / job:cancelled if that ended it); a claim the thread made but
   * never reported is not among them and is released later, with no job event.
   */
  'thread:crashed': { threadId: number; exitCode: number; jobIds: string[] };
  /** A new thread took a crashed or retired one's place. */
  'thread:replaced': { threadId: number; generation: number };
  /** The LISTEN connection was lost; the supervisor reconnects with backoff and sweeps the table meanwhile. */
  'listen:lost': { error: string };
  /** The LISTEN connection is back; the supervisor re-reads the table for what it missed. */
  'listen:restored': Record<string, never>;
}

export type SupervisorEventName = keyof SupervisorEvents;
export type SupervisorEventListener<E extends SupervisorEventName> = (event: SupervisorEvents[E]) => void;

const JOB_END_EVENTS: readonly SupervisorEventName[] = ['job:succeeded', 'job:failed', 'job:retried', 'job:cancelled', 'job:timedOut'];

export class SupervisorEventBus {
  private readonly emitter = new EventEmitter();
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
    // Any number of listeners is fine here: each is the application's own.
    this.emitter.setMaxListeners(0);
  }

  on<E extends SupervisorEventName>(event: E, listener: SupervisorEventListener<E>): void {
    this.emitter.on(event, listener);
  }

  off<E extends SupervisorEventName>(event: E, listener: SupervisorEventListener<E>): void {
    this.emitter.off(event, listener);
  }

  listening(event: SupervisorEventName): boolean {
    return this.emitter.listenerCount(event) > 0;
  }

  /** Whether threads should report their failures' details: someone listens for how jobs end. */
  wantsOutcomes(): boolean {
    for (const event of JOB_END_EVENTS) if (this.emitter.listenerCount(event) > 0) return true;
    return false;
  }

  /**
   * A listener that throws, or an async one that rejects, is logged, never
   * let into the supervisor's own work nor kept from the listeners after it
   * (EventEmitter.emit stops at the first throw, and a rejection nobody
   * handles ends the process).
   */
  emit<E extends SupervisorEventName>(event: E, payload: SupervisorEvents[E]): void {
    for (const listener of this.emitter.listeners(event) as SupervisorEventListener<E>[]) {
      try {
        const returned: unknown = listener(payload);
        if (returned instanceof Promise) returned.catch((err: unknown) => this.threw(event, err));
      } catch (err) {
        this.threw(event, err);
      }
    }
  }

  private threw(event: SupervisorEventName, err: unknown): void {
    this.logger.warn({ event, err: (err as Error)?.message }, 'a supervisor event listener threw; the supervisor goes on');
  }

  /** Jobs a claim started (once per batch). */
  started(jobs: readonly RunningJob[]): void {
    if (!this.listening('job:started')) return;
    for (const job of jobs) this.emit('job:started', jobEvent(job));
  }

  /** Jobs that finished together (once per batch); jobs a crash took away are reported by crashEnded once released. */
  finished(jobs: readonly RunningJob[]): void {
    if (!this.wantsOutcomes()) return;
    for (const job of jobs) {
      const end = { ...jobEvent(job), durationMs: job.handledAt > 0 ? job.handledAt - job.startedAt : null };
      const detail = job.failure ?? null;
      if (job.succeeded === true) this.emit('job:succeeded', end);
      else if (job.abortedFor === 'cancelled') this.emit('job:cancelled', end);
      else if (job.abortedFor === 'timeout') this.emit('job:timedOut', { ...end, willRetry: detail ? detail.willRetry : null });
      else if (job.succeeded === false && !job.fenced) {
        if (detail?.willRetry) this.emit('job:retried', { ...end, error: detail.error });
        else this.emit('job:failed', { ...end, error: detail?.error ?? null, willRetry: detail ? false : null });
      }
    }
  }

  /** Jobs a thread crash took, once their release said how each ends: the attempt failed with the crash. */
  crashEnded(jobs: readonly CrashedJob[]): void {
    if (!this.wantsOutcomes()) return;
    for (const { job, reason, state } of jobs) {
      const end = { ...jobEvent(job), durationMs: null };
      if (state === 'pending') this.emit('job:retried', { ...end, error: reason });
      else if (state === 'failed') this.emit('job:failed', { ...end, error: reason, willRetry: false });
      else this.emit('job:cancelled', end);
    }
  }
}

function jobEvent(job: RunningJob): JobEvent {
  return { id: job.id, task: job.task, queue: job.queue, attempt: job.attempt, threadId: job.threadId };
}
