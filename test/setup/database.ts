import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedDatabase } from '../../src/embedded.ts';
import { describeConnection } from '../../src/redact.ts';
import { startPgBouncer } from '../helpers/pgbouncer.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Where test files connect: through PgBouncer in the pooled pass. */
    databaseUrl: string;
    /** The server itself, for LISTEN and session-level locks. */
    directDatabaseUrl: string;
    /** 'pgbouncer' in the pooled pass (GRAPEVINE_TEST_POOLER=pgbouncer), else null. */
    pooler: 'pgbouncer' | null;
  }
}

/**
 * One PostgreSQL for the whole run: GRAPEVINE_TEST_DATABASE_URL or
 * DATABASE_URL when set (CI's external pass), otherwise an embedded server.
 * Each test file then works in a schema of its own. With
 * GRAPEVINE_TEST_POOLER=pgbouncer, test files reach that server through a
 * PgBouncer in transaction mode, and LISTEN goes direct (test/setup/pooler.ts).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const { url, stop } = await startServer();
  const pooler = process.env.GRAPEVINE_TEST_POOLER;
  project.provide('directDatabaseUrl', url);
  if (!pooler) {
    project.provide('databaseUrl', url);
    project.provide('pooler', null);
    return stop;
  }
  if (pooler !== 'pgbouncer') throw new Error(`GRAPEVINE_TEST_POOLER must be pgbouncer or unset, got ${JSON.stringify(pooler)}`);
  const bouncer = await startPgBouncer(url).catch(async (err) => {
    await stop();
    throw err;
  });
  console.log(`[grapevine tests] through PgBouncer (transaction mode) on 127.0.0.1:${bouncer.port}; LISTEN goes direct`);
  project.provide('databaseUrl', bouncer.url);
  project.provide('pooler', 'pgbouncer');
  return async () => {
    await bouncer.stop();
    await stop();
  };
}

async function startServer(): Promise<{ url: string; stop: () => Promise<void> }> {
  const external = process.env.GRAPEVINE_TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (external) {
    console.log(`[grapevine tests] using PostgreSQL at ${describeConnection(external)}`);
    return { url: external, stop: async () => {} };
  }
  // A server per test run: two runs at once (a developer and an editor's
  // watcher, or parallel checkouts) must not stop each other's database.
  await removeStaleRuns();
  const dir = path.join(RUNS, String(process.pid));
  const db = await startEmbeddedDatabase({ dir, database: 'grapevine_test' });
  console.log(`[grapevine tests] no DATABASE_URL: using embedded PostgreSQL on 127.0.0.1:${db.port} (data in ${dir})`);
  return {
    url: db.connectionString,
    stop: async () => {
      await db.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const RUNS = '.grapevine/test-db';

async function removeStaleRuns(): Promise<void> {
  const entries = await readdir(RUNS).catch(() => [] as string[]);
  for (const entry of entries) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 0 || isAlive(pid)) continue;
    await rm(path.join(RUNS, entry), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
