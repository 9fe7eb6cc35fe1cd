import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { createTestQueue, type TestQueue } from '../../supervisor/testing.ts';
import { databaseUrl } from './db.ts';

/** Handlers that write every execution into the test queue's ledger. */
export const RECORDED_TASKS = path.resolve(import.meta.dirname, '../fixtures/recorded-tasks');

export interface QueueFixture {
  queue: TestQueue;
  /** A plain pool for assertions on database state. */
  pool: pg.Pool;
  /** The queue's schema, quoted for SQL. */
  s: string;
}

/**
 * A grapevine/testing queue of the file's own (created before its tests,
 * closed and dropped after), plus a pool for assertions. Fields are filled
 * in by beforeAll.
 */
export function useTestQueue(): QueueFixture {
  const fixture = {} as QueueFixture;
  beforeAll(async () => {
    fixture.queue = await createTestQueue({ connectionString: databaseUrl() });
    fixture.s = `"${fixture.queue.schema}"`;
    fixture.pool = new pg.Pool({ connectionString: fixture.queue.connectionString, max: 4 });
    fixture.pool.on('error', () => {});
  });
  afterAll(async () => {
    await fixture.queue?.close();
    await fixture.pool?.end();
  });
  return fixture;
}
