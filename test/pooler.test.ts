import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPool, withTransaction } from '../src/db.ts';
import { Listener } from '../src/listener.ts';
import { silentLogger } from '../src/log.ts';
import { createClient, createSchedules, DEFAULTS, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { createLedger, directDatabaseUrl, drained, FIXTURE_TASKS, untilSucceeded, useMigratedSchema } from './helpers/db.ts';
import { CLI, run, start } from './helpers/process.ts';
import { pgbouncerBinary, startPgBouncer, type RunningPgBouncer } from './helpers/pgbouncer.ts';

/**
 * Grapevine behind a PgBouncer of this file's own in transaction mode, with
 * fewer server connections than its clients hold, whichever pass this is.
 * (The pooled pass, GRAPEVINE_TEST_POOLER=pgbouncer, runs the core files
 * through a shared one.) Skipped where pgbouncer is not installed; CI
 * installs it.
 */
const db = useMigratedSchema('pooler');
const S = db.s;
const POOL_SIZE = 6;

describe('listenUrl', () => {
  it('must reach the database the connection string does: a supervisor and a waiting client refuse another one', async () => {
    const elsewhere = new URL(directDatabaseUrl());
    elsewhere.pathname = elsewhere.pathname === '/postgres' ? '/template1' : '/postgres';
    const options = { connectionString: db.url, listenUrl: elsewhere.toString(), schema: db.schema };
    const refusal = {
      code: 'GRAPEVINE_CONFIG_INVALID',
      message: expect.stringMatching(/^listenUrl .* reaches database "(postgres|template1)"/),
    };
    await expect(startSupervisor({ ...options, tasks: FIXTURE_TASKS, threads: 1, logger: silentLogger() })).rejects.toMatchObject(refusal);
    const client = createClient(options);
    try {
      const id = await client.addJob('noop', {});
      await expect(client.waitForJob(id, { timeoutMs: 1_000 })).rejects.toMatchObject(refusal);
    } finally {
      await client.close();
    }
  });
});

describe.skipIf(!pgbouncerBinary())('through PgBouncer in transaction mode', () => {
  let bouncer: RunningPgBouncer;
  /** A bouncer with one server connection: whatever a client leaves on it, the next client meets. */
  let single: RunningPgBouncer;
  beforeAll(async () => {
    bouncer = await startPgBouncer(directDatabaseUrl(), { poolSize: POOL_SIZE });
    single = await startPgBouncer(directDatabaseUrl(), { poolSize: 1 });
  });
  afterAll(async () => {
    await bouncer?.stop();
    await single?.stop();
  });

  /** A statement on a connection of its own through `via`. */
  async function onAnotherClient<T extends pg.QueryResultRow>(via: RunningPgBouncer, text: string): Promise<T[]> {
    const other = new pg.Client({ connectionString: via.url });
    await other.connect();
    try {
      return (await other.query<T>(text)).rows;
    } finally {
      await other.end();
    }
  }

  it('limits the statements of a pool with a statement timeout, and leaves no timeout on the server connection for the next client', async () => {
    const limited = createPool(single.url, {
      max: 1,
      applicationName: 'grapevine-test',
      statementTimeoutMs: 150,
      preparedStatements: false,
    });
    try {
      await expect(limited.query('SELECT pg_sleep(30)')).rejects.toMatchObject({ code: '57014' });
      await expect(withTransaction(limited, (c) => c.query('SELECT pg_sleep(30)'))).rejects.toMatchObject({ code: '57014' });
      expect((await limited.query('SELECT 41 + 1 AS n')).rows).toEqual([{ n: 42 }]);
      // The one server connection the pool used is the one this client gets.
      expect(await onAnotherClient(single, 'SHOW statement_timeout')).toEqual([{ statement_timeout: '0' }]);
    } finally {
      await limited.end();
    }
  });

  it('sends every statement unnamed with preparedStatements: false, so clients sharing a server connection do not collide', async () => {
    const named = { name: 'grapevine:pooler:probe', text: 'SELECT $1::int AS n', values: [7] };
    const pools = [0, 1].map(() => createPool(single.url, { max: 1, applicationName: 'grapevine-test', preparedStatements: false }));
    try {
      for (let round = 0; round < 3; round++) {
        for (const pool of pools) expect((await pool.query(named)).rows).toEqual([{ n: 7 }]);
      }
      expect(await onAnotherClient(single, 'SELECT count(*)::int AS n FROM pg_prepared_statements')).toEqual([{ n: 0 }]);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
    // Why the switch exists: named, the second client finds the first one's statement on the server connection.
    const plain = [0, 1].map(() => new pg.Pool({ connectionString: single.url, max: 1 }));
    try {
      await plain[0].query(named);
      await expect(plain[1].query(named)).rejects.toMatchObject({ code: '42P05' });
    } finally {
      await Promise.all(plain.map((p) => p.end()));
    }
  });

  it('createSchedules follows preparedStatements and GRAPEVINE_PREPARED_STATEMENTS as the client does', async () => {
    const before = process.env.GRAPEVINE_PREPARED_STATEMENTS;
    const spec = { name: 'pooler-nightly', cron: '0 3 * * *', task: 'noop' };
    try {
      for (const [how, options] of [
        ['option', { preparedStatements: false }],
        ['environment', {}],
      ] as const) {
        if (how === 'environment') process.env.GRAPEVINE_PREPARED_STATEMENTS = 'false';
        else delete process.env.GRAPEVINE_PREPARED_STATEMENTS;
        const schedules = createSchedules({ connectionString: single.url, schema: db.schema, migrate: false, ...options });
        try {
          await onAnotherClient(single, 'DEALLOCATE ALL');
          await schedules.add(spec);
          expect((await schedules.list()).map((x) => x.name)).toContain(spec.name);
          await schedules.pause(spec.name);
          await schedules.remove(spec.name);
          // The one server connection it used: no statement of its left there for the next client.
          expect(await onAnotherClient(single, 'SELECT count(*)::int AS n FROM pg_prepared_statements'), how).toEqual([{ n: 0 }]);
        } finally {
          await schedules.close();
        }
      }
    } finally {
      if (before === undefined) delete process.env.GRAPEVINE_PREPARED_STATEMENTS;
      else process.env.GRAPEVINE_PREPARED_STATEMENTS = before;
    }
  });

  it("enqueues in the caller's transaction on the caller's connection with unnamed statements too", async () => {
    // Migrated already: a migration now would wait for the one server connection the caller's transaction holds.
    const client = createClient({ connectionString: single.url, preparedStatements: false, schema: db.schema, migrate: false });
    const caller = new pg.Client({ connectionString: single.url });
    await caller.connect();
    try {
      for (let round = 0; round < 2; round++) {
        await caller.query('BEGIN');
        await client.addJob('noop', { round }, { db: caller });
        await caller.query('COMMIT');
        // What a pooler's next server connection looks like to this one: none of its statements.
        await onAnotherClient(single, 'DEALLOCATE ALL');
      }
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.jobs WHERE task = 'noop' AND payload ? 'round'`);
      expect(rows).toEqual([{ n: 2 }]);
    } finally {
      await caller.end();
      await client.close();
    }
  });

  it('LISTEN does not survive its transaction: the health check says so and names listenUrl', async () => {
    const listener = new Listener({
      connectionString: single.url,
      channels: [`${db.schema}_probe`],
      applicationName: 'grapevine-test',
      logger: silentLogger(),
    });
    const lost = new Promise<Error>((resolve) => listener.once('disconnected', resolve));
    await listener.start();
    try {
      // The next client of the one server connection does what any client may do with a session it is handed.
      await onAnotherClient(single, 'UNLISTEN *');
      expect(await listener.checkHealth()).toBe(false);
      expect((await lost).message).toMatch(/subscription lost .*Set listenUrl .* to reach PostgreSQL directly/);
    } finally {
      await listener.stop();
    }
  });

  it('runs from the command line: grapevine run and add --wait with --listen-url and --no-prepared-statements', async () => {
    // Only the flags say it: none of the variables the pooled pass sets.
    const env = {
      DATABASE_URL: undefined,
      GRAPEVINE_LISTEN_URL: undefined,
      GRAPEVINE_PREPARED_STATEMENTS: undefined,
      GRAPEVINE_LOG_LEVEL: 'info',
    };
    const flags = ['--database-url', bouncer.url, '--listen-url', directDatabaseUrl(), '--no-prepared-statements', '--schema', db.schema];
    const supervisor = start([CLI, 'run', '--tasks', FIXTURE_TASKS, '--threads', '1', '--log-format', 'json', ...flags], env);
    try {
      expect(await supervisor.waitFor(/"listen":"[^"]+"[^\n]*supervisor started/)).toBeTruthy();
      const added = await run([CLI, 'add', 'square', '{"n":16}', '--wait', ...flags], env);
      expect(added).toMatchObject({ code: 0 });
      expect(added.stdout).toContain('"root": 4');
    } finally {
      supervisor.child.kill('SIGTERM');
      expect((await supervisor.exited).code).toBe(0);
    }
  });

  describe('eight supervisors', () => {
    const started: Supervisor[] = [];
    afterEach(async () => {
      await Promise.all(started.map((s) => s.stop({ graceMs: 0 })));
      started.length = 0;
    });

    it(`drain a backlog through ${POOL_SIZE} server connections: every job succeeds exactly once`, async () => {
      const table = await createLedger(db, 'ledger');
      const pooled = { connectionString: bouncer.url, listenUrl: directDatabaseUrl(), preparedStatements: false, schema: db.schema };
      const producer = createClient(pooled);
      const ids: string[] = [];
      try {
        // The 20,000-job backlog that bar names, in chunks of 5,000.
        for (let i = 0; i < 4; i++)
          ids.push(...(await producer.addJobs(Array.from({ length: 5_000 }, () => ({ task: 'ledger', payload: { table } })))));
      } finally {
        await producer.close();
      }

      const servers = serverConnectionsOf(bouncer);
      try {
        for (let i = 0; i < 8; i++) {
          started.push(await startSupervisor({ ...pooled, tasks: FIXTURE_TASKS, threads: 1, concurrency: 8, logger: silentLogger() }));
        }
        await untilSucceeded(db, ids);
      } finally {
        await servers.stop();
      }

      expect(await drained(db, ids, table)).toEqual({
        states: [{ state: 'succeeded', attempts: 1, n: ids.length }],
        runs: ids.length,
        jobs: ids.length,
      });
      const { rows: owners } = await db.pool.query(
        `SELECT count(DISTINCT locked_by)::int AS n FROM ${S}.jobs WHERE id = ANY($1::bigint[])`,
        [ids],
      );
      expect(owners[0].n).toBeGreaterThan(1);
      // Up to eight budgets of client connections shared the pool's server connections.
      expect(servers.max()).toBeGreaterThan(0);
      expect(servers.max()).toBeLessThanOrEqual(POOL_SIZE);
      // And each supervisor kept to its budget on the pooler's side: LISTEN went direct.
      expect(servers.maxClients()).toBeLessThanOrEqual(8 * DEFAULTS.maxConnections);
      if (process.env.GRAPEVINE_TEST_LOG)
        console.log(`[pooler] most server connections at once: ${servers.max()}; most clients: ${servers.maxClients()}`);
    }, 240_000);
  });
});

/**
 * Samples PgBouncer's own count of server connections (its admin console's
 * SHOW POOLS) until stop(), keeping the highest.
 */
function serverConnectionsOf(bouncer: RunningPgBouncer): { max(): number; maxClients(): number; stop(): Promise<void> } {
  const admin = new URL(bouncer.url);
  admin.pathname = '/pgbouncer';
  const console_ = new pg.Client({ connectionString: admin.toString() });
  let most = 0;
  let mostClients = 0;
  let running = true;
  const sampling = (async () => {
    await console_.connect();
    while (running) {
      const { rows } = await console_.query('SHOW POOLS');
      for (const row of rows) {
        if (row.database === 'pgbouncer') continue;
        const sum = (...columns: string[]) => columns.reduce((n, c) => n + Number(row[c]), 0);
        most = Math.max(most, sum('sv_active', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login'));
        mostClients = Math.max(mostClients, sum('cl_active', 'cl_waiting'));
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  return {
    max: () => most,
    maxClients: () => mostClients,
    async stop() {
      running = false;
      await sampling;
      await console_.end();
    },
  };
}
