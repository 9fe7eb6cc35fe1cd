import { readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient } from '../supervisor/public.ts';
import { inSchema, latestVersion, migrations, schemaFunctions } from '../src/schema/files.ts';
import { eventually, schemaName, startTestSupervisor, useTestSchema } from './helpers/db.ts';

/**
 * The squash of the nine pre-release migrations into one baseline is proved
 * here: a schema those migrations built (frozen in the fixture) is migrated,
 * and must then be the same, object for object in the catalogs, as a schema
 * the baseline built, with its jobs still there and run.
 */
const db = useTestSchema('baseline');
const created: string[] = [];
afterAll(async () => {
  for (const schema of created) await db.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
});

const LEGACY_SQL = readFileSync(path.resolve(import.meta.dirname, 'fixtures/legacy-schema-v9.sql'), 'utf8');

async function createLegacySchema(): Promise<string> {
  const schema = schemaName('legacy');
  created.push(schema);
  await db.pool.query(LEGACY_SQL.replaceAll('__SCHEMA__', schema));
  return schema;
}

async function createBaselineSchema(): Promise<string> {
  const schema = schemaName('fresh');
  created.push(schema);
  const client = createClient({ connectionString: db.url, schema });
  try {
    await client.migrate();
  } finally {
    await client.close();
  }
  return schema;
}

type Row = Record<string, unknown>;

/** Each kind of object in a schema, as rows with the schema's name replaced by `<schema>`. */
interface Catalog {
  relations: Row[];
  columns: Row[];
  indexes: Row[];
  constraints: Row[];
  triggers: Row[];
  sequences: Row[];
  types: Row[];
  functions: Row[];
  functionBodies: Row[];
  seeded: Row[];
}

/**
 * The catalog queries behind the comparison. Every row carries `rel`, the
 * relation (or type) it belongs to, so that the bookkeeping tables can be
 * set aside when comparing with a schema that predates them.
 */
const CATALOG_QUERIES: Record<Exclude<keyof Catalog, 'seeded'>, string> = {
  relations: `
    SELECT c.relname AS rel, c.relkind, c.relpersistence, c.relreplident, c.relrowsecurity,
           coalesce(c.reloptions, '{}') AS options, am.amname AS access_method
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam
     WHERE n.nspname = $1 ORDER BY c.relname`,
  columns: `
    SELECT c.relname AS rel, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
           a.attidentity, a.attgenerated, a.attcollation::regcollation::text AS collation,
           pg_get_expr(d.adbin, d.adrelid) AS default_value
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE n.nspname = $1 AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY c.relname, a.attnum`,
  indexes: `
    SELECT t.relname AS rel, c.relname AS index, pg_get_indexdef(i.indexrelid) AS def, i.indisprimary, i.indisunique, i.indisvalid
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 ORDER BY c.relname`,
  constraints: `
    SELECT c.relname AS rel, con.conname, con.contype, con.condeferrable, con.convalidated, pg_get_constraintdef(con.oid) AS def
      FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 ORDER BY c.relname, con.conname`,
  triggers: `
    SELECT c.relname AS rel, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid) AS def
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY c.relname, t.tgname`,
  sequences: `
    SELECT c.relname AS rel, s.seqtypid::regtype::text AS type, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
           (SELECT dc.relname || '.' || a.attname FROM pg_depend d
              JOIN pg_class dc ON dc.oid = d.refobjid JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')) AS owned_by
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 ORDER BY c.relname`,
  types: `
    SELECT t.typname AS rel, t.typtype, t.typcategory
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname = $1 ORDER BY t.typname`,
  // Everything about a function but its body: what its callers rely on.
  functions: `
    SELECT p.proname AS rel, pg_get_function_arguments(p.oid) AS arguments, pg_get_function_result(p.oid) AS result,
           l.lanname AS language, p.prokind, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef, p.proleakproof,
           p.procost, p.prorows, coalesce(p.proconfig, '{}') AS config
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
     WHERE n.nspname = $1 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)`,
  functionBodies: `
    SELECT p.proname AS rel, pg_get_function_identity_arguments(p.oid) AS arguments, pg_get_functiondef(p.oid) AS def
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = $1 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)`,
};

async function catalogOf(schema: string): Promise<Catalog> {
  const normalise = (value: unknown): unknown =>
    typeof value === 'string' ? value.replaceAll(`"${schema}"`, '<schema>').replaceAll(schema, '<schema>') : value;
  const rowsOf = async (sql: string): Promise<Row[]> =>
    (await db.pool.query(sql, [schema])).rows.map((row: Row) =>
      Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Array.isArray(v) ? v.map(normalise) : normalise(v)])),
    );
  const catalog = {} as Catalog;
  for (const [kind, sql] of Object.entries(CATALOG_QUERIES)) catalog[kind as keyof typeof CATALOG_QUERIES] = await rowsOf(sql);
  // The one table the baseline fills.
  catalog.seeded = (await db.pool.query(`SELECT chore FROM "${schema}".maintenance ORDER BY chore`)).rows;
  return catalog;
}

const BOOKKEEPING = /^_?schema_functions/;

/** The catalog without the table that records applied functions, which schemas before the baseline lack. */
function withoutBookkeeping(catalog: Catalog): Catalog {
  return Object.fromEntries(
    Object.entries(catalog).map(([kind, rows]) => [kind, (rows as Row[]).filter((row) => !BOOKKEEPING.test(String(row.rel ?? '')))]),
  ) as unknown as Catalog;
}

/**
 * What later migrations and function files added or changed, which the
 * pre-release schema cannot have: migration 0011's settings table; the
 * security-definer functions behind the client; add_job() made security
 * definer, and the insert trigger, which also names its channel from the
 * table's schema and checks the payload limit; migration 0014's schedules
 * table, the jobs' tick columns and their index, and the claims and
 * unhandled_tasks() returning them (a new result type); watch_progress()
 * (migration 0017's progress columns); migration 0020's max_attempts_given,
 * which the claims return too; migration 0015's flow control: the functions
 * behind limited claims and queue settings, and has_due() asking them (with
 * an argument more); migration 0016's dependencies: their
 * functions and the trigger that wakes dependents; the operator's
 * security-definer actions (cancel_jobs(), retry_jobs(), reschedule_jobs(),
 * purge_jobs()).
 */
const TABLES_SINCE_BASELINE = /^_?(settings|schedules)/;
const COLUMNS_SINCE_BASELINE = ['jobs.schedule', 'jobs.scheduled_for', 'jobs.max_attempts_given'];
const INDEXES_SINCE_BASELINE = ['jobs_schedule_tick_idx', 'messages_urgent_idx'];
/** Job keys (migration 0012): the jobs table's key columns, their checks and index; add_job() took new arguments. */
const KEYS_SINCE_BASELINE = /^(jobs_)?key/;
const FUNCTIONS_SINCE_BASELINE = [
  'add_jobs',
  'get_job',
  'watch_job',
  'watch_progress',
  'cancel_job',
  'job_specs',
  'key_held',
  'add_job',
  'held_queues',
  'pending_queues',
  'limited_candidates',
  'claim_limited',
  'limited_due',
  'configure_queue',
  // 0015 gave it a third argument.
  'has_due',
  'add_jobs_after',
  'resolve_dependencies',
  'jobs_finished',
  'dependencies_of',
  'dependents_of',
  'cancel_jobs',
  'retry_jobs',
  'reschedule_jobs',
  'purge_jobs',
  'messages_updated',
];
const CHANGED_SINCE_BASELINE = ['jobs_inserted', 'prune_finished'];
/**
 * Created by their function files, which a schema not yet migrated has not run: jobs_finished.sql
 * (wakes dependents) and messages_updated.sql (keeps control messages as sent; migration 0018 adds
 * the urgent messages' index).
 */
const TRIGGERS_SINCE_BASELINE = ['jobs_finished', 'messages_updated'];
const RESULT_CHANGED_SINCE_BASELINE = ['claim_next', 'claim_ids', 'unhandled_tasks'];

/** The catalog as the baseline built it: later objects left out, changed functions by their signature alone. */
function asAtBaseline(catalog: Catalog): Catalog {
  const kept = Object.fromEntries(
    Object.entries(catalog).map(([kind, rows]) => [
      kind,
      (rows as Row[]).filter(
        (row) =>
          !TABLES_SINCE_BASELINE.test(String(row.rel ?? '')) &&
          !FUNCTIONS_SINCE_BASELINE.includes(String(row.rel)) &&
          !INDEXES_SINCE_BASELINE.includes(String(row.rel)) &&
          // The key columns, checks and index of jobs are rows of jobs; the index is also a relation of its own.
          !KEYS_SINCE_BASELINE.test(String(row.rel === 'jobs' ? (row.attname ?? row.index ?? row.conname ?? '') : row.rel)),
      ),
    ]),
  ) as unknown as Catalog;
  kept.columns = kept.columns.filter((c) => !COLUMNS_SINCE_BASELINE.includes(`${c.rel}.${c.attname}`));
  kept.indexes = kept.indexes.filter((i) => !INDEXES_SINCE_BASELINE.includes(String(i.index)));
  kept.triggers = kept.triggers.filter((t) => !TRIGGERS_SINCE_BASELINE.includes(String(t.tgname)));
  kept.functions = kept.functions.map((f) => {
    if (RESULT_CHANGED_SINCE_BASELINE.includes(String(f.rel))) return { rel: f.rel, arguments: f.arguments };
    return CHANGED_SINCE_BASELINE.includes(String(f.rel)) ? { rel: f.rel, arguments: f.arguments, result: f.result } : f;
  });
  kept.functionBodies = kept.functionBodies.filter(
    (f) => ![...CHANGED_SINCE_BASELINE, ...RESULT_CHANGED_SINCE_BASELINE].includes(String(f.rel)),
  );
  return kept;
}

describe('a schema built by the nine pre-release migrations', () => {
  it('already has the baseline tables, and every function with the same signature and, but for those changed since, the same body', async () => {
    const fresh = withoutBookkeeping(await catalogOf(await createBaselineSchema()));
    // The migrations after the baseline, applied to both, so that what is compared is the baseline.
    const legacySchema = await createLegacySchema();
    for (const m of migrations().slice(1)) await db.pool.query(inSchema(m.sql, legacySchema));
    const legacy = await catalogOf(legacySchema);
    // Sanity: the comparison has something to compare.
    expect(fresh.columns.length).toBeGreaterThan(60);
    expect(fresh.functions.map((f) => f.rel)).toEqual([...schemaFunctions().map((f) => f.name)].sort());
    expect(asAtBaseline(legacy)).toEqual(asAtBaseline(fresh));
  });

  it('is brought to the baseline by migrate(): its jobs stay and run, and it then matches a fresh schema object for object', async () => {
    const schema = await createLegacySchema();
    const s = `"${schema}"`;
    // Jobs as the pre-release grapevine left them: two due, one finished, one for later.
    await db.pool.query(`SELECT ${s}.add_job('square', '{"n": 4}'), ${s}.add_job('square', '{"n": 9}', priority => 5)`);
    await db.pool.query(
      `INSERT INTO ${s}.jobs (task, state, attempts, result, finished_at) VALUES ('square', 'succeeded', 1, '{"root": 1}', now())`,
    );
    await db.pool.query(`SELECT ${s}.add_job('square', '{"n": 16}', run_at => now() + interval '1 day')`);
    await db.pool.query(`SELECT nextval('${s}.claim_tokens') FROM generate_series(1, 3)`);
    const before = (await db.pool.query(`SELECT * FROM ${s}.jobs ORDER BY id`)).rows;

    const client = createClient({ connectionString: db.url, schema });
    try {
      // The baseline by its bookkeeping alone, then every migration after it.
      expect(await client.migrate()).toEqual({ applied: migrations().map((m) => m.version), version: latestVersion() });
      expect(await client.migrate()).toEqual({ applied: [], version: latestVersion() });
    } finally {
      await client.close();
    }
    const { rows: versions } = await db.pool.query(`SELECT version, name FROM ${s}.migrations`);
    expect(versions).toEqual(migrations().map((m) => ({ version: m.version, name: m.name })));
    const { rows: functions } = await db.pool.query(`SELECT name, checksum FROM ${s}.schema_functions ORDER BY name`);
    expect(functions).toEqual(
      schemaFunctions()
        .map((f) => ({ name: f.name, checksum: f.checksum }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    );

    // Nothing was lost: the rows, the identity and the claim tokens go on where they were.
    // (Columns later migrations added are left out.)
    const after = (await db.pool.query(`SELECT * FROM ${s}.jobs ORDER BY id`)).rows;
    expect(after.map((row) => Object.fromEntries(Object.keys(before[0]).map((k) => [k, row[k]])))).toEqual(before);
    const { rows: tokens } = await db.pool.query(`SELECT last_value::int AS n FROM ${s}.claim_tokens`);
    expect(tokens[0].n).toBe(3);

    // Object for object the same as what the baseline builds.
    expect(await catalogOf(schema)).toEqual(await catalogOf(await createBaselineSchema()));

    // An insert now notifies on <schema>_jobs from the functions' new text.
    const listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    try {
      const heard = new Promise<string | undefined>((resolve) => listener.once('notification', (n) => resolve(n.channel)));
      await listener.query(`LISTEN "${schema}_jobs"`);
      const { rows } = await db.pool.query(`SELECT ${s}.add_job('square', '{"n": 25}') AS id`);
      expect(Number(rows[0].id)).toBeGreaterThan(Number(before.at(-1).id));
      expect(await heard).toBe(`${schema}_jobs`);
    } finally {
      await listener.end();
    }

    // And a supervisor runs the jobs the old schema held.
    const supervisor = await startTestSupervisor({ ...db, schema }, { threads: 1 });
    try {
      const done = await eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT payload->>'n' AS n, result->>'root' AS root FROM ${s}.jobs WHERE state = 'succeeded' AND payload ? 'n' ORDER BY (payload->>'n')::int`,
        );
        return rows.length === 3 ? rows : null;
      }, 'the due jobs to succeed');
      expect(done).toEqual([
        { n: '4', root: '2' },
        { n: '9', root: '3' },
        { n: '25', root: '5' },
      ]);
    } finally {
      await supervisor.stop({ graceMs: 1_000 });
    }
    const { rows: states } = await db.pool.query(`SELECT state, count(*)::int AS n FROM ${s}.jobs GROUP BY state ORDER BY state`);
    expect(states).toEqual([
      { state: 'pending', n: 1 },
      { state: 'succeeded', n: 4 },
    ]);
  });
});
