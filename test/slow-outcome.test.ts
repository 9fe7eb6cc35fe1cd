// A job whose handler has returned but whose outcome write is held up (a
// row lock, a slow disk) is no longer running anything: it must not keep its
// slot, and its timeout must not terminate the thread.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createClient, startSupervisor, type Supervisor } from '../src/index.ts';
import { addWaitTrigger, eventually, testLogger, FIXTURE_TASKS, holdAdvisoryLock, useTestSchema } from './helpers/db.ts';

const db = useTestSchema('slow_outcome');
const client = createClient({ connectionString: db.url, schema: db.schema });
const HOLD_KEY = 73_911;
let sup: Supervisor | null = null;

afterEach(async () => {
  await sup?.stop({ graceMs: 0 });
  sup = null;
  await db.pool.query(`DROP TRIGGER IF EXISTS hold_outcome ON "${db.schema}".jobs; DROP FUNCTION IF EXISTS "${db.schema}".hold_outcome()`);
});
afterAll(() => client.close());

/** The outcome write of a succeeding job waits for the lock: an AFTER trigger sees its own statement's rows. */
async function holdSuccessWrites() {
  await client.migrate();
  await addWaitTrigger(db, 'hold_outcome', HOLD_KEY, 'statement', `EXISTS (SELECT 1 FROM "${db.schema}".jobs WHERE state = 'succeeded')`);
  return holdAdvisoryLock(db, HOLD_KEY);
}

async function state(id: string): Promise<string> {
  const { rows } = await db.pool.query(`SELECT state FROM "${db.schema}".jobs WHERE id = $1`, [id]);
  return rows[0].state;
}

describe('a job whose outcome write is held up', () => {
  it('gives its slot to the next job while the write waits', async () => {
    const lock = await holdSuccessWrites();
    try {
      sup = await startSupervisor({ connectionString: db.url, schema: db.schema, tasks: FIXTURE_TASKS, threads: 1, concurrency: 1, logger: testLogger() });
      const first = await client.addJob('noop', {});
      await lock.untilWaiting(1, "the first job's outcome write to wait");
      // One thread with one slot: the second job can only start if the first one's slot was freed.
      const second = await client.addJob('noop', {});
      await eventually(async () => (await state(second)) !== 'pending', 'the second job to be claimed');
      expect(await state(first)).toBe('running');
      await lock.release();
      expect(await client.waitForJob(first)).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(await client.waitForJob(second)).toMatchObject({ state: 'succeeded', attempts: 1 });
    } finally {
      await lock.release();
    }
  });

  it('is not timed out, and its thread is not terminated, however long the write takes', async () => {
    const lock = await holdSuccessWrites();
    try {
      const killGraceMs = 100;
      sup = await startSupervisor({ connectionString: db.url, schema: db.schema, tasks: FIXTURE_TASKS, threads: 1, killGraceMs, logger: testLogger() });
      const timeoutMs = 100;
      const id = await client.addJob('noop', {}, { timeoutMs });
      await lock.untilWaiting(1, 'the outcome write to wait');
      // Well past the timeout and the grace: a timer still running for this
      // job would have terminated the thread by now.
      await new Promise((r) => setTimeout(r, 5 * (timeoutMs + killGraceMs)));
      await lock.release();
      const job = await client.waitForJob(id);
      expect(job).toMatchObject({ state: 'succeeded', attempts: 1, lastError: null });
      expect(sup.status().threads.map((t) => t.threadId)).toContain(job.lockedThread);
      expect(sup.status().restarts).toBe(0);
    } finally {
      await lock.release();
    }
  });
});
