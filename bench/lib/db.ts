// Database plumbing for the bench: where PostgreSQL is, the bench database,
// fresh schemas per trial, and printing a connection without its password.
import { readFileSync } from 'node:fs';
import pg from 'pg';

/** Dropped and created by each run: runs that share a server at once need a name each (GRAPEVINE_BENCH_DB). */
export const BENCH_DB = benchDatabaseName(process.env.GRAPEVINE_BENCH_DB);

function benchDatabaseName(name: string | undefined): string {
  if (name === undefined || name === '') return 'bench_grapevine';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name))
    throw new Error(`GRAPEVINE_BENCH_DB must be a plain lowercase identifier, got ${JSON.stringify(name)}`);
  return name;
}

/** The installed version of a package, read from node_modules (for BENCHMARKS.md). */
export function installedVersion(pkg: string): string {
  return readVersion(new URL(`../../node_modules/${pkg}/package.json`, import.meta.url));
}

/** grapevine's own version, from the repository's package.json. */
export function repoVersion(): string {
  return readVersion(new URL('../../package.json', import.meta.url));
}

function readVersion(file: URL): string {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** host:port/db only — connection strings may carry a password. */
export function describeConnection(connectionString: string): string {
  const u = new URL(connectionString);
  return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
}

export function withDatabase(connectionString: string, database: string): string {
  const u = new URL(connectionString);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function withClient<T>(connectionString: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Drops and recreates the bench database so every run starts from an empty catalog. */
export async function recreateBenchDatabase(adminUrl: string): Promise<string> {
  await withClient(adminUrl, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${BENCH_DB} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${BENCH_DB}`);
  });
  return withDatabase(adminUrl, BENCH_DB);
}

export async function dropBenchDatabase(adminUrl: string): Promise<void> {
  await withClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${BENCH_DB} WITH (FORCE)`));
}

export async function dropSchema(connectionString: string, schema: string): Promise<void> {
  await withClient(connectionString, (c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
}

export async function serverFacts(connectionString: string): Promise<{ version: string; settings: Record<string, string> }> {
  return withClient(connectionString, async (c) => {
    const version = (await c.query('SHOW server_version')).rows[0].server_version as string;
    const names = ['max_connections', 'shared_buffers', 'synchronous_commit', 'fsync', 'work_mem'];
    const settings: Record<string, string> = {};
    for (const n of names) settings[n] = (await c.query(`SHOW ${n}`)).rows[0][n];
    return { version, settings };
  });
}

/**
 * Brings the database to the same quiet state before every trial: earlier
 * trials' dead rows vacuumed (above all the deep queue's million-row fillers,
 * which autovacuum would otherwise process during a later trial — of any
 * system), dirty pages flushed by a checkpoint, and no autovacuum worker busy
 * in this database. Not part of any trial's time. Returns what it skipped.
 */
export async function settleDatabase(connectionString: string): Promise<string[]> {
  const skipped: string[] = [];
  await withClient(connectionString, async (c) => {
    // Only tables with changes since their last vacuum or analyze: a database-wide
    // VACUUM (ANALYZE) re-sampled every million-row filler before every trial.
    const { rows } = await c.query(
      `SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables
        WHERE n_dead_tup > 0 OR n_mod_since_analyze > 0 OR coalesce(last_analyze, last_autoanalyze) IS NULL`,
    );
    if (rows.length > 0) {
      const names = rows.map((r) => r.name as string).join(', ');
      await c.query(`VACUUM (ANALYZE) ${names}`).catch((err: Error) => skipped.push(`VACUUM: ${err.message}`));
    }
    // PostgreSQL 15+: superusers and pg_checkpoint members only.
    await c.query('CHECKPOINT').catch((err: Error) => skipped.push(`CHECKPOINT: ${err.message}`));
    for (let waited = 0; waited < 30_000; waited += 100) {
      const { rows } = await c.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND datname = current_database()`,
      );
      if (rows[0].n === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    skipped.push('autovacuum still running after 30 s');
  });
  return skipped;
}
