import { EventEmitter } from 'node:events';
import pg from 'pg';
import { backoffMs } from './backoff.ts';
import { describeConnection, redactSecret } from './redact.ts';
import { throttled, type Logger } from './log.ts';
import { quoteIdent } from './schema/channels.ts';
import { unreachableError, type Queryable } from './db.ts';
import { GrapevineError } from './errors.ts';

export interface ListenerOptions {
  connectionString: string;
  channels: string[];
  applicationName: string;
  logger: Logger;
  /** How often the subscription is checked (pg_listening_channels over the same socket). */
  healthCheckMs?: number;
  /** A check that does not answer within this long means a half-open socket. */
  healthTimeoutMs?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /**
   * When the LISTEN connection goes elsewhere than everything else (a
   * listenUrl beside a pooler): the pool the notifications are sent
   * through, and its connection string. start() checks that both reach the
   * same database on the same server.
   */
  sameServerAs?: { pool: Queryable; connectionString: string };
}

interface ServerIdentity {
  database: string;
  started: string;
}

const IDENTITY = 'SELECT current_database() AS database, pg_postmaster_start_time()::text AS started';

/**
 * One dedicated connection that LISTENs. It reconnects with backoff and
 * jitter after any loss, re-LISTENs, and emits 'connected' each time, because
 * notifications sent while it was away are gone for good and the owner must
 * re-read the table. Events: 'notification' (channel, payload),
 * 'connected', 'disconnected' (error), 'queueUsage' (how full PostgreSQL's
 * NOTIFY queue is, 0-1, after each health check; asked only while someone
 * listens for it), and 'unavailable' (error): LISTEN cannot work on this
 * connection string (a pooler in transaction mode hands each statement to
 * whichever server connection is free). With a listener for 'unavailable'
 * the Listener then stops for good, and its owner polls instead; without
 * one it reconnects as for any loss.
 */
export class Listener extends EventEmitter {
  private readonly options: Required<Omit<ListenerOptions, 'sameServerAs'>> & Pick<ListenerOptions, 'sameServerAs'>;
  // Owned by this class; replaced on every reconnect.
  private client: pg.Client | null = null;
  private stopped = false;
  private attempt = 0;
  private healthTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private readonly warn = throttled(1_000);
  /** The server process that ran the LISTENs: a health check answered by another means a pooler in between. */
  private listeningPid: number | null = null;
  connected = false;
  reconnects = 0;

  constructor(options: ListenerOptions) {
    super();
    this.options = {
      healthCheckMs: 5_000,
      healthTimeoutMs: 3_000,
      reconnectMinMs: 100,
      reconnectMaxMs: 5_000,
      ...options,
    };
  }

  /** Connects once; a failure here is reported to the caller, later ones are retried forever. */
  async start(): Promise<void> {
    try {
      await this.connect({ first: true });
    } catch (err) {
      this.stopped = true;
      throw err instanceof GrapevineError ? err : unreachableError(err, this.options.connectionString);
    }
  }

  /**
   * A LISTEN on another database, or another server, would hear none of the
   * notifications: jobs would wait for the sweep and waits for their
   * timeout. The database's name and its server's start time tell them apart.
   */
  private async checkSameServer(client: pg.Client, other: { pool: Queryable; connectionString: string }): Promise<void> {
    const [here, there] = await Promise.all([client.query<ServerIdentity>(IDENTITY), other.pool.query<ServerIdentity>(IDENTITY)]);
    const [a, b] = [here.rows[0], there.rows[0]];
    if (a.database === b.database && a.started === b.started) return;
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `listenUrl (${describeConnection(this.options.connectionString)}) reaches database "${a.database}" of a server started at ${a.started}, ` +
        `but the connection string (${describeConnection(other.connectionString)}) reaches "${b.database}" of a server started at ${b.started}: ` +
        'notifications sent through one are never heard on the other. Point listenUrl at the same PostgreSQL and database, directly rather than through the pooler',
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.healthTimer) clearTimeout(this.healthTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = null;
    this.connected = false;
    if (client) await client.end().catch(() => {});
  }

  /** For tests and operations: the backend pid of the LISTEN connection. */
  get backendPid(): number | null {
    return (this.client as unknown as { processID?: number } | null)?.processID ?? null;
  }

  /** `first`: the connection start() makes, which checks sameServerAs before it counts as connected. */
  private async connect({ first = false } = {}): Promise<void> {
    const client = new pg.Client({
      connectionString: this.options.connectionString,
      application_name: this.options.applicationName,
      keepAlive: true,
      keepAliveInitialDelayMillis: 5_000,
      connectionTimeoutMillis: 10_000,
    });
    client.on('notification', (msg) => this.emit('notification', msg.channel, msg.payload ?? ''));
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('LISTEN connection ended')));
    try {
      await client.connect();
      for (const channel of this.options.channels) await client.query(`LISTEN ${quoteIdent(channel)}`);
      this.listeningPid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      if (first && this.options.sameServerAs) await this.checkSameServer(client, this.options.sameServerAs);
    } catch (err) {
      client.removeAllListeners('end');
      client.on('error', () => {});
      await client.end().catch(() => {});
      throw err;
    }
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
    this.connected = true;
    this.attempt = 0;
    this.scheduleHealthCheck();
    this.emit('connected');
  }

  private lost(client: pg.Client, err: Error): void {
    if (client !== this.client) return;
    this.client = null;
    this.connected = false;
    if (this.healthTimer) clearTimeout(this.healthTimer);
    client.removeAllListeners('notification');
    client.on('error', () => {});
    // A half-open socket would otherwise linger until the OS gives up on it.
    (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    if (this.stopped) return;
    this.emit('disconnected', err);
    this.scheduleReconnect(err);
  }

  private scheduleReconnect(err: Error): void {
    const { reconnectMinMs, reconnectMaxMs, connectionString, logger } = this.options;
    this.warn((suppressed) =>
      logger.warn(
        { err: redactSecret(err.message, connectionString), suppressed, target: describeConnection(connectionString) },
        'LISTEN connection lost; reconnecting',
      ),
    );
    const delay = backoffMs({ attempt: this.attempt, baseMs: reconnectMinMs, maxMs: reconnectMaxMs, jitter: true });
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect().then(
        () => {
          this.reconnects++;
        },
        (e: Error) => {
          if (!this.stopped) this.scheduleReconnect(e);
        },
      );
    }, delay);
  }

  private scheduleHealthCheck(): void {
    if (this.healthTimer) clearTimeout(this.healthTimer);
    this.healthTimer = setTimeout(() => void this.checkHealth(), this.options.healthCheckMs);
    this.healthTimer.unref();
  }

  /** Forces a health check now (tests use this instead of waiting for the timer). */
  async checkHealth(): Promise<boolean> {
    const client = this.client;
    if (!client) return false;
    let timer: NodeJS.Timeout | undefined;
    let usage: number;
    const watchUsage = this.listenerCount('queueUsage') > 0;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('LISTEN connection did not answer a health check')), this.options.healthTimeoutMs);
      });
      // Only for an owner that reacts to it: the usage function moves the
      // queue's tail under two server-wide exclusive locks.
      const sql = `SELECT pg_backend_pid() AS pid, array(SELECT pg_listening_channels()) AS channels${
        watchUsage ? ', pg_notification_queue_usage() AS usage' : ''
      }`;
      const result = await Promise.race([client.query<{ pid: number; channels: string[]; usage?: number }>(sql), timeout]);
      const row = result.rows[0];
      const listening = new Set(row.channels);
      const missing = this.options.channels.filter((c) => !listening.has(c));
      if (missing.length > 0 || row.pid !== this.listeningPid) {
        // Through a pooler in transaction mode the LISTEN stays on a server connection this one no longer has.
        throw new ListenUnavailable(
          missing.length > 0
            ? `subscription lost for ${missing.join(', ')}`
            : `the LISTEN ran on server process ${this.listeningPid} and this check on ${row.pid}`,
        );
      }
      if (client === this.client) this.scheduleHealthCheck();
      usage = Number(row.usage ?? 0);
    } catch (err) {
      if (err instanceof ListenUnavailable && this.listenerCount('unavailable') > 0) {
        await this.stop();
        this.emit('unavailable', err);
        return false;
      }
      this.lost(client, err as Error);
      return false;
    } finally {
      clearTimeout(timer);
    }
    // How full the server's NOTIFY queue is: from half full on, grapevine sends no notifications (notify() in src/schema/functions/notify.sql).
    // Outside the try: a listener's mistake is not a lost connection.
    if (watchUsage) this.emit('queueUsage', usage);
    return true;
  }
}

/** The health check's finding that LISTEN cannot work through this connection string. */
class ListenUnavailable extends Error {
  constructor(what: string) {
    super(
      `${what}: this connection goes through a pooler in transaction mode, which cannot keep a LISTEN. ` +
        'Set listenUrl (--listen-url, GRAPEVINE_LISTEN_URL) to reach PostgreSQL directly, or poll (--poll)',
    );
    this.name = 'ListenUnavailable';
  }
}
