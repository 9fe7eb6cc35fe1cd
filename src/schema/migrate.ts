import type pg from 'pg';
import { GrapevineError } from '../errors.ts';
import { withTransaction } from '../db.ts';
import { quoteIdent } from './channels.ts';
import { inSchema, latestVersion, migrations, schemaFunctions, type Migration } from './files.ts';

// Arbitrary constant namespacing grapevine's advisory locks; the second key is
// the schema, so installs in different schemas do not wait for each other.
const MIGRATION_LOCK = 0x67726170;

/**
 * Versions 1 to 9 were pre-release migrations, squashed into
 * migrations/0010_baseline.sql. A schema whose migrations table holds exactly
 * these has the baseline's tables already (test/schema-baseline.test.ts
 * compares the two), so it is brought to version 10 by its bookkeeping alone
 * and then gets its functions from functions/ like any other.
 */
const PRE_RELEASE_MIGRATIONS = [
  'jobs',
  'control',
  'claim_plans',
  'prune_index',
  'bounded_reads',
  'maintenance_pace',
  'log_followers',
  'best_effort_notify',
  'unhandled_tasks',
];

export interface MigrateResult {
  /** The versions this call brought the schema through, oldest first. */
  applied: number[];
  version: number;
}

/**
 * Brings the schema up to date: the numbered migrations it has not had, then
 * each function whose file changed since it was last applied. Every
 * supervisor and client calls this on start. A schema that is already up to
 * date is only read, so a role without any DDL right (grapevine grant) starts
 * against it; otherwise the transaction-scoped advisory lock makes concurrent
 * starters take turns, so each migration runs exactly once and later starters
 * see it applied. A role that may not migrate a schema that needs it fails
 * with one line naming `grapevine migrate`.
 *
 * A release that changes a function's file should also add a migration (even
 * one that changes nothing else), so that an older release still running
 * refuses the schema as too new instead of putting its own text back.
 */
export async function migrate(pool: pg.Pool, schema: string): Promise<MigrateResult> {
  const found = await readSchemaState(pool, schema);
  if (found.current) return { applied: [], version: latestVersion() };
  try {
    return await migrateLocked(pool, schema);
  } catch (err) {
    if ((err as { code?: string }).code !== '42501') throw err;
    throw await cannotMigrate(err as Error, pool, schema, found);
  }
}

interface SchemaState {
  /** At the latest version, with every function as its file has it. */
  current: boolean;
  /** The newest migration recorded; null when there is no migrations table (or it could not be read). */
  version: number | null;
  /** The role may not read the migrator's tables. */
  unreadable: boolean;
}

/** Where the schema stands, read without a lock and without DDL. */
async function readSchemaState(pool: pg.Pool, schema: string): Promise<SchemaState> {
  const s = quoteIdent(schema);
  let row: { version: number | null; functions: Record<string, string> | null };
  try {
    // One statement, so both tables are read from one snapshot: a migrator commits them together.
    const { rows } = await pool.query(
      `SELECT (SELECT max(version) FROM ${s}.migrations) AS version,
              (SELECT json_object_agg(name, checksum) FROM ${s}.schema_functions) AS functions`,
    );
    row = rows[0];
  } catch (err) {
    const code = (err as { code?: string }).code;
    // Not installed, or from before the functions were tracked: the migrator will tell.
    if (code === '42P01') return { current: false, version: null, unreadable: false };
    if (code === '42501') return { current: false, version: null, unreadable: true };
    throw err;
  }
  const latest = latestVersion();
  if (row.version !== null && row.version > latest) throw tooNew(schema, row.version, latest);
  const current = row.version === latest && schemaFunctions().every((fn) => row.functions?.[fn.name] === fn.checksum);
  return { current, version: row.version, unreadable: false };
}

async function migrateLocked(pool: pg.Pool, schema: string): Promise<MigrateResult> {
  const s = quoteIdent(schema);
  const latest = latestVersion();
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
    const { rows } = await client.query<{ version: number; name: string }>(`SELECT version, name FROM ${s}.migrations ORDER BY version`);
    const newest = Math.max(0, ...rows.map((r) => r.version));
    if (newest > latest) throw tooNew(schema, newest, latest);
    const all = migrations();
    const applied: number[] = [];
    if (rows.length > 0 && newest < all[0].version) {
      if (!isPreRelease(rows)) {
        throw new GrapevineError(
          'GRAPEVINE_SCHEMA_UNKNOWN',
          `schema "${schema}" records migrations ${rows.map((r) => `${r.version} (${r.name})`).join(', ')}, which this grapevine ` +
            'does not recognise: it upgrades only a schema with all nine pre-release migrations (1-9); ' +
            'move the jobs you need elsewhere and drop the schema, or pick another schema',
        );
      }
      await client.query(`DELETE FROM ${s}.migrations`);
      await client.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [all[0].version, all[0].name]);
      applied.push(all[0].version);
    }
    const done = new Set([...rows.map((r) => r.version), ...applied]);
    for (const migration of all) {
      if (done.has(migration.version)) continue;
      await client.query(inSchema(migration.sql, schema)).catch((err: unknown) => {
        throw notOurs(err, schema, migration);
      });
      await client.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
      applied.push(migration.version);
    }
    await applyFunctions(client, schema);
    return { applied, version: latest };
  });
}

function tooNew(schema: string, found: number, latest: number): GrapevineError {
  return new GrapevineError(
    'GRAPEVINE_SCHEMA_TOO_NEW',
    `schema "${schema}" is at version ${found} but this grapevine knows only up to ${latest}: ` +
      'upgrade grapevine on this host (an older release must not run against a newer schema)',
  );
}

/**
 * The schema needs migrating (or could not be read) and this role was refused
 * on the way: name what is missing and who can fix it, instead of
 * PostgreSQL's bare "permission denied".
 */
async function cannotMigrate(err: Error, pool: pg.Pool, schema: string, found: SchemaState): Promise<GrapevineError> {
  const who = await pool.query<{ name: string }>('SELECT current_user AS name').then(
    ({ rows }) => rows[0]?.name,
    () => undefined,
  );
  const role = who === undefined ? 'this role' : `role "${who}"`;
  const migrateIt = `run \`grapevine migrate --schema ${schema}\` as a role that may change the schema (its owner), then try again`;
  if (found.unreadable) {
    return new GrapevineError(
      'GRAPEVINE_PERMISSION_DENIED',
      `${role} may not read grapevine's tables in schema "${schema}" (${err.message}), so it cannot tell whether the schema is up to date: ` +
        `have the schema's owner run \`grapevine grant ${who ?? 'ROLE'} --as worker|enqueuer|operator --schema ${schema}\`, or ${migrateIt}`,
      { cause: err },
    );
  }
  // A schema from before the functions were tracked has a version all the same.
  const version =
    found.version ??
    (await pool.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${quoteIdent(schema)}.migrations`).then(
      ({ rows }) => rows[0]?.version ?? null,
      () => null,
    ));
  const where =
    version === null
      ? `grapevine is not installed in schema "${schema}"`
      : version < latestVersion()
        ? `schema "${schema}" is at version ${version} and this grapevine needs version ${latestVersion()}`
        : `schema "${schema}" has older functions than this grapevine`;
  return new GrapevineError('GRAPEVINE_SCHEMA_TOO_OLD', `${where}, and ${role} may not migrate it (${err.message}): ${migrateIt}`, {
    cause: err,
  });
}

/**
 * A migration that finds one of its tables (or indexes, sequences) already
 * there: the schema holds objects its migrations table does not account for,
 * such as an application's own tables in a schema grapevine was pointed at.
 */
function notOurs(err: unknown, schema: string, migration: Migration): unknown {
  const code = (err as { code?: string }).code;
  if (code !== '42P07' && code !== '42710') return err;
  return new GrapevineError(
    'GRAPEVINE_SCHEMA_UNKNOWN',
    `migration ${migration.version} (${migration.name}) cannot be applied to schema "${schema}": ${(err as Error).message}, ` +
      "and the schema's migrations table does not account for it; give grapevine a schema of its own (the schema option, or --schema)",
    { cause: err },
  );
}

function isPreRelease(rows: { version: number; name: string }[]): boolean {
  return rows.length === PRE_RELEASE_MIGRATIONS.length && rows.every((r, i) => r.version === i + 1 && r.name === PRE_RELEASE_MIGRATIONS[i]);
}

/** Applies, in order, each function whose file's checksum differs from the one last applied in this schema. */
async function applyFunctions(client: pg.PoolClient, schema: string): Promise<void> {
  const s = quoteIdent(schema);
  // Created here rather than by a migration: it is the migrator's own
  // bookkeeping, like the migrations table, and a schema too new to migrate
  // must be left as it was. Its shape never changes.
  await client.query(
    `CREATE TABLE IF NOT EXISTS ${s}.schema_functions (
       name text PRIMARY KEY,
       checksum text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const { rows } = await client.query<{ name: string; checksum: string }>(`SELECT name, checksum FROM ${s}.schema_functions`);
  const applied = new Map(rows.map((r) => [r.name, r.checksum]));
  for (const fn of schemaFunctions()) {
    if (applied.get(fn.name) === fn.checksum) continue;
    await client.query(inSchema(fn.sql, schema));
    await client.query(
      `INSERT INTO ${s}.schema_functions (name, checksum) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()`,
      [fn.name, fn.checksum],
    );
  }
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
    return new GrapevineError(
      'GRAPEVINE_SCHEMA_TOO_OLD',
      `${(err as Error).message}: grapevine is not installed in schema "${schema}"; ${fix}`,
      { cause: err },
    );
  }
  const needed = latestVersion();
  if (found >= needed) return err;
  return new GrapevineError(
    'GRAPEVINE_SCHEMA_TOO_OLD',
    `${(err as Error).message}: schema "${schema}" is at version ${found} and this grapevine needs version ${needed}; ${fix}`,
    { cause: err },
  );
}

/** Runs fn, explaining its failure with explainOutdatedSchema(). */
export function explainingOutdatedSchema<T>(fn: () => Promise<T>, pool: pg.Pool, schema: string): Promise<T> {
  return fn().catch(async (err: unknown) => {
    throw await explainOutdatedSchema(err, pool, schema);
  });
}
