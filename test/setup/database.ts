import type { TestProject } from 'vitest/node';
import { startEmbeddedDatabase } from '../../src/embedded.ts';
import { describeConnection } from '../../src/redact.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

/**
 * One PostgreSQL for the whole run: GRAPEVINE_TEST_DATABASE_URL or
 * DATABASE_URL when set (CI's external pass), otherwise an embedded server.
 * Each test file then works in a schema of its own.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.GRAPEVINE_TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (external) {
    console.log(`[grapevine tests] using PostgreSQL at ${describeConnection(external)}`);
    project.provide('databaseUrl', external);
    return async () => {};
  }
  const db = await startEmbeddedDatabase({ dir: '.grapevine/test-db', database: 'grapevine_test' });
  console.log(`[grapevine tests] no DATABASE_URL: using embedded PostgreSQL on 127.0.0.1:${db.port} (data in .grapevine/test-db)`);
  project.provide('databaseUrl', db.connectionString);
  return () => db.stop();
}
