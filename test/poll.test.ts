import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log.ts';
import { createClient, createControl, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { createLedger, directDatabaseUrl, drained, eventually, FIXTURE_TASKS, untilSucceeded, useMigratedSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';
import { CLI, run, start } from './helpers/process.ts';
import { pgbouncerBinary, startPgBouncer, type RunningPgBouncer } from './helpers/pgbouncer.ts';

/**
 * Poll-only mode: no LISTEN anywhere, everything through a PgBouncer in
 * transaction mode, and the guarantees hold. Skipped where pgbouncer is not
 * installed; CI installs it.
 */
const db = useMigratedSchema('poll');
const S = db.s;
const POLL_MS = 100;

describe.skipIf(!pgbouncerBinary())('poll-only mode through PgBouncer in transaction mode, with no direct LISTEN connection', () => {
  let bouncer: RunningPgBouncer;
  let pooled: { connectionString: string; preparedStatements: false; schema: string; poll: true; pollIntervalMs: number };
  beforeAll(async () => {
    bouncer = await startPgBouncer(directDatabaseUrl(), { poolSize: 6 });
    pooled = { connectionString: bouncer.url, preparedStatements: false, schema: db.schema, poll: true, pollIntervalMs: POLL_MS };
  });
  afterAll(async () => {
    await bouncer?.stop();
  });

  const started: Supervisor[] = [];
  afterEach(async () => {
    await Promise.all(started.map((s) => s.stop({ graceMs: 0 })));
    started.length = 0;
  });

  /** Statements a session of this schema's supervisors or waiters last ran that were a LISTEN. */
  async function listens(): Promise<number> {
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE $1`, [`LISTEN "${db.schema}_%`]);
    return rows[0].n;
  }

  it('runs every job exactly once, wakes waits, delayed jobs, cancels and control messages, with no LISTEN', async () => {
    const table = await createLedger(db, 'poll_ledger');
    for (let i = 0; i < 2; i++) {
      started.push(await startSupervisor({ ...pooled, tasks: FIXTURE_TASKS, threads: 1, concurrency: 8, logger: silentLogger() }));
    }
    const client = createClient(pooled);
    const control = createControl(pooled);
    try {
      const ids = await client.addJobs(Array.from({ length: 300 }, () => ({ task: 'ledger', payload: { table } })));
      await untilSucceeded(db, ids);
      expect(await drained(db, ids, table)).toEqual({ states: [{ state: 'succeeded', attempts: 1, n: 300 }], runs: 300, jobs: 300 });

      // A wait is answered by polling.
      const square = await client.addJob('square', { n: 49 });
      expect(await client.waitForJob(square, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: { root: 7 } });
      const later = await client.addJob('square', { n: 4 }, { runAt: new Date(Date.now() + 300) });
      expect(await client.waitForJob(later, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: { root: 2 } });

      // A cancel reaches the running job.
      const hung = await client.addJob('hang', { cooperative: true });
      await eventually(async () => (await client.getJob(hung))?.state === 'running', 'the job to run');
      await client.cancelJob(hung);
      expect(await client.waitForJob(hung, { timeoutMs: 30_000 })).toMatchObject({ state: 'cancelled' });

      // Control messages are read by polling, and answers found the same way.
      const pongs = await control.sendAndWait('PING', undefined, { timeoutMs: 30_000 });
      expect(Object.values(pongs).map((r) => r.value)).toEqual(['PONG', 'PONG']);
      const info = (await control.sendAndWait('INFO', undefined, { supervisors: [started[0].id], timeoutMs: 30_000 }))[started[0].id]
        .value as { pollIntervalMs: number | null; connections: { listen: number } };
      expect(info).toMatchObject({ pollIntervalMs: POLL_MS, connections: { listen: 0 } });

      for (const supervisor of started) {
        expect(supervisor.listenerPid()).toBeNull();
        expect(supervisor.status().connections.listen).toBe(0);
      }
      expect(await listens()).toBe(0);
    } finally {
      await client.close();
      await control.close();
    }
  }, 180_000);

  it('falls back to polling by itself, with one warning, when its LISTEN goes through the pooler', async () => {
    // One server connection: the LISTEN stays on it, and what another client runs there reaches it.
    const single = await startPgBouncer(directDatabaseUrl(), { poolSize: 1 });
    const logs = capturingLogger('warn');
    const client = createClient({
      connectionString: single.url,
      preparedStatements: false,
      schema: db.schema,
      poll: true,
      pollIntervalMs: POLL_MS,
    });
    try {
      const supervisor = await startSupervisor({
        connectionString: single.url,
        // Said outright: the pooled pass of the suite sets GRAPEVINE_LISTEN_URL.
        listenUrl: single.url,
        preparedStatements: false,
        schema: db.schema,
        tasks: FIXTURE_TASKS,
        threads: 1,
        pollIntervalMs: POLL_MS,
        listenerHealthCheckMs: 100,
        logger: logs.logger,
      });
      started.push(supervisor);
      // The next client of the server connection does what any client may do with a session it is handed.
      const other = new pg.Client({ connectionString: single.url });
      await other.connect();
      await other.query('UNLISTEN *');
      await other.end();
      const warning = await eventually(() => logs.lines().find((l) => /LISTEN is not available/.test(l.msg)), 'the fallback warning');
      expect(warning.msg).toMatch(new RegExp(`polls every ${POLL_MS} ms instead.*listenUrl.*--poll`));
      expect(supervisor.status().connections.listen).toBe(0);

      const ids = await client.addJobs(Array.from({ length: 20 }, (_, n) => ({ task: 'square', payload: { n } })));
      for (const id of ids) expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
      const control = createControl({ connectionString: single.url, preparedStatements: false, schema: db.schema, poll: true });
      try {
        const pong = await control.sendAndWait('PING', undefined, { supervisors: [supervisor.id], timeoutMs: 30_000 });
        expect(pong[supervisor.id].value).toBe('PONG');
      } finally {
        await control.close();
      }
      expect(logs.lines().filter((l) => /LISTEN is not available/.test(l.msg))).toHaveLength(1);
      const { rows } = await db.pool.query(`SELECT event, detail FROM ${S}.worker_log WHERE worker = $1 AND event = 'POLL'`, [
        supervisor.id,
      ]);
      expect(rows).toEqual([{ event: 'POLL', detail: `LISTEN unavailable; polling every ${POLL_MS} ms` }]);
    } finally {
      await client.close();
      await Promise.all(started.map((s) => s.stop({ graceMs: 0 })));
      started.length = 0;
      await single.stop();
    }
  }, 120_000);

  it('a wait falls back to polling by itself when its LISTEN goes through the pooler', async () => {
    // The client alone uses this bouncer's one server connection: its LISTEN, then its reads.
    const single = await startPgBouncer(directDatabaseUrl(), { poolSize: 1 });
    const logs = capturingLogger('warn');
    started.push(await startSupervisor({ ...pooled, tasks: FIXTURE_TASKS, threads: 1, logger: silentLogger() }));
    // It does not know it must poll, and finds out.
    const client = createClient({
      connectionString: single.url,
      listenUrl: single.url,
      preparedStatements: false,
      schema: db.schema,
      logger: logs.logger,
    });
    try {
      const later = await client.addJob('square', { n: 81 }, { runAt: new Date(Date.now() + 3_600_000) });
      const waiting = client.waitForJob(later, { timeoutMs: 60_000 });
      // The wait reads the job once it listens: after that read, the LISTEN is on the server connection.
      await eventually(async () => {
        const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1`, [
          `SELECT * FROM "${db.schema}".get_job($1)`,
        ]);
        return rows[0].n > 0;
      }, 'the wait to listen and read the job');
      const other = new pg.Client({ connectionString: single.url });
      await other.connect();
      await other.query('UNLISTEN *');
      await other.end();
      // Due now, by a plain UPDATE: the poller finds it, and no notification would reach the wait anyway.
      await db.pool.query(`UPDATE ${S}.jobs SET run_at = now() WHERE id = $1`, [later]);
      expect(await waiting).toMatchObject({ state: 'succeeded', result: { root: 9 } });
      expect(logs.lines().filter((l) => /LISTEN is not available; waits poll instead/.test(l.msg))).toHaveLength(1);
    } finally {
      await client.close();
      await single.stop();
    }
  }, 120_000);

  it('runs from the command line: grapevine run --poll and add --wait --poll, through the pooler alone', async () => {
    const env = {
      DATABASE_URL: undefined,
      GRAPEVINE_LISTEN_URL: undefined,
      GRAPEVINE_PREPARED_STATEMENTS: undefined,
      GRAPEVINE_POLL: undefined,
      GRAPEVINE_LOG_LEVEL: 'info',
    };
    const flags = ['--database-url', bouncer.url, '--no-prepared-statements', '--poll', '--schema', db.schema];
    const supervisor = start(
      [CLI, 'run', '--tasks', FIXTURE_TASKS, '--threads', '1', '--poll-interval-ms', '100', '--log-format', 'json', ...flags],
      env,
    );
    try {
      expect(await supervisor.waitFor(/"poll":100[^\n]*supervisor started/)).toBeTruthy();
      const added = await run([CLI, 'add', 'square', '{"n":36}', '--wait', ...flags], env);
      expect(added).toMatchObject({ code: 0 });
      expect(added.stdout).toContain('"root": 6');
      expect(await listens()).toBe(0);
    } finally {
      supervisor.child.kill('SIGTERM');
      expect((await supervisor.exited).code).toBe(0);
    }
  }, 120_000);
});
