import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, FIXTURE_TASKS, startTestSupervisor, useMigratedSchema, type MigratedTestDatabase } from './helpers/db.ts';
import { ROOT, start } from './helpers/process.ts';

/** Preloaded with --import: the process and its threads see a shifted wall clock. */
const SHIFT_CLOCK = path.resolve(import.meta.dirname, 'fixtures/shift-clock.mjs');
/** The grapevine/testing child: a supervisor in its own process, stopped with SIGTERM. */
const SUPERVISOR_CHILD = path.join(ROOT, 'supervisor/testing-child.ts');

const TIMING = { leaseMs: 2_000, heartbeatIntervalMs: 200, reaperIntervalMs: 200, sweepIntervalMs: 200, shutdownGraceMs: 0 };

/** A supervisor process whose wall clock is off by `shiftMs`; it takes only jobs of queue `queue`. */
async function startSkewedSupervisor(db: MigratedTestDatabase, shiftMs: number, queue: string) {
  const child = start(['--import', SHIFT_CLOCK, SUPERVISOR_CHILD], {
    GRAPEVINE_TEST_CLOCK_SHIFT_MS: String(shiftMs),
    GRAPEVINE_TEST_CHILD: JSON.stringify({
      connectionString: db.url,
      schema: db.schema,
      tasks: FIXTURE_TASKS,
      threads: 1,
      concurrency: 4,
      queues: [queue],
      ...TIMING,
    }),
  });
  const id = (await child.waitFor(/ready \S+/)).slice('ready '.length);
  return {
    id,
    async stop() {
      child.child.kill('SIGTERM');
      return (await child.exited).code;
    },
    kill: () => child.child.kill('SIGKILL'),
  };
}

/** Reads of one schema's tables, by the database's clock. */
function tables(db: MigratedTestDatabase) {
  const { s } = db;
  return {
    async dbNow(): Promise<number> {
      const { rows } = await db.pool.query('SELECT now() AS now');
      return rows[0].now.getTime();
    },
    async heartbeatAt(id: string): Promise<number> {
      const { rows } = await db.pool.query(`SELECT heartbeat_at FROM ${s}.supervisors WHERE id = $1`, [id]);
      return rows[0].heartbeat_at.getTime();
    },
    async jobRow(id: string) {
      const { rows } = await db.pool.query(`SELECT * FROM ${s}.jobs WHERE id = $1`, [id]);
      return rows[0];
    },
    async supervisorStatus(id: string): Promise<string> {
      const { rows } = await db.pool.query(`SELECT status FROM ${s}.supervisors WHERE id = $1`, [id]);
      return rows[0].status;
    },
  };
}

// Each skew in a schema of its own, so that its supervisor is the only one
// that reaps there and the two cases, which mostly wait on heartbeats, run
// side by side.
const SKEWS = [
  { label: '5 minutes ahead of', shiftMs: 300_000, tag: 'ahead', db: useMigratedSchema('clock_ahead') },
  { label: '5 minutes behind', shiftMs: -300_000, tag: 'behind', db: useMigratedSchema('clock_behind') },
];

describe.concurrent('clock skew', () => {
  describe.each(SKEWS)('a supervisor whose clock runs $label the database', ({ shiftMs, tag, db }) => {
    const { client, s } = db;
    const { dbNow, heartbeatAt, jobRow, supervisorStatus } = tables(db);
    it('runs due jobs, leaves a job due in 60 s by the database clock alone until it is due, and never reaps the live job of another supervisor', async () => {
      const gate = `${s}."gate_${tag}"`;
      await db.pool.query(`CREATE TABLE ${gate} (open boolean NOT NULL); INSERT INTO ${gate} VALUES (false)`);
      const skewedQueue = `skewed-${tag}`;
      const normalQueue = `normal-${tag}`;
      const skewed = await startSkewedSupervisor(db, shiftMs, skewedQueue);
      // The correct clock's supervisor holds a live job and never reaps, so every
      // reaper tick in this schema is the skewed supervisor's.
      const normal = await startTestSupervisor(db, {
        threads: 1,
        concurrency: 2,
        queues: [normalQueue],
        ...TIMING,
        reaperIntervalMs: 600_000,
      });
      try {
        const clock = await client.waitForJob(await client.addJob('report-clock', {}, { queue: skewedQueue }), { timeoutMs: 30_000 });
        const now = await dbNow();
        const seen = clock.result as { dateNow: number; newDate: number };
        // The preload reached the threads (a minute of slack for a slow machine, nowhere near 5).
        expect(Math.abs(seen.dateNow - now - shiftMs)).toBeLessThan(60_000);
        expect(Math.abs(seen.newDate - now - shiftMs)).toBeLessThan(60_000);

        const live = await client.addJob('block', { gate }, { queue: normalQueue });
        await eventually(async () => (await jobRow(live))?.state === 'running', 'the other supervisor to run its job');
        const runAt = new Date((await dbNow()) + 60_000);
        const future = await client.addJob('square', { n: 49 }, { queue: skewedQueue, runAt });

        const due = await client.addJob('square', { n: 81 }, { queue: skewedQueue });
        expect(await client.waitForJob(due, { timeoutMs: 30_000 })).toMatchObject({
          state: 'succeeded',
          lockedBy: skewed.id,
          result: { root: 9 },
        });

        // Let the skewed supervisor heartbeat (and sweep and reap: same interval)
        // well past the other's lease, so a clock mistake would have shown.
        const firstBeat = await heartbeatAt(skewed.id);
        await eventually(
          async () => (await heartbeatAt(skewed.id)) - firstBeat > TIMING.leaseMs + 1_000,
          'the skewed supervisor to outlive a lease',
        );
        expect(await jobRow(future)).toMatchObject({ state: 'pending', attempts: 0, locked_by: null });
        expect(await jobRow(live)).toMatchObject({ state: 'running', attempts: 1, locked_by: normal.id, last_error: null });
        expect(await supervisorStatus(normal.id)).not.toBe('LOST');
        expect(await supervisorStatus(skewed.id)).not.toBe('LOST');

        // Once the database says it is due, it runs.
        expect(await client.runDueNow()).toBe(1);
        expect(await client.waitForJob(future, { timeoutMs: 30_000 })).toMatchObject({
          state: 'succeeded',
          attempts: 1,
          lockedBy: skewed.id,
          result: { root: 7 },
        });
        await db.pool.query(`UPDATE ${gate} SET open = true`);
        expect(await client.waitForJob(live, { timeoutMs: 30_000 })).toMatchObject({
          state: 'succeeded',
          attempts: 1,
          lockedBy: normal.id,
        });
      } finally {
        await normal.stop({ graceMs: 0 });
        const code = await skewed.stop();
        expect(code).toBe(0);
      }
    });
  });
});
