import { randomUUID } from 'node:crypto';
import { DEFAULTS, validateSchemaName, validateTimeoutMs } from './config.ts';
import { clientConnections, explainConnectionErrors, type ConnectionOptions } from './db.ts';
import { GrapevineError } from './errors.ts';
import { Listener } from './listener.ts';
import { Waiters } from './waiters.ts';
import { jobOperations, type JobOperations } from './operations.ts';
import { queueOperations, type QueueOperations } from './queues.ts';
import { silentLogger, type Logger } from './log.ts';
import { channelsFor } from './schema/channels.ts';
import { explainingOutdatedSchema, migrate, type MigrateResult } from './schema/migrate.ts';
import {
  followLog,
  logAfter,
  logTail,
  messageRecipients,
  readResponses as selectResponses,
  responseIds,
  sendMessage,
  takeResponses as takeResponseRows,
  unfollowLog,
  type LogRow,
  type ResponseRow,
} from './sql/control.ts';
import { listSupervisors, supervisorStates } from './sql/supervisors.ts';
import { supervisorFromRow, type SupervisorInfo } from './supervisor-info.ts';

export type { RegistryStatus, SupervisorInfo, ThreadStatus } from './supervisor-info.ts';
export type { JobFilter, JobLink, JobLinks, JobOperations, JobPage, JobStats } from './operations.ts';
export type { QueueConfig, QueueInfo, QueueOperations, QueueSettings, Rate } from './queues.ts';

export interface ControlClientOptions extends ConnectionOptions {
  /** Defaults to "grapevine". */
  schema?: string;
  /** Apply migrations before first use (default true); with false, an older schema fails with GRAPEVINE_SCHEMA_TOO_OLD. */
  migrate?: boolean;
  /** A supervisor whose heartbeat is older than this counts as LOST (default: DEFAULTS.leaseMs). */
  lostAfterMs?: number;
  logger?: Logger;
}

/** One supervisor's answer to one message. */
export interface ControlResponse {
  supervisor: string;
  messageId: string;
  command: string;
  ok: boolean;
  /** The answer when ok: "PONG", "OK", an INFO object, ... */
  value: unknown;
  /** Why the command was not carried out: unknown command, bad argument, EVAL refused, ... */
  error: { code: string; message: string } | null;
  respondedAt: Date;
}

/** One entry of the supervisor log: the row as it is stored. */
export type LogEntry = LogRow;

export interface SendOptions {
  /** Recipients (supervisor ids); default: every live supervisor. */
  supervisors?: string[];
}

/** The operator's object: the control plane, finding and acting on jobs (JobOperations), and queue settings (QueueOperations). */
export interface Control extends JobOperations, QueueOperations {
  readonly schema: string;
  /** Sends a command; returns the message id (shared by all recipients). */
  send(command: string, args?: unknown, options?: SendOptions): Promise<string>;
  /** Sends and waits for every recipient's response (deleted once read unless `delete: false`). */
  sendAndWait(
    command: string,
    args?: unknown,
    options?: SendOptions & { timeoutMs?: number; delete?: boolean },
  ): Promise<Record<string, ControlResponse>>;
  /** Which recipients of the message have answered. */
  hasResponse(messageId: string): Promise<Record<string, boolean>>;
  /** Ids of the messages a supervisor has answered (and whose responses are still stored). */
  responseIds(supervisorId: string): Promise<string[]>;
  /**
   * The responses to a message (all recipients, or one supervisor), waiting up to
   * `timeoutMs` (default 0) for missing ones; a response still missing then
   * is an error naming the supervisor.
   */
  getResponse(
    messageId: string,
    options?: { supervisor?: string; delete?: boolean; timeoutMs?: number },
  ): Promise<Record<string, ControlResponse>>;
  /** Every registered supervisor, live or not, oldest first. */
  supervisors(): Promise<SupervisorInfo[]>;
  /** The newest `n` (default 20) log entries, oldest first. */
  logTail(options?: { supervisor?: string; n?: number }): Promise<LogEntry[]>;
  /** Calls `onEntry` for every new log entry after `afterId` until the returned stop function is called. */
  followLog(options: { supervisor?: string; afterId?: string }, onEntry: (entry: LogEntry) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

const COMMAND = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
/** A follower's registration lapses this long after its last renewal (a follower that died stops costing NOTIFYs). */
const FOLLOWER_TTL_MS = 30_000;
const FOLLOWER_RENEW_MS = 10_000;
/** PostgreSQL's undefined_table. */
const UNDEFINED_TABLE = '42P01';
const MAX_ARGS_BYTES = 64 * 1024;

/**
 * The operator's side of the control plane: messages to supervisors and
 * their responses, the supervisor registry, the supervisor log. Waiting for a
 * response wakes on a notification on the responses channel; only while
 * PostgreSQL's NOTIFY queue is half full or more (no notification is sent
 * then) does it also look at each health check of that connection.
 */
export function createControl(options: ControlClientOptions = {}): Control {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const { connectionString, listen, pool, poll } = clientConnections(options, { max: 2, applicationName: 'grapevine-control' });
  const lostAfterMs = options.lostAfterMs ?? DEFAULTS.leaseMs;
  const logger = options.logger ?? silentLogger();
  const channels = channelsFor(schema);
  let migrated: Promise<MigrateResult> | null = null;
  // Waiting for responses: the responses channel names the message id.
  const answered = new Waiters(
    { ...listen, channels: [channels.responses], applicationName: 'grapevine-control', logger },
    (payload) => [payload],
    poll,
  );
  /** Stops of the followLog() calls still running. */
  const followers = new Set<() => Promise<void>>();

  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    if ((options.migrate ?? DEFAULTS.migrate) !== false) {
      migrated ??= explainConnectionErrors(connectionString, () => migrate(pool, schema)).catch((err) => {
        migrated = null;
        throw err;
      });
      await migrated;
      return explainConnectionErrors(connectionString, fn);
    }
    return explainConnectionErrors(connectionString, () => explainingOutdatedSchema(fn, pool, schema));
  };

  /** Checks named recipients; undefined (every live supervisor) is resolved by the send statement itself. */
  const checkRecipients = async (supervisors: string[] | undefined, command: string): Promise<string[] | null> => {
    if (supervisors === undefined) return null;
    if (!Array.isArray(supervisors) || supervisors.length === 0 || supervisors.some((w) => typeof w !== 'string' || w.length === 0)) {
      throw new GrapevineError(
        'GRAPEVINE_SUPERVISOR_NOT_FOUND',
        `supervisors must be a non-empty array of supervisor ids, got ${JSON.stringify(supervisors)}`,
      );
    }
    const unique = [...new Set(supervisors)];
    const rows = await supervisorStates(pool, schema, { lostAfterMs, ids: unique });
    const status = new Map(rows.map((r) => [r.id, r.status]));
    for (const supervisor of unique) {
      const state = status.get(supervisor);
      if (state === undefined) {
        throw new GrapevineError(
          'GRAPEVINE_SUPERVISOR_NOT_FOUND',
          `supervisor '${supervisor}' is not registered in schema "${schema}": see grapevine supervisors for the ids`,
        );
      }
      if (state === 'EXITED' || state === 'LOST') {
        throw new GrapevineError(
          'GRAPEVINE_SUPERVISOR_NOT_FOUND',
          `supervisor '${supervisor}' is ${state} and cannot answer ${command}: see grapevine supervisors for live ones`,
        );
      }
    }
    return unique;
  };

  const readResponses = async (messageId: string, supervisors: string[]): Promise<Map<string, ResponseRow>> => {
    const rows = await selectResponses(pool, schema, { messageId, supervisors });
    return new Map(rows.map((r) => [r.supervisor, r]));
  };

  /** The responses there are; deleted (if `remove`) only once all of `supervisors` have answered. */
  const takeResponses = async (messageId: string, supervisors: string[], remove: boolean): Promise<Map<string, ResponseRow>> => {
    const rows = await takeResponseRows(pool, schema, { messageId, supervisors, remove });
    return new Map(rows.map((r) => [r.supervisor, r]));
  };

  /** Resolves once every one of `supervisors` has answered (taking the responses), or after `timeoutMs` with what there is. */
  const waitForResponses = async (
    messageId: string,
    supervisors: string[],
    timeoutMs: number,
    remove: boolean,
  ): Promise<Map<string, ResponseRow>> => {
    let latest = new Map<string, ResponseRow>();
    return answered.wait(
      messageId,
      async () => {
        latest = await takeResponses(messageId, supervisors, remove);
        return latest.size === supervisors.length ? latest : undefined;
      },
      timeoutMs,
      () => latest,
    );
  };

  const missingError = async (messageId: string, command: string, missing: string[], timeoutMs: number): Promise<GrapevineError> => {
    const rows = await supervisorStates(pool, schema, { lostAfterMs, ids: missing });
    const status = new Map(rows.map((r) => [r.id, r.status]));
    const who = missing
      .map((w) => {
        const state = status.get(w);
        return state === 'EXITED' || state === 'LOST' ? `'${w}' (${state})` : `'${w}'`;
      })
      .join(', ');
    const waited = timeoutMs > 0 ? ` after waiting ${timeoutMs} ms` : ' (pass timeoutMs to wait for it)';
    return new GrapevineError(
      'GRAPEVINE_RESPONSE_MISSING',
      `response missing for supervisor${missing.length > 1 ? 's' : ''}: ${who} to message ${messageId} (${command})${waited}`,
    );
  };

  const sendTo = async (
    command: string,
    args: unknown,
    supervisors: string[] | undefined,
  ): Promise<{ id: string; command: string; recipients: string[] }> => {
    const name = validateCommand(command);
    const argsJson = encodeArgs(name, args);
    return run(async () => {
      const named = await checkRecipients(supervisors, name);
      const sent = await sendMessage(pool, schema, { recipients: named, command: name, argsJson, lostAfterMs });
      if (sent === undefined) {
        throw new GrapevineError(
          'GRAPEVINE_SUPERVISOR_NOT_FOUND',
          `no live supervisor in schema "${schema}" to send ${name} to: start one (grapevine run --tasks DIR) or check grapevine supervisors`,
        );
      }
      return { id: sent.id, command: name, recipients: sent.supervisors };
    });
  };

  /** The responses of `wanted`, waiting up to timeoutMs; an error naming whoever did not answer. */
  const collect = async (id: string, command: string, wanted: string[], timeoutMs: number, remove: boolean) => {
    const found = timeoutMs > 0 ? await waitForResponses(id, wanted, timeoutMs, remove) : await takeResponses(id, wanted, remove);
    const missing = wanted.filter((w) => !found.has(w));
    if (missing.length > 0) throw await missingError(id, command, missing, timeoutMs);
    return Object.fromEntries(wanted.map((w) => [w, toResponse(found.get(w)!)]));
  };

  const control: Control = {
    schema,
    ...jobOperations(pool, schema, run),
    ...queueOperations(pool, schema, run),

    async send(command, args, opts = {}) {
      return (await sendTo(command, args, opts.supervisors)).id;
    },

    async sendAndWait(command, args, opts = {}) {
      const timeoutMs = validateTimeoutMs(opts.timeoutMs ?? 10_000);
      const sent = await sendTo(command, args, opts.supervisors);
      return run(() => collect(sent.id, sent.command, sent.recipients, timeoutMs, opts.delete ?? true));
    },

    async hasResponse(messageId) {
      const id = toMessageId(messageId);
      return run(async () => {
        const recipients = await recipientsOf(id);
        const found = await readResponses(id, recipients.supervisors);
        return Object.fromEntries(recipients.supervisors.map((w) => [w, found.has(w)]));
      });
    },

    async responseIds(supervisorId) {
      if (typeof supervisorId !== 'string' || supervisorId.length === 0) {
        throw new GrapevineError(
          'GRAPEVINE_SUPERVISOR_NOT_FOUND',
          `responseIds() needs a supervisor id, got ${JSON.stringify(supervisorId)}`,
        );
      }
      return run(async () => {
        return responseIds(pool, schema, { supervisor: supervisorId });
      });
    },

    async getResponse(messageId, { supervisor, delete: remove = false, timeoutMs = 0 } = {}) {
      const id = toMessageId(messageId);
      validateTimeoutMs(timeoutMs);
      return run(async () => {
        const recipients = await recipientsOf(id);
        if (supervisor !== undefined && !recipients.supervisors.includes(supervisor)) {
          throw new GrapevineError(
            'GRAPEVINE_RESPONSE_MISSING',
            `response missing for supervisor: '${supervisor}': message ${id} (${recipients.command}) was not sent to it (recipients: ${recipients.supervisors.join(', ')})`,
          );
        }
        return collect(id, recipients.command, supervisor === undefined ? recipients.supervisors : [supervisor], timeoutMs, remove);
      });
    },

    async supervisors() {
      return run(async () => {
        return (await listSupervisors(pool, schema, { lostAfterMs })).map(supervisorFromRow);
      });
    },

    async logTail({ supervisor, n = 20 } = {}) {
      if (!Number.isInteger(n) || n < 1 || n > 100_000) {
        throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', `n must be an integer from 1 to 100000, got ${JSON.stringify(n)}`);
      }
      return run(async () => {
        return logTail(pool, schema, { supervisor: supervisor ?? null, limit: n });
      });
    },

    async followLog({ supervisor, afterId = '0' }, onEntry) {
      // Supervisors notify the log channel only while a follower is
      // registered (log_followers in the baseline migration), so register before listening.
      const follower = randomUUID();
      const register = () => followLog(pool, schema, { follower, ttlMs: FOLLOWER_TTL_MS });
      // With migrate: false the schema may predate log_followers; its
      // supervisors notify on every log write, so there is nothing to join.
      const registered = await run(() =>
        register().then(
          () => true,
          (err: { code?: string }) => {
            if (err.code === UNDEFINED_TABLE) return false;
            throw err;
          },
        ),
      );
      let last = afterId;
      let reading: Promise<void> | null = null;
      let renewing: Promise<void> | null = null;
      let again = false;
      let stopped = false;
      const read = (): void => {
        if (stopped) return;
        if (reading) {
          again = true;
          return;
        }
        reading = (async () => {
          do {
            again = false;
            for (;;) {
              const rows = await logAfter(pool, schema, { afterId: last, supervisor: supervisor ?? null });
              for (const row of rows) {
                if (stopped) return;
                last = row.id;
                onEntry(row);
              }
              if (rows.length < 1000) break;
            }
          } while (again && !stopped);
        })()
          .catch((err: Error) => logger.warn({ err: err.message }, 'could not read the supervisor log'))
          .finally(() => {
            reading = null;
          });
      };
      const listener = new Listener({ ...listen, channels: [channels.log], applicationName: 'grapevine-log', logger });
      listener.on('notification', (_channel: string, payload: string) => {
        if (supervisor === undefined || payload === supervisor) read();
      });
      listener.on('connected', read);
      // Renewing also reads: an append whose statement began before this
      // follower registered sent no notification.
      const renewal = registered
        ? setInterval(() => {
            if (renewing) return;
            renewing = register()
              .then(read, (err: Error) => logger.warn({ err: err.message }, 'could not renew the log follower'))
              .finally(() => {
                renewing = null;
              });
          }, FOLLOWER_RENEW_MS).unref()
        : undefined;
      const end = async () => {
        stopped = true;
        clearInterval(renewal);
        followers.delete(end);
        await listener.stop();
        await reading;
        // A renewal still on its way would register the follower again after the delete.
        await renewing;
        await unfollowLog(pool, schema, { follower }).catch(() => {});
      };
      // Before start(): a close() while the listener connects ends this follower too.
      followers.add(end);
      try {
        await explainConnectionErrors(connectionString, () => listener.start());
      } catch (err) {
        await end();
        throw err;
      }
      return end;
    },

    async close() {
      await answered.stop();
      for (const end of [...followers]) await end();
      if (!options.pool) await pool.end();
    },
  };

  async function recipientsOf(id: string): Promise<{ supervisors: string[]; command: string }> {
    const rows = await messageRecipients(pool, schema, { messageId: id });
    if (rows.length === 0) {
      throw new GrapevineError('GRAPEVINE_RESPONSE_MISSING', `message ${id} does not exist in schema "${schema}" (never sent, or pruned)`);
    }
    return { supervisors: rows.map((r) => r.supervisor), command: rows[0].command };
  }

  return control;
}

function validateCommand(command: unknown): string {
  if (typeof command !== 'string' || !COMMAND.test(command)) {
    throw new GrapevineError(
      'GRAPEVINE_COMMAND_INVALID',
      `invalid command ${JSON.stringify(command)}: a command is one word of letters, digits and _ such as PING, INFO or TIMEOUT_SET`,
    );
  }
  return command.toUpperCase();
}

function encodeArgs(command: string, args: unknown): string | null {
  if (args === undefined) return null;
  let text: string | undefined;
  try {
    text = JSON.stringify(args);
  } catch (err) {
    throw new GrapevineError('GRAPEVINE_COMMAND_INVALID', `arguments of ${command} are not JSON-serializable: ${(err as Error).message}`);
  }
  if (text === undefined)
    throw new GrapevineError('GRAPEVINE_COMMAND_INVALID', `arguments of ${command} are not JSON (got ${typeof args})`);
  if (Buffer.byteLength(text) > MAX_ARGS_BYTES) {
    throw new GrapevineError(
      'GRAPEVINE_COMMAND_INVALID',
      `arguments of ${command} are ${Buffer.byteLength(text)} bytes, over the ${MAX_ARGS_BYTES}-byte limit`,
    );
  }
  return text;
}

function toMessageId(id: unknown): string {
  const text = String(id);
  if (!/^[1-9][0-9]{0,18}$/.test(text)) {
    throw new GrapevineError(
      'GRAPEVINE_RESPONSE_MISSING',
      `invalid message id ${JSON.stringify(id)}: message ids are positive integers returned by send()`,
    );
  }
  return text;
}

function toResponse(row: ResponseRow): ControlResponse {
  return {
    supervisor: row.supervisor,
    messageId: row.message_id,
    command: row.command,
    ok: row.ok,
    value: row.value,
    error: row.error,
    respondedAt: row.responded_at,
  };
}
