import type pg from 'pg';
import { GrapevineError } from '../errors.ts';
import { withTransaction } from '../db.ts';
import { quoteIdent } from './channels.ts';
import { LATEST_VERSION, MIGRATIONS } from './migrations/index.ts';

// Arbitrary constant namespacing grapevine's advisory locks; the second key is
// the schema, so installs in different schemas do not wait for each other.
const MIGRATION_LOCK = 0x67726170;

export interface MigrateResult {
  applied: number[];
  version: number;
}

/**
 * Brings the schema up to date. Every supervisor calls this on start; the
 * transaction-scoped advisory lock makes concurrent starters take turns, so
 * each migration runs exactly once and later starters see it applied.
 */
export async function migrate(pool: pg.Pool, schema: string): Promise<MigrateResult> {
  const s = quoteIdent(schema);
  return withTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [MIGRATION_LOCK, schema]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${s}.migrations (
         version integer PRIMARY KEY,
         name text NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${s}.migrations`);
    const done = new Set(rows.map((r) => r.version));
    const newest = Math.max(0, ...done);
    if (newest > LATEST_VERSION) {
      throw new GrapevineError(
        'GRAPEVINE_SCHEMA_TOO_NEW',
        `schema "${schema}" is at version ${newest} but this grapevine knows only up to ${LATEST_VERSION}: ` +
          'upgrade grapevine on this host (an older release must not run against a newer schema)',
      );
    }
    const applied: number[] = [];
    for (const migration of MIGRATIONS) {
      if (done.has(migration.version)) continue;
      await client.query(migration.sql(schema));
      await client.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [
        migration.version,
        migration.name,
      ]);
      applied.push(migration.version);
    }
    return { applied, version: LATEST_VERSION };
  });
}

/**
 * A client created with `migrate: false` runs against whatever schema it
 * finds. When a statement names a function, table or column that is not
 * there, and the schema's migrations table says it is older than this
 * grapevine, say so and how to bring it up to date, rather than pass on
 * PostgreSQL's "function ... does not exist". Any other error, or a schema
 * that is up to date, passes through as it was.
 */
export async function explainOutdatedSchema(err: unknown, pool: pg.Pool, schema: string): Promise<unknown> {
  const code = (err as { code?: string }).code;
  if (code !== '42883' && code !== '42P01' && code !== '42703') return err;
  let found: number | null;
  try {
    // Two statements: a statement that names a missing table fails as it is parsed.
    const table = `${quoteIdent(schema)}.migrations`;
    const exists = await pool.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [table]);
    found = exists.rows[0]?.found
      ? ((await pool.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${table}`)).rows[0]?.version ?? null)
      : null;
  } catch {
    return err;
  }
  const fix =
    `run \`grapevine migrate --schema ${schema}\` against this database (DATABASE_URL) with a role that may change it ` +
    '(this client was created with migrate: false, so it does not migrate)';
  if (found === null) {
    return new GrapevineError('GRAPEVINE_SCHEMA_TOO_OLD', `${(err as Error).message}: grapevine is not installed in schema "${schema}"; ${fix}`, { cause: err });
  }
  if (found >= LATEST_VERSION) return err;
  return new GrapevineError(
    'GRAPEVINE_SCHEMA_TOO_OLD',
    `${(err as Error).message}: schema "${schema}" is at version ${found} and this grapevine needs version ${LATEST_VERSION}; ${fix}`,
    { cause: err },
  );
}

/** Runs fn, explaining its failure with explainOutdatedSchema(). */
export function explainingOutdatedSchema<T>(fn: () => Promise<T>, pool: pg.Pool, schema: string): Promise<T> {
  return fn().catch(async (err: unknown) => {
    throw await explainOutdatedSchema(err, pool, schema);
  });
}
