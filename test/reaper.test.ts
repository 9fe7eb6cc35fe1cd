import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Supervisor, SupervisorOptions } from '../supervisor/public.ts';
import { Maintenance } from '../supervisor/maintenance/leader.ts';
import { directDatabaseUrl, eventually, FIXTURE_TASKS, startTestSupervisor, testLogger, useMigratedSchema } from './helpers/db.ts';
import { start as startProcess } from './helpers/process.ts';

const db = useMigratedSchema('reaper');
const { client, s } = db;

const SUPERVISOR_PROCESS = path.resolve(import.meta.dirname, 'fixtures/supervisor-process.ts');

// Short enough that a lost supervisor is noticed quickly, long enough (2x the
// heartbeat) that a live one never is.
const TIMING = { leaseMs: 1_500, heartbeatIntervalMs: 200, sweepIntervalMs: 200 };

function start(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  return startTestSupervisor(db, {
    threads: 1,
    concurrency: 4,
    ...TIMING,
    reaperIntervalMs: 200,
    shutdownGraceMs: 0,
    ...options,
  });
}

/** What a supervisor that vanished leaves behind: its row, last heard from an hour ago. */
async function insertDeadSupervisor(id: string): Promise<void> {
  await db.pool.query(
    `INSERT INTO ${s}.supervisors (id, host, pid, version, threads, concurrency, status, heartbeat_at, started_at)
     VALUES ($1, 'gone-host', 999999, '0.0.0', 1, 1, 'BUSY', now() - interval '1 hour', now() - interval '2 hours')`,
    [id],
  );
}

/** A job some supervisor claimed (attempt 1) and holds until `leaseUntil` (an SQL expression). */
async function insertRunningJob(owner: string, leaseUntil: string, payload: unknown = { n: 16 }): Promise<string> {
  const { rows } = await db.pool.query(
    `INSERT INTO ${s}.jobs (task, payload, state, attempts, max_attempts, locked_by, locked_thread, claim_token, lease_until, started_at)
     VALUES ('square', $2, 'running', 1, 5, $1, 7, nextval('${db.schema}.claim_tokens'), ${leaseUntil}, now() - interval '1 hour')
     RETURNING id::text AS id`,
    [owner, JSON.stringify(payload)],
  );
  return rows[0].id;
}

async function jobRows(ids: string[]) {
  const { rows } = await db.pool.query(`SELECT * FROM ${s}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
  return rows;
}

async function supervisorStatus(id: string): Promise<string | undefined> {
  const { rows } = await db.pool.query(`SELECT status FROM ${s}.supervisors WHERE id = $1`, [id]);
  return rows[0]?.status;
}

/** A table the `block` fixture polls: its jobs run until open() is called. */
async function createGate(name: string): Promise<{ table: string; open(): Promise<void> }> {
  const table = `${s}."gate_${name}"`;
  await db.pool.query(`CREATE TABLE ${table} (open boolean NOT NULL)`);
  await db.pool.query(`INSERT INTO ${table} VALUES (false)`);
  return { table, open: async () => void (await db.pool.query(`UPDATE ${table} SET open = true`)) };
}

/** Collects the id notifications on the schema's jobs channel. */
async function listenForJobs(): Promise<{ notified(id: string): Promise<boolean>; close(): Promise<void> }> {
  const conn = new pg.Client({ connectionString: directDatabaseUrl() });
  await conn.connect();
  const payloads: string[] = [];
  conn.on('notification', (m) => payloads.push(m.payload ?? ''));
  await conn.query(`LISTEN "${db.schema}_jobs"`);
  return {
    async notified(id) {
      // A round trip on the listening connection delivers anything already committed.
      await conn.query('SELECT 1');
      return payloads.some((p) =>
        p.split(',').some((token) => {
          const [first, last = first] = token.split('-').map(Number);
          return Number(id) >= first && Number(id) <= last;
        }),
      );
    },
    close: () => conn.end(),
  };
}

describe('the reaper', () => {
  it('returns the jobs of a supervisor whose heartbeat stopped to pending, notifies them, and they run again', async () => {
    await insertDeadSupervisor('dead-1');
    // One lease ran out; the other is still live, but its owner is gone.
    const expired = await insertRunningJob('dead-1', `now() - interval '1 second'`, { n: 4 });
    const liveLease = await insertRunningJob('dead-1', `now() + interval '1 hour'`, { n: 9 });
    const listener = await listenForJobs();
    // Only reapNow() reaps here, and the supervisor is paused so the reaped jobs stay visible as pending.
    const supervisor = await start({ reaperIntervalMs: 3_600_000 });
    try {
      supervisor.pause();
      // A pull sent before the pause could still claim the jobs the moment they are reaped.
      await eventually(() => supervisor.status().inFlight === 0, 'claims sent before the pause to finish');
      const reaped = await supervisor.reapNow();
      expect(reaped.leader).toBe(true);
      expect([...reaped.reapedJobs].sort()).toEqual([expired, liveLease].sort());
      expect(await supervisorStatus('dead-1')).toBe('LOST');

      for (const row of await jobRows([expired, liveLease])) {
        expect(row).toMatchObject({ state: 'pending', attempts: 1, claim_token: null, lease_until: null });
        expect(row.last_error).toMatch(/lease expired: dead-1 stopped renewing it/);
        expect(await listener.notified(row.id)).toBe(true);
      }

      supervisor.resume();
      const done = await Promise.all([expired, liveLease].map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
      expect(done.map((j) => [j.state, j.attempts, j.lockedBy])).toEqual([
        ['succeeded', 2, supervisor.id],
        ['succeeded', 2, supervisor.id],
      ]);
      expect(done.map((j) => j.result)).toMatchObject([{ root: 2 }, { root: 3 }]);
    } finally {
      await listener.close();
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('leaves jobs alone whose owner is alive and whose lease is live', async () => {
    const supervisor = await start({ reaperIntervalMs: 3_600_000 });
    try {
      // Owned by the live supervisor itself but unknown to its dispatcher, so
      // nothing renews the lease: only the reaper could take it away.
      const id = await insertRunningJob(supervisor.id, `now() + interval '1 hour'`);
      const reaped = await supervisor.reapNow();
      expect(reaped.leader).toBe(true);
      expect(reaped.reapedJobs).not.toContain(id);
      const [row] = await jobRows([id]);
      expect(row).toMatchObject({ state: 'running', attempts: 1, locked_by: supervisor.id });
      expect(await supervisorStatus(supervisor.id)).not.toBe('LOST');
      await db.pool.query(`DELETE FROM ${s}.jobs WHERE id = $1`, [id]);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('lets only one of two supervisors reap in a tick', async () => {
    await insertDeadSupervisor('dead-2');
    const id = await insertRunningJob('dead-2', `now() - interval '1 second'`);
    const [a, b] = await Promise.all([start({ reaperIntervalMs: 3_600_000 }), start({ reaperIntervalMs: 3_600_000 })]);
    // Holding the dead supervisor's row keeps whichever reaper leads inside
    // its transaction (and its lock) while the other one tries: marking it
    // LOST waits for the row. (A held job row would not: the reaper skips
    // locked jobs, leaving them for its next round.)
    const holder = await db.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${s}.supervisors WHERE id = 'dead-2' FOR UPDATE`);
      const ticks = [a.reapNow(), b.reapNow()];
      const first = await Promise.race(ticks);
      expect(first.leader).toBe(false);
      await holder.query('COMMIT');
      const results = await Promise.all(ticks);
      expect(results.filter((r) => r.leader)).toHaveLength(1);
      expect(results.find((r) => r.leader)!.reapedJobs).toEqual([id]);
      expect((await client.waitForJob(id, { timeoutMs: 30_000 })).state).toBe('succeeded');
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      holder.release();
      await Promise.all([a.stop({ graceMs: 0 }), b.stop({ graceMs: 0 })]);
    }
  });

  it('reaps once per interval across supervisors: a timed tick right after another supervisor reaped skips, a forced one reaps', async () => {
    // Two supervisors' reapers on one schema, ticked by hand: an hour's
    // interval means nothing elapses between the ticks that would make the
    // second one due.
    const reaper = () =>
      new Maintenance({
        pool: db.pool,
        schema: db.schema,
        leaseMs: 1_500,
        intervalMs: 3_600_000,
        retentionMs: 86_400_000,
        logger: testLogger(),
      });
    const [a, b] = [reaper(), reaper()];
    // Earlier tests' supervisors reaped on their own timers.
    await db.pool.query(`UPDATE ${s}.maintenance SET ran_at = '-infinity' WHERE chore = 'reap'`);
    await insertDeadSupervisor('dead-pace');
    const first = await insertRunningJob('dead-pace', `now() - interval '1 second'`);
    expect(await a.tick()).toMatchObject({ leader: true, reapedJobs: [first] });

    const second = await insertRunningJob('dead-pace', `now() - interval '1 second'`);
    // Both took the lock (nobody else held it) and left the reaping to later.
    expect(await b.tick()).toMatchObject({ leader: false, paced: true, reapedJobs: [] });
    expect(await a.tick()).toMatchObject({ leader: false, paced: true, reapedJobs: [] });
    expect((await jobRows([second]))[0].state).toBe('running');

    expect(await b.tick({ force: true })).toMatchObject({ leader: true, reapedJobs: [second] });
    await db.pool.query(`DELETE FROM ${s}.jobs WHERE id = ANY($1::bigint[])`, [[first, second]]);
  });

  it('reaps on a timed tick when its row is missing, and records the run again', async () => {
    const reaper = new Maintenance({
      pool: db.pool,
      schema: db.schema,
      leaseMs: 1_500,
      intervalMs: 3_600_000,
      retentionMs: 86_400_000,
      logger: testLogger(),
    });
    await db.pool.query(`DELETE FROM ${s}.maintenance WHERE chore = 'reap'`);
    await insertDeadSupervisor('dead-row');
    const id = await insertRunningJob('dead-row', `now() - interval '1 second'`);
    expect(await reaper.tick()).toMatchObject({ leader: true, reapedJobs: [id] });
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.maintenance WHERE chore = 'reap'`)).rows[0].n).toBe(1);
    expect(await reaper.tick()).toMatchObject({ leader: false, paced: true });
    await db.pool.query(`DELETE FROM ${s}.jobs WHERE id = $1`, [id]);
  });

  it('reaps on a timed tick when the last run is dated in the future (the server clock went back)', async () => {
    const reaper = new Maintenance({
      pool: db.pool,
      schema: db.schema,
      leaseMs: 1_500,
      intervalMs: 3_600_000,
      retentionMs: 86_400_000,
      logger: testLogger(),
    });
    await db.pool.query(`UPDATE ${s}.maintenance SET ran_at = now() + interval '1 day' WHERE chore = 'reap'`);
    await insertDeadSupervisor('dead-clock');
    const id = await insertRunningJob('dead-clock', `now() - interval '1 second'`);
    expect(await reaper.tick()).toMatchObject({ leader: true, reapedJobs: [id] });
    const { rows } = await db.pool.query(`SELECT ran_at <= now() AS sane FROM ${s}.maintenance WHERE chore = 'reap'`);
    expect(rows[0].sane).toBe(true);
    await db.pool.query(`DELETE FROM ${s}.jobs WHERE id = $1`, [id]);
  });

  it('hands the jobs of a SIGKILLed supervisor process to another supervisor once their lease runs out, and marks it LOST', async () => {
    const gate = await createGate('sigkill');
    const doomed = startProcess([SUPERVISOR_PROCESS], {
      DATABASE_URL: db.url,
      GRAPEVINE_TEST_SUPERVISOR: JSON.stringify({
        schema: db.schema,
        tasks: FIXTURE_TASKS,
        threads: 1,
        concurrency: 4,
        ...TIMING,
        reaperIntervalMs: 200,
      }),
    });
    let survivor: Supervisor | null = null;
    try {
      const doomedId = (await doomed.waitFor(/ready \S+/)).slice('ready '.length);
      const ids = await client.addJobs([1, 2, 3].map(() => ({ task: 'block', payload: { gate: gate.table } })));
      await eventually(async () => {
        const rows = await jobRows(ids);
        return rows.every((r) => r.state === 'running' && r.locked_by === doomedId);
      }, 'the child supervisor to run all three jobs');

      doomed.child.kill('SIGKILL');
      expect((await doomed.exited).signal).toBe('SIGKILL');

      survivor = await start();
      const takenOver = await eventually(async () => {
        const rows = await jobRows(ids);
        return rows.every((r) => r.state === 'running' && r.locked_by === survivor!.id) ? rows : null;
      }, 'the surviving supervisor to claim the jobs of the killed one');
      for (const row of takenOver) {
        expect(row.attempts).toBe(2);
        expect(row.last_error).toMatch(new RegExp(`lease expired: ${doomedId} stopped renewing it`));
      }
      expect(await supervisorStatus(doomedId)).toBe('LOST');

      await gate.open();
      const done = await Promise.all(ids.map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
      expect(done.map((j) => [j.state, j.attempts, j.lockedBy])).toEqual(ids.map(() => ['succeeded', 2, survivor!.id]));
    } finally {
      if (doomed.child.exitCode === null && doomed.child.signalCode === null) doomed.child.kill('SIGKILL');
      await survivor?.stop({ graceMs: 0 });
    }
  });
});
