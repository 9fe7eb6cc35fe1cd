// A job whose handler has returned but whose outcome write is held up (a
// row lock, a slow disk) is no longer running anything: it must not keep its
// slot, and its timeout must not terminate the thread.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createClient, type Supervisor } from '../supervisor/public.ts';
import { addWaitTrigger, eventually, holdAdvisoryLock, startTestSupervisor, useTestSchema, type HeldLock } from './helpers/db.ts';

const db = useTestSchema('slow_outcome');
const client = createClient({ connectionString: db.url, schema: db.schema });
const HOLD_KEY = 73_911;
let sup: Supervisor | null = null;
let held: HeldLock | null = null;

afterEach(async () => {
  await held?.release();
  held = null;
  await sup?.stop({ graceMs: 0 });
  sup = null;
  await db.pool.query(`DROP TRIGGER IF EXISTS hold_outcome ON "${db.schema}".jobs; DROP FUNCTION IF EXISTS "${db.schema}".hold_outcome()`);
  // The triggers look at the whole table: each test starts from an empty one.
  await db.pool.query(`DELETE FROM "${db.schema}".jobs`).catch(() => {});
});
afterAll(() => client.close());

/** Outcome writes that leave a row matching `where` wait for the lock: an AFTER trigger sees its own statement's rows. */
async function holdWrites(where: string) {
  await client.migrate();
  await addWaitTrigger(db, 'hold_outcome', HOLD_KEY, 'statement', `EXISTS (SELECT 1 FROM "${db.schema}".jobs WHERE ${where})`);
  held = await holdAdvisoryLock(db, HOLD_KEY);
  return held;
}
const holdSuccessWrites = () => holdWrites(`state = 'succeeded'`);

async function state(id: string): Promise<string> {
  const { rows } = await db.pool.query(`SELECT state FROM "${db.schema}".jobs WHERE id = $1`, [id]);
  return rows[0].state;
}

describe('a job whose outcome write is held up', () => {
  it('gives its slot to the next job while the write waits', async () => {
    const lock = await holdSuccessWrites();
    sup = await startTestSupervisor(db, { threads: 1, concurrency: 1 });
    const first = await client.addJob('noop', {});
    await lock.untilWaiting(1, "the first job's outcome write to wait");
    // One thread with one slot: the second job can only start if the first one's slot was freed.
    const second = await client.addJob('noop', {});
    await eventually(async () => (await state(second)) !== 'pending', 'the second job to be claimed');
    expect(await state(first)).toBe('running');
    await lock.release();
    expect(await client.waitForJob(first)).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(await client.waitForJob(second)).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  it('keeps a batch that queued behind outcome writes from claiming once the supervisor is paused', async () => {
    const lock = await holdSuccessWrites();
    // No sweeps: each job below is taken by its notification, into a batch of its own.
    sup = await startTestSupervisor(db, { threads: 1, concurrency: 1, sweepIntervalMs: 600_000 });
    await eventually(() => sup!.status().inFlight === 0, 'the start-up pull to come back');
    const first = await client.addJob('noop', {});
    await lock.untilWaiting(1, "the first job's outcome write to wait");
    // The next ones' writes queue behind the first's in the thread. A batch
    // stays in flight until its outcomes are written, and at most twice the
    // slots (the thread may hold 2 x concurrency: claim-limit.ts), so 4 here.
    const writing = [first];
    for (let i = 0; i < 3; i++) {
      const id = await client.addJob('noop', {});
      await eventually(async () => (await state(id)) === 'running', 'the job to run');
      writing.push(id);
    }
    // Four batches are writing outcomes, the most allowed: the next job's batch has to wait.
    const batches = sup.status().counters.batches;
    const third = await client.addJob('noop', {});
    await eventually(() => sup!.status().counters.batches > batches, "the last job's batch to queue");
    sup.pause();
    await lock.release();
    for (const id of writing) expect(await client.waitForJob(id)).toMatchObject({ state: 'succeeded' });
    await eventually(() => sup!.status().inFlight === 0, 'the queued batch to be given up');
    expect(await state(third)).toBe('pending');
    sup.resume();
    expect(await client.waitForJob(third)).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  it('is not timed out, and its thread is not terminated, however long the write takes', async () => {
    const lock = await holdSuccessWrites();
    const killGraceMs = 100;
    sup = await startTestSupervisor(db, { threads: 1, killGraceMs });
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
  });

  it('does not get its thread terminated when its handler stopped at the timeout and only the write is slow', async () => {
    const lock = await holdWrites(`last_error LIKE 'AbortError%'`);
    const killGraceMs = 100;
    sup = await startTestSupervisor(db, { threads: 1, killGraceMs, retryBaseMs: 20 });
    const timeoutMs = 100;
    // Honours its AbortSignal on the first attempt, succeeds on the second.
    const id = await client.addJob('hang', { cooperative: true, succeedFrom: 2 }, { timeoutMs });
    await lock.untilWaiting(1, "the aborted attempt's outcome write to wait");
    await new Promise((r) => setTimeout(r, 5 * (timeoutMs + killGraceMs)));
    await lock.release();
    const job = await client.waitForJob(id);
    expect(job).toMatchObject({ state: 'succeeded', attempts: 2 });
    expect(job.lastError).toMatch(/AbortError: job timed out after 100 ms$/);
    expect(sup.status().threads.map((t) => t.threadId)).toContain(job.lockedThread);
    expect(sup.status().restarts).toBe(0);
  });
});
