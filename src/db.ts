import pg from 'pg';
import { resolveConnectionString, resolveListenUrl, resolvePoll, resolvePollInterval, resolvePreparedStatements } from './config.ts';
import { GrapevineError } from './errors.ts';
import { describeConnection, redactSecret } from './redact.ts';

export type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * A statement ready to run, carrying the type of the rows it answers with
 * (the typed functions of src/sql/ build these). `row` is never set: it only
 * lets the type travel with the statement, e.g. through a pipelined transaction.
 */
export interface TypedQuery<R> extends pg.QueryConfig {
  readonly row?: R;
}

export async function rowsOf<R>(db: Queryable, query: TypedQuery<R>): Promise<R[]> {
  return (await db.query<R & pg.QueryResultRow>(query)).rows;
}

/** The rows of each statement of a pipelined transaction, in order. */
export type RowsOf<Q extends readonly TypedQuery<unknown>[]> = { -readonly [K in keyof Q]: Q[K] extends TypedQuery<infer R> ? R[] : never };

export interface PoolOptions {
  max: number;
  /** Connections kept open while idle (the rest close after 10 s idle). */
  min?: number;
  applicationName: string;
  /** Called for errors on idle connections (a restarted server, a killed backend). */
  onIdleError?: (err: Error) => void;
  /** Send a client's queued statements without waiting for each answer (pg's pipeline mode). */
  pipeline?: boolean;
  /**
   * PostgreSQL cancels a statement that runs longer (statement_timeout), and
   * a statement with no answer at all a second after that fails here and
   * its connection is discarded. Implies pipeline (see limitStatements).
   */
  statementTimeoutMs?: number;
  /**
   * False sends every statement unnamed, so no prepared statement outlives
   * its transaction: for poolers in transaction mode that do not track them
   * (PgBouncer before 1.21, or with max_prepared_statements = 0).
   */
  preparedStatements?: boolean;
  /**
   * Waits until a new connection may be opened, and resolves with the
   * function that counts it out again when it ends (a ConnectionBudget).
   * The wait has no deadline: a connection that does not fit waits for one
   * to close rather than fail.
   */
  gate?: () => Promise<() => void>;
}

/**
 * Past a statement timeout PostgreSQL has answered, unless the network lost
 * the connection: a partition, or a NAT or firewall that dropped the flow,
 * where TCP would keep retransmitting for about a quarter of an hour. (An
 * event loop blocked that long reads the answer late too, so this is only
 * for pools on a thread that runs no handlers.)
 */
const UNANSWERED_MARGIN_MS = 1_000;

const CONNECT_TIMEOUT_MS = 10_000;

export function createPool(connectionString: string, options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: options.max,
    min: options.min ?? 0,
    application_name: options.applicationName,
    // A dead server must surface as an error, not as a hang. A gated pool
    // times its clients from when they may connect (gatedClient).
    connectionTimeoutMillis: options.gate ? 0 : CONNECT_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    // A limited statement goes out with its BEGIN, SET LOCAL and COMMIT (limitStatements).
    ...(options.pipeline || options.statementTimeoutMs ? { pipeline: true } : {}),
    ...(options.statementTimeoutMs ? { query_timeout: options.statementTimeoutMs + UNANSWERED_MARGIN_MS } : {}),
    ...(options.preparedStatements === false || options.gate
      ? {
          Client: options.gate
            ? gatedClient(options.preparedStatements === false ? UnnamedStatementsClient : pg.Client, options.gate)
            : UnnamedStatementsClient,
        }
      : {}),
  });
  if (options.statementTimeoutMs) limitStatements(pool, options.statementTimeoutMs);
  // Without a listener, an idle connection's error (server restart,
  // pg_terminate_backend) would crash the process.
  pool.on('error', (err) => options.onIdleError?.(err));
  return pool;
}

/** How a client or control client reaches PostgreSQL (their options of the same names). */
export interface ConnectionOptions {
  /** Defaults to DATABASE_URL. */
  connectionString?: string;
  /**
   * Where waits LISTEN (default GRAPEVINE_LISTEN_URL, else connectionString).
   * Behind a pooler in transaction mode, point this at the server itself.
   */
  listenUrl?: string;
  /** Named prepared statements (default true, or GRAPEVINE_PREPARED_STATEMENTS); see SupervisorOptions. */
  preparedStatements?: boolean;
  /**
   * Waits (waitForJob, sendAndWait) poll every pollIntervalMs instead of
   * LISTENing (default false, or GRAPEVINE_POLL): for a pooler in
   * transaction mode with no direct address for listenUrl. Without it, a
   * wait that finds LISTEN unavailable falls back to polling by itself.
   */
  poll?: boolean;
  /** How often a polling wait looks (default 1000 ms, or GRAPEVINE_POLL_INTERVAL_MS). */
  pollIntervalMs?: number;
  /** Bring your own pool; close() will not end it. */
  pool?: pg.Pool;
}

/** Where a Listener connects, and what it checks that against when that is elsewhere (ListenerOptions). */
export interface ListenTarget {
  connectionString: string;
  sameServerAs?: { pool: Queryable; connectionString: string };
}

/** The LISTEN target for a pool and its connection string, given where LISTEN goes. */
export function listenTarget(listenUrl: string, pool: Queryable, connectionString: string): ListenTarget {
  return listenUrl === connectionString ? { connectionString } : { connectionString: listenUrl, sameServerAs: { pool, connectionString } };
}

/**
 * The pool (the caller's, or a new one), its connection string and where
 * LISTEN goes, for a client or control client. With a caller's pool, its
 * connection string still serves the LISTEN connection unless listenUrl
 * says otherwise.
 */
export function clientConnections(
  options: ConnectionOptions,
  pool: { max: number; applicationName: string },
): {
  connectionString: string;
  listen: ListenTarget;
  pool: pg.Pool;
  preparedStatements: boolean;
  poll: { poll: boolean; pollIntervalMs: number };
} {
  const poolUrl = (options.pool as { options?: { connectionString?: string } } | undefined)?.options?.connectionString;
  const connectionString = options.pool
    ? (options.connectionString ?? poolUrl ?? process.env.DATABASE_URL ?? '')
    : resolveConnectionString(options.connectionString);
  const preparedStatements = resolvePreparedStatements(options.preparedStatements);
  const poll = { poll: resolvePoll(options.poll), pollIntervalMs: resolvePollInterval(options.pollIntervalMs) };
  const created = options.pool ?? createPool(connectionString, { ...pool, preparedStatements });
  const listen = listenTarget(resolveListenUrl(options.listenUrl, connectionString), created, connectionString);
  return { connectionString, listen, pool: created, preparedStatements, poll };
}

/**
 * A pg client that drops the name of every statement it sends: PostgreSQL
 * then parses it afresh each time, and nothing is left on the server
 * connection for whichever client a pooler hands it to next.
 */
class UnnamedStatementsClient extends pg.Client {
  // `never` fits the return type of each of pg's overloads; the value is whatever pg's own query() returns.
  override query(...args: unknown[]): never {
    return (super.query as (...a: unknown[]) => never)(unnamed(args[0]), ...args.slice(1));
  }
}

/**
 * A pg client class that connects only once `gate` lets it, and counts
 * itself out when its connection ends (or fails to open). Its connection
 * timeout starts when it may connect: the wait for the gate is not the
 * server's slowness.
 */
function gatedClient(Base: typeof pg.Client, gate: () => Promise<() => void>): typeof pg.Client {
  return class GatedClient extends Base {
    constructor(config?: string | pg.ClientConfig) {
      super(config);
      (this as unknown as { _connectionTimeoutMillis: number })._connectionTimeoutMillis = CONNECT_TIMEOUT_MS;
    }

    // pg's connect() with or without a callback goes through _connect(), which its types leave out.
    _connect(callback: (err?: Error) => void): void {
      const base = Base.prototype as unknown as { _connect(cb: (err?: Error) => void): void };
      const connect = (cb: (err?: Error) => void) => base._connect.call(this, cb);
      gate().then(
        (giveBack) => {
          this.once('end', giveBack);
          if ((this as unknown as { _ending?: boolean })._ending) {
            giveBack();
            callback(new Error('Connection terminated before it opened'));
            return;
          }
          connect((err) => {
            if (err) giveBack();
            callback(err);
          });
        },
        (err: Error) => callback(err),
      );
    }
  };
}

/**
 * The caller's connection (addJob's `db`) with grapevine's statements sent
 * unnamed, as the pools made with preparedStatements: false send them: a
 * caller's connection through a pooler is shared the same way.
 */
export function withUnnamedStatements(db: Queryable): Queryable {
  return {
    query: ((...args: unknown[]) => (db.query as (...a: unknown[]) => unknown)(unnamed(args[0]), ...args.slice(1))) as Queryable['query'],
  };
}

/** A statement's config without its name; text and Submittable queries as they are. */
function unnamed(config: unknown): unknown {
  const c = config as { name?: unknown; submit?: unknown } | null;
  return c && typeof c === 'object' && typeof c.submit !== 'function' && c.name !== undefined ? { ...c, name: undefined } : config;
}

/** SET LOCAL statement_timeout for the pools that limit their statements (see limitStatements). */
const statementLimits = new WeakMap<pg.Pool, string>();

/**
 * Limits every statement run through the pool: pool.query() runs each in a
 * transaction of its own behind SET LOCAL statement_timeout (sent together
 * with it), and withTransaction() and withPipelinedTransaction() start with
 * that SET LOCAL. A session-level SET would outlive the transaction: behind
 * a pooler in transaction mode it would stay on whichever server connection
 * ran it and limit other clients' statements, while this pool's next
 * statement ran on another connection without it.
 */
function limitStatements(pool: pg.Pool, ms: number): void {
  const setLocal = `SET LOCAL statement_timeout = ${Math.floor(ms)}`;
  statementLimits.set(pool, setLocal);
  const limited = (config: string | pg.QueryConfig, values?: unknown[]) =>
    withClient(pool, async (client) => {
      const statement = typeof config === 'string' ? { text: config, values } : values === undefined ? config : { ...config, values };
      const [, , result] = await settleInOrder([
        client.query('BEGIN'),
        client.query(setLocal),
        client.query(statement),
        client.query('COMMIT'),
      ]);
      return result;
    });
  pool.query = limited as unknown as pg.Pool['query'];
}

/** The results of statements sent together, or the first error among them. */
async function settleInOrder(sent: Promise<pg.QueryResult>[]): Promise<pg.QueryResult[]> {
  const settled = await Promise.allSettled(sent);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<pg.QueryResult>).value);
}

/**
 * A statement with its own client-side deadline for an answer (pg's
 * per-query query_timeout, which its types leave out): past it the
 * statement fails with "Query read timeout", a connection error.
 */
export function withAnswerDeadline<T extends pg.QueryConfig>(statement: T, ms: number): T {
  return Object.assign({}, statement, { query_timeout: ms });
}

export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const setLocal = statementLimits.get(pool);
  return withClient(pool, (client) =>
    inTransaction(client, async () => {
      if (setLocal) await client.query(setLocal);
      return fn(client);
    }),
  );
}

/**
 * BEGIN, fn, COMMIT on one client; ROLLBACK if fn throws. A COMMIT that
 * answers ROLLBACK (a statement failed and fn caught its error; PostgreSQL
 * says so without an error) throws instead of passing for a commit.
 */
export async function inTransaction<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  let value: T;
  try {
    value = await fn();
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  if ((await client.query('COMMIT')).command === 'ROLLBACK') {
    throw new GrapevineError(
      'GRAPEVINE_TRANSACTION_ROLLED_BACK',
      'the transaction was rolled back, not committed: a statement in it failed and the error was caught inside it. ' +
        'Let the error escape the transaction function, or catch it around a SAVEPOINT.',
    );
  }
  return value;
}

/**
 * Runs statements in one transaction on a pipelined pool (PoolOptions.pipeline),
 * sending BEGIN, the statements and COMMIT together: one round trip instead
 * of one per statement. Each statement still starts after the one before it
 * has finished, with a snapshot of its own. If one fails, those after it fail
 * too and COMMIT rolls back; the first error is thrown.
 */
export async function withPipelinedTransaction<const Q extends readonly TypedQuery<unknown>[]>(
  pool: pg.Pool,
  statements: Q,
): Promise<RowsOf<Q>> {
  const setLocal = statementLimits.get(pool);
  return withClient(pool, async (client) => {
    const opening = [client.query('BEGIN'), ...(setLocal ? [client.query(setLocal)] : [])];
    const results = await settleInOrder([...opening, ...statements.map((s) => client.query(s)), client.query('COMMIT')]);
    // Each statement's rows are what its TypedQuery says they are (src/sql/ builds both).
    return results.slice(opening.length, -1).map((r) => r.rows) as RowsOf<Q>;
  });
}

/** A client checked out of a pool, guarded against connection errors until it is released. */
export interface CheckedOut {
  client: pg.PoolClient;
  /** Returns the client to the pool; a client whose connection failed (or `err`) is discarded instead. */
  release(err?: Error): void;
}

/**
 * Checks a client out with an 'error' listener on it from the moment the
 * pool hands it over, until it is released. A checked-out client whose
 * connection dies emits 'error', and with nobody listening that ends the
 * process (or the thread). pool.connect()'s promise would leave a gap: it
 * settles a microtask after the pool hands the client over, and a server
 * that starts a fast shutdown just as a new connection becomes ready sends
 * the FATAL in the same packet as the ReadyForQuery, so the driver emits
 * 'error' inside that gap (a supervisor died of it during a PostgreSQL
 * restart in the chaos suite). The callback form has no gap. The failure is
 * reported by the client's next statement instead.
 */
export function checkOut(pool: pg.Pool): Promise<CheckedOut> {
  return new Promise((resolve, reject) => {
    pool.connect((err, client) => {
      if (err || !client) {
        reject(err ?? new Error('the pool returned no client'));
        return;
      }
      let broken: Error | undefined;
      const onError = (e: Error) => {
        broken ??= e;
      };
      client.on('error', onError);
      resolve({
        client,
        release(releaseErr) {
          client.off('error', onError);
          client.release(releaseErr ?? broken);
        },
      });
    });
  });
}

/**
 * Checks a client out for several statements (see checkOut). A statement
 * that failed because the connection did is enough to discard the client.
 */
export async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const { client, release } = await checkOut(pool);
  let broken: Error | undefined;
  try {
    return await fn(client);
  } catch (err) {
    broken = isConnectionError(err) ? (err as Error) : undefined;
    throw err;
  } finally {
    release(broken);
  }
}

/**
 * Whether a failed write was refused for a value it holds rather than for
 * how it was sent, so that sending it again would fail again: PostgreSQL's
 * data exceptions (class 22: a NUL or a lone surrogate in JSON, a number out
 * of range), integrity violations (23) and program limits (54: a value over
 * jsonb's size limit), or a RangeError from building a statement too large
 * for one string. Connection errors and timeouts are none of these.
 */
export function isDataError(err: unknown): boolean {
  if (err instanceof RangeError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(22|23|54)/.test(code);
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH']);

/** True for errors that mean "the server is not there", as opposed to a bad statement. */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08') || code === '57P01' || code === '57P03')) {
    return true;
  }
  const message = err instanceof Error ? err.message : '';
  // "Query read timeout": no answer in time (statementTimeoutMs); the connection may still deliver it late.
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/i.test(
    message,
  );
}

/**
 * One clear line for "could not reach the database": the host and database,
 * the underlying reason, and never the password.
 */
export function unreachableError(err: unknown, connectionString: string): GrapevineError {
  const reason = err instanceof Error ? err.message || (err as { code?: string }).code || err.name : String(err);
  return new GrapevineError(
    'GRAPEVINE_DATABASE_UNREACHABLE',
    `cannot connect to PostgreSQL at ${describeConnection(connectionString)}: ${redactSecret(reason, connectionString)}. ` +
      'Check that the server is running and DATABASE_URL (or --database-url) is right',
    { cause: err },
  );
}

/** Runs fn, turning connection failures into unreachableError and scrubbing secrets from others. */
export async function explainConnectionErrors<T>(connectionString: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof GrapevineError) throw err;
    const code = (err as { code?: string }).code;
    if (isConnectionError(err) || code === '28P01' || code === '28000' || code === '3D000') {
      throw unreachableError(err, connectionString);
    }
    if (err instanceof Error) err.message = redactSecret(err.message, connectionString);
    throw err;
  }
}
