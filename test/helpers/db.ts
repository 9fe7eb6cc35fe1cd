import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { createClient, startSupervisor, type Client, type Supervisor, type SupervisorOptions } from '../../src/index.ts';
import { createLogger } from '../../src/log.ts';

export function databaseUrl(): string {
  return inject('databaseUrl');
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
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  pool.on('error', () => {});
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
