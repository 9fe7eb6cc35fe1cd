import os from 'node:os';
import vm from 'node:vm';
import type pg from 'pg';
import type { Logger } from 'pino';
import { idleTimeoutSecondsToMs, MAX_IDLE_TIMEOUT_MS } from '../src/config.ts';
import { isDataError } from '../src/db.ts';
import { throttledWarnings } from '../src/log.ts';
import { describeConnection } from '../src/redact.ts';
import { storableText } from '../src/text.ts';
import { markProcessed, pendingMessages, respond, type MessageLane, type MessageRow } from '../src/sql/control.ts';
import { serverConnections } from '../src/sql/server.ts';
import { setSupervisorStatus } from '../src/sql/supervisors.ts';
import { VERSION } from '../src/version.ts';
import type { IdleTimeout } from './idle-timeout.ts';
import type { SupervisorLog } from './supervisor-log.ts';
import type { SupervisorStatus } from './supervisor.ts';
import type { ThreadPool } from './threads.ts';

/** What the control plane needs from the supervisor it belongs to. */
export interface ControlHost {
  id: string;
  schema: string;
  connectionString: string;
  pool: pg.Pool;
  logger: Logger;
  threadPool: ThreadPool;
  queues: string[] | null;
  concurrency: number;
  /** The most threads SCALE may ask for (the supervisor's maxThreads). */
  maxThreads: number;
  /** The supervisor's connection budget, LISTEN aside. */
  maxConnections: number;
  /** The most connections it would open with this many threads (within maxConnections). */
  connectionsWith(threads: number): number;
  /** Poll mode's interval, or null while it LISTENs. */
  pollIntervalMs(): number | null;
  allowEval: boolean;
  /** The supervisor's log: what a command did is in it before the response is visible. */
  log: SupervisorLog;
  /** What TIMEOUT_SET and TIMEOUT_GET change and read. */
  idleTimeout: IdleTimeout;
  status(): SupervisorStatus;
  pause(): void;
  resume(): void;
  /** New threads (same count, or `threads`); the dispatcher's capacity follows. */
  replaceThreads(threads?: number): Promise<void>;
  stop(reason: string): void;
}

/** The commands a supervisor understands. */
export const COMMANDS = [
  'PING',
  'ECHO',
  'INFO',
  'PAUSE',
  'RESUME',
  'TIMEOUT_SET',
  'TIMEOUT_GET',
  'REFRESH',
  'SCALE',
  'STOP',
  'EVAL',
] as const;

interface Outcome {
  value: unknown;
  /** Runs after the response is stored (STOP must answer before it goes). */
  after?: () => void;
}

interface CommandFailure {
  code: string;
  message: string;
}

class CommandError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

// A supervisor that missed a wake-up (it should not happen while the LISTEN
// connection is healthy; while notifications are dropped, the heartbeat wakes
// it instead) still answers within this long.
const SAFETY_DRAIN_MS = 10_000;
const MAX_TIMEOUT_S = MAX_IDLE_TIMEOUT_MS / 1000;
// Messages handled per read of the table, in each lane. Urgent commands have
// a lane of their own, so a PING or STOP waits for no other kind of message.
export const MESSAGES_PER_READ = 20;

/** One lane's reader: at most one read-and-handle loop at a time, so a message is handled once however many wake-ups race. */
interface Lane {
  name: Exclude<MessageLane, 'all'>;
  draining: Promise<void> | null;
  again: boolean;
}

/** The message a lane is handling now, until its response is stored. */
interface InFlight {
  row: MessageRow;
  lane: Lane['name'];
  /** Ends the wait for a command that has not settled: the supervisor is stopping. */
  abandon: () => void;
  responding: boolean;
}

/**
 * Messages to this supervisor, handled on the main thread: the threads may
 * all be stuck in CPU-bound handlers and the supervisor still answers.
 * Two lanes read the table, each a few messages at a time and one message
 * at a time: urgent commands (PING, STOP, PAUSE, RESUME), which are cheap,
 * and the others, which may take long (an EVAL, a REFRESH whose threads do
 * not start). So a slow command never holds up a PING or a STOP. Within a
 * lane messages run in the order they were sent. NOTIFY only says "look".
 * A message that fails is answered with an error and marked done, so the
 * next one always runs (respondOrExplain); one still running when the
 * supervisor stops is answered with GRAPEVINE_SHUTDOWN and marked done, so
 * it never runs again after a restart.
 */
export class ControlPlane {
  private readonly host: ControlHost;
  private readonly log: SupervisorLog;
  private readonly startedAt = Date.now();
  // All fields are owned by the main thread.
  private readonly lanes: Lane[] = [
    { name: 'urgent', draining: null, again: false },
    { name: 'ordinary', draining: null, again: false },
  ];
  private readonly inFlight = new Set<InFlight>();
  private closed = false;
  private stopping = false;
  private safetyTimer: NodeJS.Timeout | null = null;
  private readonly warnDb = throttledWarnings(5_000);

  constructor(host: ControlHost) {
    this.host = host;
    this.log = host.log;
  }

  start(): void {
    if (this.closed || this.safetyTimer) return;
    this.safetyTimer = setInterval(() => this.wake(), SAFETY_DRAIN_MS);
    this.safetyTimer.unref();
    this.wake();
  }

  /** Reads and handles every unprocessed message addressed to this supervisor. */
  wake(): void {
    for (const lane of this.lanes) void this.drain(lane);
  }

  /**
   * The supervisor began to stop: no commands that change it, and a command
   * still running (an EVAL that never settles, a REFRESH whose threads do
   * not start) is answered with an error now rather than waited for.
   */
  onStopping(): void {
    this.stopping = true;
    this.abandonRunning();
  }

  /** Last step before the pool closes: answers what is left with an error. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.safetyTimer) clearInterval(this.safetyTimer);
    this.safetyTimer = null;
    this.abandonRunning();
    await Promise.all(this.lanes.map((lane) => lane.draining?.catch(() => {})));
    try {
      const rows = await pendingMessages(this.host.pool, this.host.schema, { supervisor: this.host.id, limit: 1_000 });
      for (const row of rows) {
        await this.respond(row, false, null, {
          code: 'GRAPEVINE_SHUTDOWN',
          message: `supervisor ${this.host.id} stopped before it processed this ${row.command} message`,
        });
      }
    } catch (err) {
      this.host.logger.warn({ err: (err as Error).message }, 'could not answer the messages left at shutdown');
    }
  }

  /** Urgent commands are cheap and are let finish; the others may never settle. */
  private abandonRunning(): void {
    for (const running of this.inFlight) if (running.lane === 'ordinary' && !running.responding) running.abandon();
  }

  private drain(lane: Lane): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (lane.draining) {
      lane.again = true;
      return lane.draining;
    }
    const run = async () => {
      do {
        lane.again = false;
        for (;;) {
          const rows = await pendingMessages(this.host.pool, this.host.schema, {
            supervisor: this.host.id,
            limit: MESSAGES_PER_READ,
            lane: lane.name,
          });
          if (rows.length === 0 || this.closed) break;
          for (const row of rows) {
            if (this.closed) return;
            await this.process(row, lane.name);
          }
        }
      } while (lane.again && !this.closed);
    };
    lane.draining = run()
      .catch((err: Error) =>
        // The messages stay unprocessed in the table; the next wake-up (or the safety timer) retries.
        this.warnDb(this.host.logger, { err: err.message }, 'could not read or answer control messages'),
      )
      .finally(() => {
        lane.draining = null;
      });
    return lane.draining;
  }

  private async process(row: MessageRow, lane: Lane['name']): Promise<void> {
    this.log.append('MESSAGE', `${row.command}${describeArgs(row.args)} (message ${row.id})`);
    let outcome: Outcome | null = null;
    let error: CommandFailure | null = null;
    let abandon = () => {};
    const abandoned = new Promise<'abandoned'>((resolve) => {
      abandon = () => resolve('abandoned');
    });
    const running: InFlight = { row, lane, abandon, responding: false };
    this.inFlight.add(running);
    try {
      const handled = this.handle(row);
      // What it comes to after it was abandoned is of no use to anyone: the message is answered already.
      handled.catch(() => {});
      const settled = await Promise.race([handled, abandoned]);
      if (settled === 'abandoned') {
        error = {
          code: 'GRAPEVINE_SHUTDOWN',
          message: `supervisor ${this.host.id} began to stop while this ${row.command} message was still running; it was not waited for, and what it did or will do is not known`,
        };
        this.host.logger.warn({ message: row.id, command: row.command }, 'stopping: answered a control message that was still running');
      } else {
        outcome = settled;
      }
    } catch (err) {
      error =
        err instanceof CommandError
          ? { code: err.code, message: err.message }
          : {
              code: 'GRAPEVINE_COMMAND_FAILED',
              message: `${row.command} failed on supervisor ${this.host.id}: ${(err as Error)?.message ?? String(err)}`,
            };
    }
    running.responding = true;
    let stored: { error: CommandFailure | null };
    try {
      stored = await this.respondOrExplain(row, error === null, outcome ? outcome.value : null, error);
    } finally {
      this.inFlight.delete(running);
    }
    this.log.append(
      'RESPONSE',
      `${row.command} ${stored.error ? `ERROR ${stored.error.code}` : summarize(outcome!.value)} (message ${row.id})`,
    );
    try {
      outcome?.after?.();
    } catch (err) {
      this.host.logger.error({ err: (err as Error)?.message ?? String(err), message: row.id }, `${row.command} failed after its response`);
    }
  }

  /**
   * Stores the response; if the database refuses it (not a lost connection:
   * a value, a constraint, a trigger), an error response saying why; if that
   * is refused too, a fixed generic one without the log; and if even that
   * is refused, marks the message processed with no response, so that one
   * message can never hold up the ones behind it. A lost connection is
   * thrown: the message stays unprocessed and the next wake-up retries it.
   * Returns the error that was stored (null: the response itself was).
   */
  private async respondOrExplain(
    row: MessageRow,
    ok: boolean,
    value: unknown,
    error: CommandFailure | null,
  ): Promise<{ error: CommandFailure | null }> {
    let refusal: unknown;
    try {
      await this.respond(row, ok, value, error);
      return { error };
    } catch (err) {
      if (!refusedByDatabase(err)) throw err;
      refusal = err;
    }
    const reason = storableText((refusal as Error).message, 500);
    const explained: CommandFailure = {
      code: 'GRAPEVINE_RESPONSE_UNSTORABLE',
      message: `supervisor ${this.host.id} processed this ${row.command} message but the database refused its ${error ? 'error ' : ''}response: ${reason}`,
    };
    this.host.logger.warn(
      { message: row.id, command: row.command, err: reason },
      'the database refused a control response; storing an error instead',
    );
    try {
      await this.respond(row, false, null, explained);
      return { error: explained };
    } catch (err) {
      if (!refusedByDatabase(err)) throw err;
    }
    const generic: CommandFailure = {
      code: 'GRAPEVINE_RESPONSE_UNSTORABLE',
      message: 'the supervisor processed this message but the database refused its response',
    };
    try {
      // Without the log entries, which may be what was refused; they stay buffered for the next write.
      await respond(this.host.pool, this.host.schema, {
        ...this.responseKey(row),
        ok: false,
        value: null,
        error: generic,
        logEntries: '[]',
      });
      return { error: generic };
    } catch (err) {
      if (!refusedByDatabase(err)) throw err;
      this.host.logger.error(
        { message: row.id, command: row.command, err: (err as Error).message },
        'the database refused every response to a control message; it is marked processed without one',
      );
      await markProcessed(this.host.pool, this.host.schema, this.responseKey(row));
      return { error: generic };
    }
  }

  private responseKey(row: MessageRow): { messageId: string; supervisor: string; command: string } {
    return { messageId: row.id, supervisor: this.host.id, command: row.command };
  }

  /** Stores the response together with the log so far: what the command did is in the log before anyone sees the answer. */
  private async respond(row: MessageRow, ok: boolean, value: unknown, error: CommandFailure | null): Promise<void> {
    const { pool, schema } = this.host;
    await this.log.writeWith((logEntries) => respond(pool, schema, { ...this.responseKey(row), ok, value, error, logEntries }));
  }

  private async handle(row: MessageRow): Promise<Outcome> {
    const { host } = this;
    const { command, args } = row;
    const changesState = ['PAUSE', 'RESUME', 'TIMEOUT_SET', 'REFRESH', 'SCALE'].includes(command);
    if (changesState && this.stopping) {
      throw new CommandError('GRAPEVINE_SHUTDOWN', `supervisor ${host.id} is stopping; ${command} no longer applies`);
    }
    switch (command) {
      case 'PING':
        return { value: 'PONG' };
      case 'ECHO': {
        const text = textArg(command, args, 'the text to log');
        host.logger.info({ echo: text }, text);
        return { value: 'OK' };
      }
      case 'INFO':
        return { value: this.info() };
      case 'PAUSE':
        host.pause();
        await this.publishStatus();
        return { value: 'OK' };
      case 'RESUME':
        host.resume();
        await this.publishStatus();
        return { value: 'OK' };
      case 'TIMEOUT_SET': {
        host.idleTimeout.set(timeoutArg(args));
        return { value: 'OK' };
      }
      case 'TIMEOUT_GET': {
        const remaining = host.idleTimeout.remainingMs();
        const timeout = host.idleTimeout.ms;
        return {
          value: {
            timeout: timeout === null ? null : timeout / 1000,
            remaining: remaining === null ? null : Math.round(remaining) / 1000,
          },
        };
      }
      case 'REFRESH':
        // A new generation of threads imports the task modules afresh; the
        // old one finishes the jobs it has, so nothing is dropped.
        await host.replaceThreads();
        this.log.append(
          'THREADS',
          `${host.threadPool.threads} x ${host.concurrency} (refreshed; tasks: ${host.threadPool.tasks.join(' ')})`,
        );
        return { value: 'OK' };
      case 'SCALE': {
        const threads = intArg(command, args, 1, 256, 'the new thread count');
        if (threads > host.maxThreads) {
          throw new CommandError(
            'GRAPEVINE_COMMAND_INVALID',
            `SCALE ${threads} is over this supervisor's maxThreads (${host.maxThreads}): ask for at most ${host.maxThreads}, ` +
              `or restart it with a higher maxThreads (grapevine run --max-threads N)`,
          );
        }
        await this.checkServerRoom(threads);
        await host.replaceThreads(threads);
        this.log.append('THREADS', `${threads} x ${host.concurrency} (scaled)`);
        return { value: 'OK' };
      }
      case 'STOP': {
        const reason = args === null || args === undefined || args === '' ? 'STOP message' : String(args);
        return { value: 'BYE', after: () => host.stop(reason) };
      }
      case 'EVAL': {
        if (!host.allowEval) {
          throw new CommandError(
            'GRAPEVINE_COMMAND_REFUSED',
            `EVAL is disabled on supervisor ${host.id} because it runs arbitrary code: start the supervisor with allowEval: true (grapevine run --allow-eval) to allow it`,
          );
        }
        const code = textArg(command, args, 'JavaScript to evaluate');
        let value = vm.runInThisContext(code, { filename: `grapevine-eval-message-${row.id}` }) as unknown;
        if (value && typeof (value as PromiseLike<unknown>).then === 'function') value = await value;
        return { value: toJson(value) };
      }
      default:
        throw new CommandError(
          'GRAPEVINE_COMMAND_INVALID',
          `unknown command ${JSON.stringify(command)}: use one of ${COMMANDS.join(', ')}`,
        );
    }
  }

  /**
   * A SCALE that would let the supervisor open more connections than the
   * server has left is refused: past max_connections the server refuses
   * every new connection, its other clients' included. What it would open
   * is bounded by maxConnections, so under the default budget this only
   * refuses a SCALE on a server that is nearly full already.
   */
  private async checkServerRoom(threads: number): Promise<void> {
    const { host } = this;
    const wanted = host.connectionsWith(threads);
    const more = wanted - host.status().connections.inUse;
    if (more <= 0) return;
    const server = await serverConnections(host.pool);
    const room = server.max_connections - server.reserved - server.in_use;
    if (more <= room) return;
    throw new CommandError(
      'GRAPEVINE_COMMAND_REFUSED',
      `SCALE ${threads} would let supervisor ${host.id} open up to ${wanted} connections, ${more} more than now, ` +
        `but PostgreSQL has room for ${Math.max(0, room)} more (max_connections ${server.max_connections}, ${server.reserved} reserved, ` +
        `${server.in_use} in use): scale to fewer threads, restart the supervisor with a lower maxConnections (--max-connections), ` +
        "or raise the server's max_connections",
    );
  }

  private info(): Record<string, unknown> {
    const { host } = this;
    const status = host.status();
    return {
      supervisor: host.id,
      host: os.hostname(),
      pid: process.pid,
      platform: `${process.platform}-${process.arch}`,
      os: `${os.type()} ${os.release()}`,
      node: process.version,
      grapevine: VERSION,
      schema: host.schema,
      queues: host.queues,
      tasks: host.threadPool.tasks,
      threads: host.threadPool.threads,
      concurrency: host.concurrency,
      connection: describeConnection(host.connectionString),
      startedAt: new Date(this.startedAt).toISOString(),
      status: status.state,
      threadStates: status.threads,
      restarts: status.restarts,
      connections: status.connections,
      pollIntervalMs: host.pollIntervalMs(),
      idleTimeout: host.idleTimeout.ms === null ? null : host.idleTimeout.ms / 1000,
      evalAllowed: host.allowEval,
    };
  }

  private async publishStatus(): Promise<void> {
    const state = this.host.status().state;
    await setSupervisorStatus(this.host.pool, this.host.schema, { id: this.host.id, status: state === 'STOPPING' ? 'BUSY' : state });
  }
}

/**
 * The database refused the response for what it holds (a value, a
 * constraint, a trigger's exception: class P0), so storing the same again
 * would fail again; a lost connection or a timeout is none of these.
 */
function refusedByDatabase(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return isDataError(err) || (typeof code === 'string' && code.startsWith('P0'));
}

function textArg(command: string, args: unknown, what: string): string {
  if (typeof args === 'number' || typeof args === 'boolean') return String(args);
  if (typeof args !== 'string' || args.length === 0) {
    throw new CommandError('GRAPEVINE_COMMAND_INVALID', `${command} needs ${what} as its argument, got ${JSON.stringify(args ?? null)}`);
  }
  return args;
}

function intArg(command: string, args: unknown, min: number, max: number, what: string): number {
  const n = typeof args === 'string' && args.trim() !== '' ? Number(args) : args;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new CommandError(
      'GRAPEVINE_COMMAND_INVALID',
      `${command} needs ${what}, an integer from ${min} to ${max}, got ${JSON.stringify(args ?? null)}`,
    );
  }
  return n;
}

/** Seconds (0 = stop as soon as idle), or "none" for no timeout. */
function timeoutArg(args: unknown): number | null {
  if (typeof args === 'string' && /^(none|off|inf|infinity)$/i.test(args.trim())) return null;
  const ms = idleTimeoutSecondsToMs(args);
  if (ms === undefined) {
    throw new CommandError(
      'GRAPEVINE_COMMAND_INVALID',
      `TIMEOUT_SET needs the idle timeout in seconds (0 to ${MAX_TIMEOUT_S}) or "none", got ${JSON.stringify(args ?? null)}`,
    );
  }
  return ms;
}

function toJson(value: unknown): unknown {
  if (value === undefined) return null;
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new CommandError('GRAPEVINE_COMMAND_FAILED', `EVAL result cannot be sent back as JSON: ${(err as Error).message}`);
  }
  return text === undefined ? null : JSON.parse(text);
}

function describeArgs(args: unknown): string {
  if (args === null || args === undefined) return '';
  const text = typeof args === 'string' ? args : JSON.stringify(args);
  return ` ${storableText(text, 200)}`;
}

function summarize(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return storableText(text, 80);
}
