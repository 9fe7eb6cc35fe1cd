import { randomInt } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log.ts';
import { createControl, type Supervisor } from '../supervisor/public.ts';
import { createLedger, drained, eventually, startTestSupervisor, untilSucceeded, useMigratedSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';
import { CLI, run } from './helpers/process.ts';
import { useOwnRole } from './helpers/role.ts';

/**
 * maxConnections: one budget per supervisor that its threads share. Each
 * supervisor here connects as a role of this file's own, so the server's
 * count of its connections (pg_stat_activity by usename) is its own.
 */
const db = useMigratedSchema('budget');
const role = useOwnRole(db, 'budget');

/** Samples the server's connections of this file's role until stop(), keeping the highest count. */
function sampleServerConnections(): { max(): number; stop(): Promise<void> } {
  let most = 0;
  let running = true;
  const sampling = (async () => {
    while (running) {
      const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1', [role.name]);
      most = Math.max(most, rows[0].n);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    max: () => most,
    async stop() {
      running = false;
      await sampling;
    },
  };
}

const started: Supervisor[] = [];
afterEach(async () => {
  await Promise.all(started.map((s) => s.stop({ graceMs: 0 })));
  started.length = 0;
});

async function start(options: Parameters<typeof startTestSupervisor>[1]): Promise<Supervisor> {
  const supervisor = await startTestSupervisor(db, { connectionString: role.url, listenUrl: role.url, ...options });
  started.push(supervisor);
  return supervisor;
}

describe('maxConnections', () => {
  it('runs every job exactly once with fewer connections than threads, and the server never sees more than the budget and LISTEN', async () => {
    const table = await createLedger(db, 'budget_ledger');
    const servers = sampleServerConnections();
    const ids: string[] = [];
    try {
      // 1 connection for the supervisor's own statements, 2 that 4 threads share for claims, outcomes and handlers' queries.
      const supervisor = await start({ threads: 4, concurrency: 16, maxConnections: 3, logger: silentLogger() });
      expect(supervisor.status().connections).toMatchObject({ max: 3 });
      for (let i = 0; i < 3; i++) {
        ids.push(...(await db.client.addJobs(Array.from({ length: 100 }, () => ({ task: 'ledger', payload: { table } })))));
        ids.push(...(await db.client.addJobs(Array.from({ length: 50 }, (_, n) => ({ task: 'square', payload: { n } })))));
      }
      await untilSucceeded(db, ids);
      const usage = supervisor.status().connections;
      expect(usage.inUse).toBeLessThanOrEqual(3);
      expect(usage.listen).toBe(1);
    } finally {
      await servers.stop();
    }
    expect(await drained(db, ids, table)).toEqual({ states: [{ state: 'succeeded', attempts: 1, n: ids.length }], runs: 300, jobs: 300 });
    expect(servers.max()).toBeGreaterThan(1);
    expect(servers.max()).toBeLessThanOrEqual(3 + 1);
  }, 180_000);

  it('makes a handler wait, with one warning, while handlers hold their share; claims and outcome writes go on, and nothing fails', async () => {
    const logs = capturingLogger('warn');
    // The smallest budget, 3: 1 for the supervisor, 2 its threads share, of which handlers may hold 1 (either thread's).
    const supervisor = await start({ threads: 2, concurrency: 4, maxConnections: 3, handlerConnections: 2, logger: logs.logger });
    const warm = await db.client.addJob('square', { n: 4 });
    expect(await db.client.waitForJob(warm, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
    const blockedHandlers = async () => {
      const { rows } = await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND application_name LIKE 'grapevine-handler-%' AND wait_event_type = 'Lock'`,
        [role.name],
      );
      return rows[0].n as number;
    };

    const lock = randomInt(1, 2 ** 47);
    const locker = await db.pool.connect();
    try {
      await locker.query('SELECT pg_advisory_lock($1::bigint)', [lock]);
      const holders = [await db.client.addJob('hold-handler-connection', { lock })];
      await eventually(async () => (await blockedHandlers()) === 1, 'the first handler to hold its connection');
      holders.push(await db.client.addJob('hold-handler-connection', { lock }));
      const warning = await eventually(
        () => logs.lines().find((l) => /threads are waiting for a database connection/.test(l.msg)),
        'the warning',
      );
      expect(warning).toMatchObject({ maxConnections: 3, threadConnections: 2, handlerConnections: 1 });
      expect(supervisor.status().connections).toMatchObject({ max: 3 });
      expect(supervisor.status().connections.inUse).toBeLessThanOrEqual(3);
      // The second handler still waits, and jobs that need no handler connection run meanwhile.
      for (const n of [3, 5]) {
        const id = await db.client.addJob('square', { n: n * n });
        expect(await db.client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({
          state: 'succeeded',
          attempts: 1,
          result: { root: n },
        });
      }
      expect(await blockedHandlers()).toBe(1);

      await locker.query('SELECT pg_advisory_unlock($1::bigint)', [lock]);
      for (const id of holders)
        expect(await db.client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({
          state: 'succeeded',
          attempts: 1,
          result: { held: lock },
        });
      expect(logs.lines().filter((l) => /threads are waiting/.test(l.msg))).toHaveLength(1);
      expect(supervisor.status().counters).toMatchObject({ claimErrors: 0, threadCrashes: 0 });
    } finally {
      await locker.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      locker.release();
    }
  }, 120_000);
});

describe('SCALE', () => {
  it("is refused when the connections it would allow do not fit the server's remaining ones; one that fits goes ahead, and INFO shows the connections", async () => {
    // A budget far over the server's: what the threads can open is then bounded by their number (3 each here).
    const supervisor = await start({ threads: 1, maxThreads: 256, maxConnections: 5_000, handlerConnections: 1, logger: silentLogger() });
    const control = createControl({ connectionString: db.url, schema: db.schema });
    const send = async (command: string, args?: unknown) =>
      (await control.sendAndWait(command, args, { supervisors: [supervisor.id], timeoutMs: 30_000 }))[supervisor.id];
    try {
      const { rows } = await db.pool.query(`SELECT current_setting('max_connections')::int AS max`);
      const max: number = rows[0].max;
      const tooMany = Math.ceil(max / 3) + 1;
      expect(tooMany).toBeLessThanOrEqual(256);
      const refused = await send('SCALE', tooMany);
      expect(refused).toMatchObject({ ok: false, error: { code: 'GRAPEVINE_COMMAND_REFUSED' } });
      expect(refused.error!.message).toMatch(
        new RegExp(
          `^SCALE ${tooMany} would let supervisor ${supervisor.id} open up to ${2 + tooMany * 3} connections, \\d+ more than now, ` +
            `but PostgreSQL has room for \\d+ more \\(max_connections ${max}, \\d+ reserved, \\d+ in use\\).*--max-connections`,
        ),
      );
      expect(((await send('INFO')).value as { threads: number }).threads).toBe(1);

      expect((await send('SCALE', 2)).value).toBe('OK');
      const info = (await send('INFO')).value as { threads: number; connections: Record<string, number> };
      expect(info.threads).toBe(2);
      expect(info.connections).toMatchObject({ max: 5_000, listen: 1, inUse: expect.any(Number) });
      expect(info.connections.inUse).toBeGreaterThan(0);
      await eventually(
        async () => (await control.supervisors()).find((w) => w.id === supervisor.id)?.connections?.max === 5_000,
        'the registry to show the connections',
      );
      const listed = await run([CLI, 'supervisors', '--database-url', db.url, '--schema', db.schema]);
      expect(listed.stdout).toMatch(/CONNECTIONS/);
      expect(listed.stdout).toMatch(new RegExp(`${supervisor.id} .* \\d+/5000 \\+listen `));
    } finally {
      await control.close();
    }
  });
});
