import { randomInt } from 'node:crypto';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { addWaitTrigger, eventually, holdAdvisoryLock, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('backlog');
const { client, s } = db;
const holdKey = randomInt(1, 2 ** 31 - 1);

// While a test holds the lock, every claim waits at its end, after it has
// read the table: a claim can be stopped between seeing the table and
// reporting what it found.
beforeAll(() => addWaitTrigger(db, 'hold_claims', holdKey, 'statement', `current_query() ~ 'claim_(next|ids)\\('`));

const holdClaims = () => holdAdvisoryLock(db, holdKey);

function start(threads: number, concurrency: number) {
  // Sweeps ten minutes apart: only the dispatcher's own bookkeeping can bring
  // the jobs below in.
  return startTestSupervisor(db, {
    threads,
    concurrency,
    sweepIntervalMs: 600_000,
    shutdownGraceMs: 0,
  });
}

describe('ids the dispatcher could not place right away', () => {
  it('run when a pull sent before they were committed comes back empty afterwards', async () => {
    const hold = await holdClaims();
    // One thread with two slots: the start-up pull takes both.
    const supervisor = await start(1, 2);
    try {
      await hold.untilWaiting(1, 'the start-up pull to have read the empty table');
      expect(supervisor.status().inFlight).toBe(2);
      const late = await client.addJob('noop', {});
      // Its id does not fit: it is left to the table and the backlog flag.
      await eventually(() => supervisor.status().counters.overflowIds > 0, 'the late id to overflow');
      // The pull now reports an empty table, which was true only before the late job.
      await hold.release();
      expect(await client.waitForJob(late, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
    } finally {
      await hold.release();
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('run when the thread they were sent to dies before claiming them', async () => {
    // One thread with four slots and two connections for claims.
    const supervisor = await start(1, 4);
    await eventually(() => supervisor.status().inFlight === 0, 'the start-up pull to come back');
    const hold = await holdClaims();
    try {
      // Two claims take both of the thread's claim connections and wait...
      const first = await client.addJob('noop', {});
      await hold.untilWaiting(1, 'the first claim to wait');
      const second = await client.addJob('noop', {});
      await hold.untilWaiting(2, 'the second claim to wait');
      // ...so this job's batch reaches the thread but cannot claim yet.
      const third = await client.addJob('noop', {});
      await eventually(() => supervisor.status().inFlight === 3, 'the third job to be sent to the thread');
      const threadId = supervisor.status().threads[0].threadId;
      expect(supervisor.killThread(threadId)).toBe(threadId);
      await eventually(() => supervisor.status().threads.some((t) => t.threadId !== threadId), 'a replacement thread');
      await hold.release();
      // The two waiting claims commit for a dead thread and are released by
      // the sweep after a thread's death; the third was never claimed.
      for (const id of [first, second, third]) {
        expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
      }
    } finally {
      await hold.release();
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('run when a pull passed over them because another statement held them for a moment', async () => {
    const supervisor = await start(1, 2);
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    try {
      await eventually(() => supervisor.status().inFlight === 0, 'the start-up pull to come back');
      supervisor.pause();
      const id = await client.addJob('noop', {});
      // Held the way a waitForJob() mark or another supervisor's claim holds
      // a row: SKIP LOCKED passes over it.
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM ${s}.jobs WHERE id = $1 FOR UPDATE`, [id]);
      const batches = supervisor.status().counters.batches;
      supervisor.resume();
      // The first pull finds nothing it can take, yet the job is due: it pulls again.
      await eventually(() => supervisor.status().counters.batches >= batches + 2, 'a second pull after one that came back short');
      await locker.query('ROLLBACK');
      expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
    } finally {
      await locker.end();
      await supervisor.stop({ graceMs: 0 });
    }
  });
});
