import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createControl, GrapevineError, startSupervisor, type Supervisor } from '../src/index.ts';
import { migrations } from '../src/schema/files.ts';
import { grantRole, grantSql } from '../src/schema/roles.ts';
import { controlStatements } from '../src/sql/control.ts';
import { jobStatements } from '../src/sql/jobs.ts';
import { settingsStatements } from '../src/sql/settings.ts';
import type { Statement } from '../src/sql/statement.ts';
import { supervisorStatements } from '../src/sql/supervisors.ts';
import { eventually, FIXTURE_TASKS, testLogger, useMigratedSchema } from './helpers/db.ts';
import { useOwnRole, type OwnRole } from './helpers/role.ts';

/**
 * The three kinds of role `grapevine grant` sets up, each used end to end by
 * a real login role that has nothing else: no superuser, no ownership, no
 * right the grant did not give.
 */
const db = useMigratedSchema('roles');
const enqueuer = useOwnRole(db, 'enq', { superuser: false });
const worker = useOwnRole(db, 'wrk', { superuser: false });
const operator = useOwnRole(db, 'op', { superuser: false });
const nobody = useOwnRole(db, 'nobody', { superuser: false });

let supervisor: Supervisor | undefined;
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  for (const [role, as] of [[enqueuer, 'enqueuer'], [worker, 'worker'], [operator, 'operator']] as const) {
    await grantRole({ connectionString: db.url, schema: db.schema, role: role.name, as });
  }
});
afterAll(async () => {
  await supervisor?.stop({ graceMs: 1_000 });
  for (const close of closers) await close().catch(() => {});
});

function clientAs(role: OwnRole) {
  const client = createClient({ connectionString: role.url, schema: db.schema });
  closers.push(() => client.close());
  return client;
}

/** Runs one statement as the role and returns the SQLSTATE it failed with (undefined: it did not fail). */
async function sqlstateAs(role: OwnRole, text: string, values: unknown[] = []): Promise<string | undefined> {
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

async function stateOf(id: string): Promise<string | undefined> {
  const { rows } = await db.pool.query(`SELECT state FROM ${db.s}.jobs WHERE id = $1`, [id]);
  return rows[0]?.state;
}

const DENIED = '42501';

describe('grapevine grant', () => {
  it('prints the SQL of each kind without connecting, and refuses an unknown kind or a role that does not exist', async () => {
    const enqueue = grantSql({ schema: db.schema, role: 'app', as: 'enqueuer' });
    expect(enqueue).toContain(`GRANT EXECUTE ON FUNCTION ${db.s}.add_job(text, jsonb, text, timestamptz, integer, integer, integer), ${db.s}.add_jobs(jsonb)`);
    // No right on any table but the three read-only ones every kind reads.
    expect(enqueue.match(/ON TABLE [^;]*/g)).toEqual([`ON TABLE ${db.s}.migrations, ${db.s}.schema_functions, ${db.s}.settings TO "app"`]);
    expect(grantSql({ schema: db.schema, role: 'w', as: 'worker' })).toContain(`GRANT SELECT, UPDATE, DELETE ON TABLE ${db.s}.jobs TO "w"`);
    expect(grantSql({ schema: db.schema, role: 'o', as: 'operator' })).toContain(`${db.s}.cancel_job(bigint)`);
    for (const sql of grantSqlOfEachKind()) expect(sql).not.toMatch(/\b(CREATE|ALTER|DROP|TRUNCATE|REFERENCES|TRIGGER)\b/);

    const unknownKind = await grantRole({ connectionString: db.url, schema: db.schema, role: nobody.name, as: 'admin' }).catch((e: unknown) => e);
    expect((unknownKind as GrapevineError).code).toBe('GRAPEVINE_CONFIG_INVALID');
    expect((unknownKind as Error).message).toMatch(/unknown kind of role "admin": use --as enqueuer, --as worker, --as operator/);
    const missing = await grantRole({ connectionString: db.url, schema: db.schema, role: `${nobody.name}_x`, as: 'worker' }).catch((e: unknown) => e);
    expect((missing as GrapevineError).code).toBe('GRAPEVINE_CONFIG_INVALID');
    expect((missing as Error).message).toContain(`role "${nobody.name}_x" does not exist: create it first`);
  });

  it('refuses, with GRAPEVINE_PERMISSION_DENIED, a role that does not own the schema', async () => {
    const err = await grantRole({ connectionString: enqueuer.url, schema: db.schema, role: nobody.name, as: 'worker' }).catch((e: unknown) => e);
    expect((err as GrapevineError).code).toBe('GRAPEVINE_PERMISSION_DENIED');
    expect((err as Error).message).toContain(`role "${enqueuer.name}" may not grant rights on schema "${db.schema}"`);
    expect(await sqlstateAs(nobody, `SELECT 1 FROM ${db.s}.jobs`)).toBe(DENIED);
  });
});

function grantSqlOfEachKind(): string[] {
  return (['enqueuer', 'worker', 'operator'] as const).map((as) => grantSql({ schema: db.schema, role: 'r', as }));
}

/**
 * Every statement each side runs, with arguments that make it do its work
 * (on rows that may not be there): the grants are read from this list, and
 * it proves each kind has what its side needs.
 */
function statementsOf(kind: 'enqueuer' | 'worker' | 'operator'): Array<[Statement, unknown[]]> {
  const jobs = jobStatements(db.schema);
  const sups = supervisorStatements(db.schema);
  const control = controlStatements(db.schema);
  const enqueue: Array<[Statement, unknown[]]> = [
    [jobs.insertOne, ['square', '{}', 'default', null, 0, 5, null]],
    [jobs.insertMany, ['[{"task": "square"}]']],
    [jobs.getById, [1]],
    [jobs.watch, [1]],
    [settingsStatements(db.schema).payloadLimit, []],
  ];
  if (kind === 'enqueuer') return enqueue;
  if (kind === 'operator') {
    return [
      [jobs.getById, [1]],
      [jobs.watch, [1]],
      [jobs.cancel, [1]],
      [jobs.announceCancel, ['1', 'w']],
      [sups.list, [1000]],
      [control.workerStates, [1000, ['w']]],
      [control.send, [['w'], 'PING', null, 1000]],
      [control.recipients, [1]],
      [control.responses, [1, ['w']]],
      [control.takeResponses, [1, ['w'], true]],
      [control.responseIds, ['w']],
      [control.logTail, [null, 10]],
      [control.logAfter, [0, null]],
      [control.followLog, ['f', 1000]],
      [control.unfollowLog, ['f']],
      [settingsStatements(db.schema).payloadLimit, []],
    ];
  }
  return [
    ...enqueue,
    [jobs.claimByIds, [[1], ['square'], 'w', 1, 1000, null]],
    [jobs.claimNext, [1, ['square'], 'w', 1, 1000, null]],
    [jobs.complete, ['[{"id": 1, "token": 1, "result": {}}]']],
    [jobs.deleteSucceeded, ['{1}', '{1}']],
    [jobs.fail, ['[{"id": 1, "token": 1, "error": "e", "retryable": true}]', 1000, 10_000]],
    [jobs.releaseUnreported, ['w', null, 'r', true]],
    [jobs.lockIds, [[1]]],
    [jobs.releaseIds, ['w', '[{"id": 1, "thread": 1, "reason": "r", "count": true}]']],
    [jobs.renewLeases, ['w', [1], 1000]],
    [jobs.hasDue, [['square'], null]],
    [jobs.reapExpired, []],
    [jobs.pruneFinished, [1000, 10]],
    [jobs.unhandledTasks, [1000, 10]],
    [sups.register, ['w', 'host', 1, 'v', 1, 1, null, ['square'], '{}']],
    [sups.heartbeat, ['w', 'IDLE', 1, '{}', ['square']]],
    [sups.deregister, ['w']],
    [sups.tryLeadReaper, []],
    [sups.claimChore, ['reap', null]],
    [sups.markLost, [1000]],
    [sups.pruneExited, []],
    [control.pending, ['w', 10]],
    [control.respond, [1, 'w', 'PING', true, '"PONG"', null, '[{"at": "2026-01-01T00:00:00Z", "event": "E", "thread": null, "detail": "d"}]']],
    [control.setStatus, ['w', 'IDLE']],
    [control.appendLog, ['w', '[{"at": "2026-01-01T00:00:00Z", "event": "E", "thread": null, "detail": "d"}]']],
    [control.pruneOwnLog, ['w', 10]],
    [control.pruneOldLog, [1000, 10]],
    [control.pruneMessages, [1000, 10]],
    [control.pruneResponses, [1000, 10]],
  ];
}

/** Runs each statement as the role, each in a transaction it rolls back; returns those refused, with why. */
async function refusedAs(role: OwnRole, statements: Array<[Statement, unknown[]]>): Promise<string[]> {
  const conn = new pg.Client({ connectionString: role.url });
  await conn.connect();
  const refused: string[] = [];
  try {
    for (const [st, values] of statements) {
      await conn.query('BEGIN');
      await conn.query(st.text, values).catch((err: Error) => refused.push(`${st.name}: ${err.message}`));
      await conn.query('ROLLBACK');
    }
  } finally {
    await conn.end();
  }
  return refused;
}

describe('each kind', () => {
  it('may run every statement its side of grapevine runs', async () => {
    for (const [role, kind] of [[enqueuer, 'enqueuer'], [worker, 'worker'], [operator, 'operator']] as const) {
      expect([kind, await refusedAs(role, statementsOf(kind))]).toEqual([kind, []]);
    }
    // And the enqueuer none of the others', but the two that read or write
    // no table: an advisory lock, and a NOTIFY (any role may send one with
    // pg_notify, which is why a notification is only ever a hint).
    const jobs = jobStatements(db.schema);
    const harmless = [supervisorStatements(db.schema).tryLeadReaper, jobs.announceCancel];
    const others = [...statementsOf('worker'), ...statementsOf('operator')].filter(
      ([st]) => !harmless.includes(st) && !statementsOf('enqueuer').some(([e]) => e === st),
    );
    expect((await refusedAs(enqueuer, others)).length).toBe(others.length);
  });
});

describe('an enqueuer', () => {
  it('adds jobs one by one and in bulk, from the client with no options and from SQL, and reads them back', async () => {
    const client = clientAs(enqueuer);
    const one = await client.addJob('square', { n: 4 }, { priority: 3 });
    const many = await client.addJobs([
      { task: 'square', payload: { n: 9 } },
      { task: 'square', payload: { n: 16 }, queue: 'other' },
    ]);
    expect(many).toHaveLength(2);
    expect(await client.getJob(one)).toMatchObject({ id: one, task: 'square', state: 'pending', priority: 3, payload: { n: 4 } });
    expect((await client.getJob(many[1]))!.queue).toBe('other');

    const conn = new pg.Client({ connectionString: enqueuer.url });
    await conn.connect();
    try {
      const { rows: single } = await conn.query(`SELECT ${db.s}.add_job('square', '{"n": 25}') AS id`);
      const { rows: bulk } = await conn.query(`SELECT id FROM ${db.s}.add_jobs($1) AS id`, [
        JSON.stringify([{ task: 'square', payload: { n: 36 } }, { task: 'square' }]),
      ]);
      expect(bulk).toHaveLength(2);
      const { rows: read } = await conn.query(`SELECT state, payload FROM ${db.s}.get_job($1)`, [single[0].id]);
      expect(read).toEqual([{ state: 'pending', payload: { n: 25 } }]);
      expect(await stateOf(bulk[1].id)).toBe('pending');
    } finally {
      await conn.end();
    }
  });

  it('cannot read or write the jobs table, forge a finished or leased job, cancel, or change the schema', async () => {
    const { rows } = await db.pool.query(`SELECT ${db.s}.add_job('square', '{"n": 49}') AS id`);
    const id = String(rows[0].id);
    const attempts: Array<[string, unknown[]]> = [
      [`SELECT * FROM ${db.s}.jobs`, []],
      [`INSERT INTO ${db.s}.jobs (task, state, result, finished_at) VALUES ('square', 'succeeded', '{"root": 42}', now())`, []],
      [
        `INSERT INTO ${db.s}.jobs (task, state, attempts, locked_by, claim_token, lease_until, started_at)
         VALUES ('square', 'running', 1, 'nobody', 1, 'infinity', now())`,
        [],
      ],
      [`UPDATE ${db.s}.jobs SET state = 'succeeded' WHERE id = $1`, [id]],
      [`DELETE FROM ${db.s}.jobs WHERE id = $1`, [id]],
      [`SELECT * FROM ${db.s}.cancel_job($1)`, [id]],
      [`SELECT * FROM ${db.s}.supervisors`, []],
      [`INSERT INTO ${db.s}.messages (id, worker, command) VALUES (1, 'any', 'STOP')`, []],
      [`UPDATE ${db.s}.settings SET max_payload_bytes = 1`, []],
      [`CREATE TABLE ${db.s}.mine (x int)`, []],
    ];
    for (const [text, values] of attempts) expect([text, await sqlstateAs(enqueuer, text, values)]).toEqual([text, DENIED]);

    const client = clientAs(enqueuer);
    expect((await client.cancelJob(id).catch((e: unknown) => e)) as { code?: string }).toMatchObject({ code: DENIED });
    expect((await client.runDueNow().catch((e: unknown) => e)) as { code?: string }).toMatchObject({ code: DENIED });
    expect(await stateOf(id)).toBe('pending');
    const { rows: forged } = await db.pool.query(`SELECT count(*)::int AS n FROM ${db.s}.jobs WHERE state <> 'pending'`);
    expect(forged[0].n).toBe(0);
  });
});

describe('a worker', () => {
  it('runs a supervisor that processes jobs (handlers enqueue too) with no DDL right, and the enqueuer reads the results', async () => {
    supervisor = await startSupervisor({ connectionString: worker.url, schema: db.schema, tasks: FIXTURE_TASKS, threads: 1, logger: testLogger() });
    const client = clientAs(enqueuer);
    const id = await client.addJob('square', { n: 64 });
    const done = await client.waitForJob(id, { timeoutMs: 30_000 });
    expect(done).toMatchObject({ state: 'succeeded', result: { n: 64, root: 8 } });

    // A handler's addJob() runs in the worker's thread, as the worker role.
    const parent = await client.addJob('report_helpers', { followUp: { task: 'square', payload: { n: 81 } } });
    const reported = await client.waitForJob(parent, { timeoutMs: 30_000 });
    expect(reported.state).toBe('succeeded');
    const child = (reported.result as { followUp: string }).followUp;
    expect((await client.waitForJob(child, { timeoutMs: 30_000 })).result).toMatchObject({ root: 9 });

    const { rows } = await db.pool.query(`SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name LIKE 'grapevine-supervisor%' AND usename = $1`, [
      worker.name,
    ]);
    expect(rows).toEqual([{ usename: worker.name }]);
    expect(await sqlstateAs(worker, `CREATE TABLE ${db.s}.mine (x int)`)).toBe(DENIED);
    expect(await sqlstateAs(worker, `CREATE OR REPLACE FUNCTION ${db.s}.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'`)).toBe(DENIED);
    expect(await sqlstateAs(worker, `ALTER TABLE ${db.s}.jobs ADD COLUMN mine int`)).toBe(DENIED);
  });
});

describe('an operator', () => {
  it('pings the supervisors, reads the registry and the log, and cancels pending and running jobs', async () => {
    const control = createControl({ connectionString: operator.url, schema: db.schema });
    closers.push(() => control.close());
    const responses = await control.sendAndWait('PING', undefined, { timeoutMs: 30_000 });
    expect(Object.values(responses)).toEqual([expect.objectContaining({ worker: supervisor!.id, ok: true, value: 'PONG' })]);
    expect((await control.workers()).map((w) => w.id)).toContain(supervisor!.id);
    expect((await control.logTail({ n: 5 })).length).toBeGreaterThan(0);

    const enqueue = clientAs(enqueuer);
    const later = await enqueue.addJob('square', { n: 100 }, { runAt: new Date(Date.now() + 3_600_000) });
    const running = await enqueue.addJob('hang', { cooperative: true });
    await eventually(async () => (await stateOf(running)) === 'running', 'the hang job to start');

    const client = clientAs(operator);
    expect(await client.cancelJob(later)).toEqual({ state: 'cancelled' });
    expect(await client.cancelJob(running)).toEqual({ state: 'cancelling' });
    expect((await client.getJob(running))!.cancelRequestedAt).toBeInstanceOf(Date);
    expect((await enqueue.waitForJob(running, { timeoutMs: 30_000 })).state).toBe('cancelled');
    expect(await stateOf(later)).toBe('cancelled');

    expect(await sqlstateAs(operator, `UPDATE ${db.s}.jobs SET state = 'succeeded'`)).toBe(DENIED);
    expect(await sqlstateAs(operator, `SELECT ${db.s}.add_job('square')`)).toBe(DENIED);
    expect(await sqlstateAs(operator, `CREATE TABLE ${db.s}.mine (x int)`)).toBe(DENIED);
  });
});

describe('a role that may not migrate', () => {
  it('starts against a current schema, and against one that needs migrating fails with one line naming grapevine migrate', async () => {
    // A release whose function file changed: the schema is behind until its owner migrates it.
    await db.pool.query(`UPDATE ${db.s}.schema_functions SET checksum = 'an older release' WHERE name = 'has_due'`);
    const expectTooOld = (err: unknown, role: OwnRole) => {
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_OLD');
      const message = (err as Error).message;
      expect(message).toContain(`schema "${db.schema}" has older functions than this grapevine, and role "${role.name}" may not migrate it`);
      expect(message).toContain(`run \`grapevine migrate --schema ${db.schema}\` as a role that may change the schema`);
      expect(message).not.toContain('\n');
    };
    const started = await startSupervisor({ connectionString: worker.url, schema: db.schema, tasks: FIXTURE_TASKS, threads: 1, logger: testLogger() }).then(
      async (s) => {
        await s.stop({ graceMs: 0 });
        return null;
      },
      (e: unknown) => e,
    );
    expectTooOld(started, worker);
    const late = createClient({ connectionString: enqueuer.url, schema: db.schema });
    try {
      expectTooOld(await late.addJob('square', { n: 1 }).catch((e: unknown) => e), enqueuer);
      // The owner migrates; the same client then gets on with it.
      expect(await db.client.migrate()).toEqual(expect.objectContaining({ applied: [] }));
      expect(await late.addJob('square', { n: 1 })).toMatch(/^\d+$/);
    } finally {
      await late.close();
    }
    // An older version, as its migrations table tells.
    const latest = migrations().at(-1)!;
    await db.pool.query(`DELETE FROM ${db.s}.migrations WHERE version = $1`, [latest.version]);
    const older = createClient({ connectionString: worker.url, schema: db.schema });
    try {
      const err = await older.getJob(1).catch((e: unknown) => e);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_OLD');
      expect((err as Error).message).toContain(`schema "${db.schema}" is at version ${migrations().at(-2)!.version} and this grapevine needs version ${latest.version}`);
      expect((err as Error).message).toContain(`grapevine migrate --schema ${db.schema}`);
    } finally {
      await older.close();
      await db.pool.query(`INSERT INTO ${db.s}.migrations (version, name) VALUES ($1, $2)`, [latest.version, latest.name]);
    }

    // A role that was granted nothing cannot even tell, and is told what to ask for.
    const stranger = createClient({ connectionString: nobody.url, schema: db.schema });
    try {
      const err = await stranger.addJob('square', { n: 1 }).catch((e: unknown) => e);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_PERMISSION_DENIED');
      expect((err as Error).message).toContain(`role "${nobody.name}" may not read grapevine's tables in schema "${db.schema}"`);
      expect((err as Error).message).toContain(`grapevine grant ${nobody.name} --as worker|enqueuer|operator --schema ${db.schema}`);
    } finally {
      await stranger.close();
    }
  });
});
