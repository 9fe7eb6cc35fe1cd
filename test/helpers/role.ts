import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { grantRole, type RoleKind } from '../../src/schema/roles.ts';
import { directDatabaseUrl, type TestDatabase } from './db.ts';

export interface OwnRole {
  /** The role's name: pg_stat_activity.usename of every connection made with `url`. */
  name: string;
  url: string;
}

/**
 * A login role of the test file's own. Test files run in parallel against one
 * server and every supervisor names its connections alike, so counting
 * connections by application_name alone would count other files' too;
 * connecting as this role makes pg_stat_activity.usename tell them apart.
 * A superuser unless `superuser: false` (a role with no rights but its own,
 * for tests of what grapevine grant gives); `as` grants it that kind in the
 * test's schema.
 */
export function useOwnRole(
  db: TestDatabase,
  prefix: string,
  { superuser = true, as }: { superuser?: boolean; as?: RoleKind } = {},
): OwnRole {
  const name = `t_${prefix.replace(/[^a-z0-9_]/g, '_').slice(0, 20)}_${randomBytes(3).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  // Direct even in the pooled pass: PgBouncer knows only the users of its own list, and would log in as its own.
  const url = new URL(directDatabaseUrl());
  url.username = name;
  url.password = password;
  beforeAll(async () => {
    // Superuser, so that migrations and LISTEN work in a schema another role created.
    await db.pool.query(`CREATE ROLE "${name}" LOGIN ${superuser ? 'SUPERUSER' : ''} PASSWORD '${password}'`);
    if (as) await grantRole({ connectionString: db.url, schema: db.schema, role: name, as });
  });
  afterAll(async () => {
    await db.pool.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [name]);
    await db.pool.query(`DROP OWNED BY "${name}" CASCADE`).catch(() => {});
    await db.pool.query(`DROP ROLE IF EXISTS "${name}"`).catch(() => {});
  });
  return { name, url: url.toString() };
}

/** Runs one statement as the role and returns the SQLSTATE it failed with (undefined: it did not fail). */
export async function sqlstateAs(role: OwnRole, text: string, values: unknown[] = []): Promise<string | undefined> {
  const conn = new pg.Client({ connectionString: role.url });
  await conn.connect();
  try {
    await conn.query(text, values);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  } finally {
    await conn.end();
  }
}
