import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient, createControl, GrapevineError, startSupervisor } from '../supervisor/public.ts';
import { silentLogger } from '../src/log.ts';
import { latestVersion, migrations, schemaFunctions } from '../src/schema/files.ts';
import { FIXTURE_TASKS, schemaName, useTestSchema } from './helpers/db.ts';

const LATEST_VERSION = latestVersion();

const db = useTestSchema('migrate');
const created: string[] = [];
afterAll(async () => {
  for (const schema of created) await db.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
});

/** A schema name this file will drop when it is done. */
function freshSchema(prefix: string): string {
  const schema = schemaName(prefix);
  created.push(schema);
  return schema;
}

async function schemaExists(name: string): Promise<boolean> {
  const { rows } = await db.pool.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]);
  return rows.length > 0;
}

const INVALID_SCHEMA_NAMES = [
  'x"; DROP TABLE jobs;--',
  "a'b",
  '%I',
  '$1',
  'a.b',
  'a'.repeat(41),
  'jöbs',
  '作业',
  'Jobs',
  'GRAPEVINE',
  '',
  '1abc',
  'a b',
];

function expectConfigError(err: unknown, name: string): void {
  expect(err).toBeInstanceOf(GrapevineError);
  expect((err as GrapevineError).code).toBe('GRAPEVINE_CONFIG_INVALID');
  // Names the bad value and says what a good one looks like.
  expect((err as Error).message).toContain(`invalid schema name ${JSON.stringify(name)}`);
  expect((err as Error).message).toMatch(/lowercase letters, digits and _/);
}

describe('schema names', () => {
  it('refuses unsafe or unusual schema names in createClient with GRAPEVINE_CONFIG_INVALID, creating nothing', async () => {
    for (const name of INVALID_SCHEMA_NAMES) {
      let err: unknown;
      try {
        createClient({ connectionString: db.url, schema: name });
      } catch (e) {
        err = e;
      }
      expectConfigError(err, name);
    }
    const { rows } = await db.pool.query('SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])', [INVALID_SCHEMA_NAMES]);
    expect(rows).toEqual([]);
  });

  it('refuses them in startSupervisor before connecting: the error is about the name even when no server listens', async () => {
    // Port 1 never has a PostgreSQL: reaching the database at all would turn this into GRAPEVINE_DATABASE_UNREACHABLE.
    const nowhere = 'postgres://postgres@127.0.0.1:1/nowhere';
    for (const name of INVALID_SCHEMA_NAMES) {
      const err = await startSupervisor({
        connectionString: nowhere,
        schema: name,
        tasks: FIXTURE_TASKS,
        threads: 1,
        logger: silentLogger(),
      }).then(
        () => null,
        (e: unknown) => e,
      );
      expectConfigError(err, name);
      let clientErr: unknown;
      try {
        createClient({ connectionString: nowhere, schema: name });
      } catch (e) {
        clientErr = e;
      }
      expectConfigError(clientErr, name);
    }
    for (const name of INVALID_SCHEMA_NAMES) expect(await schemaExists(name)).toBe(false);
  });

  it('accepts a 40-character schema name, whose channel names stay within PostgreSQL limits', async () => {
    const name = `t_${'m'.repeat(31)}_${randomBytes(3).toString('hex')}`;
    expect(name).toHaveLength(40);
    created.push(name);
    const client = createClient({ connectionString: db.url, schema: name });
    try {
      await client.migrate();
      const id = await client.addJob('noop');
      expect((await client.getJob(id))!.state).toBe('pending');
      expect(await schemaExists(name)).toBe(true);
    } finally {
      await client.close();
    }
  });
});

describe('migrate', () => {
  it('four concurrent migrations of a fresh schema all succeed and apply each version exactly once', async () => {
    const schema = freshSchema('mig4');
    // Each client has its own pool, as four hosts starting at once would.
    const clients = Array.from({ length: 4 }, () => createClient({ connectionString: db.url, schema }));
    try {
      const results = await Promise.allSettled(clients.map((c) => c.migrate()));
      for (const r of results) expect(r.status).toBe('fulfilled');
      const applied = results.map((r) => (r as PromiseFulfilledResult<{ applied: number[]; version: number }>).value);
      for (const r of applied) expect(r.version).toBe(LATEST_VERSION);
      // One of them did the work; the others found it done.
      const allVersions = migrations().map((m) => m.version);
      expect(applied.filter((r) => r.applied.length > 0).map((r) => r.applied)).toEqual([allVersions]);
      expect(applied.filter((r) => r.applied.length === 0)).toHaveLength(3);

      const { rows } = await db.pool.query(
        `SELECT version, count(*)::int AS n FROM "${schema}".migrations GROUP BY version ORDER BY version`,
      );
      expect(rows).toEqual(allVersions.map((version) => ({ version, n: 1 })));
      // The schema is usable by all four.
      const ids = await Promise.all(clients.map((c, i) => c.addJob('noop', { i })));
      expect(new Set(ids).size).toBe(4);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  it('migrating an up-to-date schema again applies nothing', async () => {
    const client = createClient({ connectionString: db.url, schema: db.schema });
    try {
      await client.migrate();
      expect(await client.migrate()).toEqual({ applied: [], version: LATEST_VERSION });
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".migrations`);
      expect(rows[0].n).toBe(migrations().length);
    } finally {
      await client.close();
    }
  });

  it('a client that does not migrate names a schema older than it needs (GRAPEVINE_SCHEMA_TOO_OLD) and the command that fixes it', async () => {
    const schema = freshSchema('tooold');
    const owner = createClient({ connectionString: db.url, schema });
    await owner.migrate();
    await owner.close();
    // An older schema, as far as this client can tell: its migrations table
    // says version 7 (pre-release), and it lacks a function this grapevine calls.
    await db.pool.query(`DROP FUNCTION "${schema}".notify(text, text)`);
    await db.pool.query(`DELETE FROM "${schema}".migrations`);
    await db.pool.query(`INSERT INTO "${schema}".migrations (version, name) SELECT v, 'pre-release' FROM generate_series(1, 7) v`);
    const { rows } = await db.pool.query(
      `INSERT INTO "${schema}".jobs (task, state, attempts, locked_by, locked_thread, claim_token, lease_until, started_at)
       VALUES ('noop', 'running', 1, 'some-supervisor', 1, 1, now() + interval '1 hour', now()) RETURNING id::text AS id`,
    );
    const expectTooOld = (err: unknown, found: RegExp) => {
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_OLD');
      expect((err as Error).message).toContain(`grapevine migrate --schema ${schema}`);
      expect((err as Error).message).toMatch(found);
    };
    const atSeven = new RegExp(`at version 7 and this grapevine needs version ${LATEST_VERSION}\\b`);
    const client = createClient({ connectionString: db.url, schema, migrate: false });
    const control = createControl({ connectionString: db.url, schema, migrate: false });
    try {
      expectTooOld(
        await client.cancelJob(rows[0].id).then(
          () => null,
          (e: unknown) => e,
        ),
        atSeven,
      );
      expectTooOld(
        await control.send('PING').then(
          () => null,
          (e: unknown) => e,
        ),
        atSeven,
      );
      // An up-to-date schema passes PostgreSQL's error on as it was.
      await db.pool.query(`INSERT INTO "${schema}".migrations (version, name) VALUES ($1, 'restored')`, [LATEST_VERSION]);
      const err = await client.cancelJob(rows[0].id).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).not.toBeInstanceOf(GrapevineError);
      expect((err as { code?: string }).code).toBe('42883');
    } finally {
      await client.close();
      await control.close();
    }
    // A schema grapevine was never installed in (a mistyped name, say).
    const typo = createClient({ connectionString: db.url, schema: freshSchema('typo'), migrate: false });
    try {
      const err = await typo.addJob('noop').then(
        () => null,
        (e: unknown) => e,
      );
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_OLD');
      expect((err as Error).message).toMatch(/grapevine is not installed in schema/);
    } finally {
      await typo.close();
    }
  });

  it('refuses a schema newer than this release with GRAPEVINE_SCHEMA_TOO_NEW naming both versions, changing nothing', async () => {
    const schema = freshSchema('toonew');
    const newer = LATEST_VERSION + 1;
    await db.pool.query(`CREATE SCHEMA "${schema}"`);
    await db.pool.query(
      `CREATE TABLE "${schema}".migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    await db.pool.query(`INSERT INTO "${schema}".migrations (version, name) VALUES ($1, 'from_the_future')`, [newer]);

    const expectTooNew = (err: unknown) => {
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_NEW');
      const message = (err as Error).message;
      expect(message).toContain(schema);
      expect(message).toMatch(new RegExp(`version ${newer}\\b`));
      expect(message).toMatch(new RegExp(`up to ${LATEST_VERSION}\\b`));
      expect(message).toMatch(/upgrade grapevine/);
    };

    const client = createClient({ connectionString: db.url, schema });
    try {
      expectTooNew(
        await client.migrate().then(
          () => null,
          (e: unknown) => e,
        ),
      );
      // Enqueueing migrates first, so it is refused the same way.
      expectTooNew(
        await client.addJob('noop').then(
          () => null,
          (e: unknown) => e,
        ),
      );
    } finally {
      await client.close();
    }
    expectTooNew(
      await startSupervisor({ connectionString: db.url, schema, tasks: FIXTURE_TASKS, threads: 1, logger: silentLogger() }).then(
        async (s) => {
          await s.stop({ graceMs: 0 });
          return null;
        },
        (e: unknown) => e,
      ),
    );

    // Nothing older was applied on top of the newer schema.
    const { rows: tables } = await db.pool.query(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
      [schema],
    );
    expect(tables.map((t) => t.table_name)).toEqual(['migrations']);
    const { rows: versions } = await db.pool.query(`SELECT version FROM "${schema}".migrations`);
    expect(versions).toEqual([{ version: newer }]);
  });

  it('refuses a pre-release schema it does not recognise with GRAPEVINE_SCHEMA_UNKNOWN naming what it found, changing nothing', async () => {
    const schema = freshSchema('partial');
    await db.pool.query(`CREATE SCHEMA "${schema}"`);
    await db.pool.query(
      `CREATE TABLE "${schema}".migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    // Seven of the nine pre-release migrations: a schema no release ever upgrades.
    await db.pool.query(`INSERT INTO "${schema}".migrations (version, name) VALUES (1, 'jobs'), (2, 'control'), (7, 'log_followers')`);
    const client = createClient({ connectionString: db.url, schema });
    try {
      const err = await client.migrate().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_UNKNOWN');
      expect((err as Error).message).toContain(`schema "${schema}" records migrations 1 (jobs), 2 (control), 7 (log_followers)`);
      expect((err as Error).message).toMatch(/drop the schema, or pick another schema/);
    } finally {
      await client.close();
    }
    const { rows: tables } = await db.pool.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1`, [schema]);
    expect(tables.map((t) => t.table_name)).toEqual(['migrations']);
  });

  it('refuses a schema holding tables of the same names that its migrations table does not account for, leaving it as it was', async () => {
    const schema = freshSchema('theirs');
    await db.pool.query(`CREATE SCHEMA "${schema}"`);
    await db.pool.query(`CREATE TABLE "${schema}".supervisors (name text)`);
    const client = createClient({ connectionString: db.url, schema });
    try {
      const err = await client.migrate().then(
        () => null,
        (e: unknown) => e,
      );
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_UNKNOWN');
      expect((err as Error).message).toContain(
        `migration ${migrations()[0].version} (baseline) cannot be applied to schema "${schema}": relation "supervisors" already exists`,
      );
      expect((err as Error).message).toMatch(/give grapevine a schema of its own/);
    } finally {
      await client.close();
    }
    const { rows: tables } = await db.pool.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1`, [schema]);
    expect(tables.map((t) => t.table_name)).toEqual(['supervisors']);
  });
});

describe('schema functions', () => {
  it('are applied again only when their file differs from what the schema last applied', async () => {
    const schema = freshSchema('functions');
    const client = createClient({ connectionString: db.url, schema });
    const definition = async (name: string) =>
      (
        await db.pool.query(
          `SELECT pg_get_functiondef(p.oid) AS def FROM pg_proc p WHERE p.pronamespace = $1::regnamespace AND p.proname = $2`,
          [`"${schema}"`, name],
        )
      ).rows[0].def as string;
    const appliedAt = async () =>
      Object.fromEntries(
        (await db.pool.query(`SELECT name, applied_at FROM "${schema}".schema_functions`)).rows.map((r) => [
          r.name,
          r.applied_at.toISOString(),
        ]),
      );
    try {
      await client.migrate();
      const hasDue = await definition('has_due');
      const first = await appliedAt();
      expect(Object.keys(first).sort()).toEqual(
        schemaFunctions()
          .map((f) => f.name)
          .sort(),
      );

      // A function someone replaced by hand stays as it is while its file has not changed ...
      await db.pool.query(
        `CREATE OR REPLACE FUNCTION "${schema}".has_due(task_names text[], queue_names text[]) RETURNS boolean LANGUAGE sql AS 'SELECT true'`,
      );
      expect(await client.migrate()).toEqual({ applied: [], version: LATEST_VERSION });
      expect(await definition('has_due')).not.toBe(hasDue);
      expect(await appliedAt()).toEqual(first);

      // ... and is replaced from its file once the file differs from what was applied (a new release).
      await db.pool.query(`UPDATE "${schema}".schema_functions SET checksum = 'from an older release' WHERE name = 'has_due'`);
      expect(await client.migrate()).toEqual({ applied: [], version: LATEST_VERSION });
      expect(await definition('has_due')).toBe(hasDue);
      const second = await appliedAt();
      expect(Object.keys(second).filter((name) => second[name] !== first[name])).toEqual(['has_due']);
    } finally {
      await client.close();
    }
  });

  it('each live in a file of their own that redefines them in place, and the migrations define none', () => {
    for (const fn of schemaFunctions()) {
      const creates = [...fn.sql.matchAll(/CREATE (OR REPLACE )?(FUNCTION|PROCEDURE) :SCHEMA\.(\w+)/g)];
      expect(creates.map((m) => m[3])).toEqual([fn.name]);
      // A plain CREATE only after dropping the same function: how a file changes what it returns, which OR REPLACE cannot.
      if (creates[0][1] === undefined) expect(fn.sql).toContain(`DROP FUNCTION IF EXISTS :SCHEMA.${fn.name}(`);
    }
    for (const migration of migrations()) expect(migration.sql).not.toMatch(/\b(FUNCTION|PROCEDURE)\b/);
    // :SCHEMA is the only placeholder.
    for (const { sql } of [...migrations(), ...schemaFunctions()]) expect(sql.replace(/:SCHEMA\b/g, '')).not.toMatch(/(?<!:):[A-Z_]{2,}/);
  });
});
