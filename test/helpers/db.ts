import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, inject } from 'vitest';

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
