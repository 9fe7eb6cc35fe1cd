import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { createClient, startSupervisor, type Client, type Supervisor, type SupervisorOptions } from '../../supervisor/public.ts';
import { resolvePreparedStatements } from '../../src/config.ts';
import { createPool } from '../../src/db.ts';
import { createLogger } from '../../src/log.ts';

/** Where test files connect; in the pooled pass, a PgBouncer in transaction mode. */
export function databaseUrl(): string {
  return inject('databaseUrl');
}

/** The server itself, even in the pooled pass: for session-level locks and connections counted by role. */
export function directDatabaseUrl(): string {
  return inject('directDatabaseUrl');
}

export interface TestDatabase {
  url: string;
  schema: string;
  /** A plain pg pool for assertions on database state. */
  pool: pg.Pool;
}

/**
 * A schema of the test file's own, dropped after the file's tests: files run
 * in parallel against one server without seeing each other's jobs.
 */
export function useTestSchema(prefix: string): TestDatabase {
  const schema = `t_${prefix.replace(/[^a-z0-9_]/g, '_').slice(0, 20)}_${randomBytes(3).toString('hex')}`;
  const url = databaseUrl();
  // Tests run the typed SQL on it too: in the pooled pass it must send them unnamed, as grapevine's own pools do.
  const pool = createPool(url, { max: 4, applicationName: 'grapevine-test', preparedStatements: resolvePreparedStatements(undefined) });
  afterAll(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await pool.end();
  });
  return { url, schema, pool };
}

export interface MigratedTestDatabase extends TestDatabase {
  /** A grapevine client on the schema, migrated before the file's tests and closed after them. */
  client: Client;
  /** The schema name quoted for SQL. */
  s: string;
}

/** useTestSchema with grapevine's tables in it and a client to add jobs. */
export function useMigratedSchema(prefix: string): MigratedTestDatabase {
  const db = useTestSchema(prefix);
  const client = createClient({ connectionString: db.url, schema: db.schema });
  beforeAll(() => client.migrate());
  afterAll(() => client.close());
  return { ...db, client, s: `"${db.schema}"` };
}

/** Silent unless GRAPEVINE_TEST_LOG names a level. */
export function testLogger() {
  return createLogger({ level: process.env.GRAPEVINE_TEST_LOG ?? 'silent' });
}

/** A supervisor on the test file's schema running the fixture tasks; `options` holds what the test is about. */
export function startTestSupervisor(db: TestDatabase, options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  return startSupervisor({
    connectionString: db.url,
    schema: db.schema,
    tasks: FIXTURE_TASKS,
    logger: testLogger(),
    ...options,
  });
}

/** A fresh schema name (for tests that create several). */
export function schemaName(prefix: string): string {
  return `t_${prefix}_${randomBytes(3).toString('hex')}`;
}

export const FIXTURE_TASKS = path.resolve(import.meta.dirname, '../fixtures/tasks');

/**
 * Waits until `check` returns a truthy value. Tests wait for states, never
 * assert on durations; the deadline only turns a hang into a failure.
 */
export async function eventually<T>(check: () => Promise<T> | T, what: string, deadlineMs = 30_000): Promise<NonNullable<T>> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() - start > deadlineMs) {
      throw new Error(`gave up waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function jobStates(db: TestDatabase): Promise<Record<string, number>> {
  const { rows } = await db.pool.query(`SELECT state, count(*)::int AS n FROM "${db.schema}".jobs GROUP BY state`);
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

export interface HeldLock {
  /** Until exactly `waiters` sessions wait for the lock. */
  untilWaiting(waiters: number, what: string): Promise<unknown>;
  release(): Promise<void>;
}

/**
 * Holds an advisory lock on a connection of its own until release(). Tests
 * put a trigger in their schema that waits on the lock, to stop a statement
 * at a chosen point (after a claim read the table, before it commits).
 */
export async function holdAdvisoryLock(db: TestDatabase, key: number): Promise<HeldLock> {
  // A session-level lock: through a pooler in transaction mode it would stay on a server connection nobody holds.
  const holder = new pg.Client({ connectionString: directDatabaseUrl() });
  await holder.connect();
  await holder.query('SELECT pg_advisory_lock($1)', [key]);
  let released = false;
  return {
    untilWaiting: (waiters, what) =>
      eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1`,
          [key],
        );
        return rows[0].n === waiters;
      }, what),
    release: async () => {
      if (released) return;
      released = true;
      await holder.end();
    },
  };
}

/**
 * A trigger on the schema's jobs table that makes a statement wait for the
 * advisory lock `key` (see holdAdvisoryLock) when `condition` holds:
 * 'statement' waits at the end of each UPDATE statement (the condition may
 * not use NEW), 'commit' waits when the updating transaction commits.
 */
export async function addWaitTrigger(
  db: TestDatabase,
  name: string,
  key: number,
  when: 'statement' | 'commit',
  condition: string,
): Promise<void> {
  const s = `"${db.schema}"`;
  const trigger =
    when === 'statement'
      ? `CREATE TRIGGER ${name} AFTER UPDATE ON ${s}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${s}.${name}()`
      : `CREATE CONSTRAINT TRIGGER ${name} AFTER UPDATE ON ${s}.jobs DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${s}.${name}()`;
  await db.pool.query(`
    CREATE FUNCTION ${s}.${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF ${condition} THEN PERFORM pg_advisory_xact_lock_shared(${key}); END IF;
      RETURN NULL;
    END $$;
    ${trigger};`);
}

/** A table the `ledger` fixture task records each run in: (job, attempt) is unique, so a second run of one attempt fails. */
export async function createLedger(db: TestDatabase, name: string): Promise<string> {
  const table = `"${db.schema}".${name}`;
  await db.pool.query(`CREATE TABLE ${table} (job_id bigint NOT NULL, attempt integer NOT NULL, UNIQUE (job_id, attempt))`);
  return table;
}

/** Until every one of `ids` has succeeded. */
export async function untilSucceeded(db: TestDatabase, ids: string[], deadlineMs = 180_000): Promise<void> {
  await eventually(
    async () =>
      (
        await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".jobs WHERE state = 'succeeded' AND id = ANY($1::bigint[])`, [
          ids,
        ])
      ).rows[0].n === ids.length,
    `all ${ids.length} jobs to succeed`,
    deadlineMs,
  );
}

/** The jobs' states and attempts, and how many runs the ledger recorded for how many jobs: what "each succeeded exactly once" is checked against. */
export async function drained(
  db: TestDatabase,
  ids: string[],
  ledger: string,
): Promise<{ states: Array<{ state: string; attempts: number; n: number }>; runs: number; jobs: number }> {
  const { rows: states } = await db.pool.query(
    `SELECT state, attempts, count(*)::int AS n FROM "${db.schema}".jobs WHERE id = ANY($1::bigint[]) GROUP BY 1, 2`,
    [ids],
  );
  const { rows } = await db.pool.query(`SELECT count(*)::int AS runs, count(DISTINCT job_id)::int AS jobs FROM ${ledger}`);
  return { states, ...rows[0] };
}
