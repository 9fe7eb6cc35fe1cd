import { randomBytes, randomInt } from 'node:crypto';
import { BroadcastChannel } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../src/db.ts';
import { claimByIdsQuery } from '../src/sql/jobs.ts';
import { claimBatch } from '../threads/claim.ts';
import { addWaitTrigger, eventually, holdAdvisoryLock, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('claim_commit');
const { client, s } = db;
const holdKey = randomInt(1, 2 ** 31 - 1);

// While a test holds the lock, the commit of a claim of a job whose payload
// says holdCommit waits: the claim has answered, its commit has not.
beforeAll(() => addWaitTrigger(db, 'hold_commit', holdKey, 'commit', `NEW.state = 'running' AND NEW.payload ? 'holdCommit'`));

const holdCommits = () => holdAdvisoryLock(db, holdKey);
const stateOf = async (id: string) => (await db.pool.query(`SELECT state, attempts FROM ${s}.jobs WHERE id = $1`, [id])).rows[0];

describe('a claim', () => {
  const pool = createPool(db.url, { max: 1, applicationName: 'claim-commit-test', pipeline: true });
  afterAll(() => pool.end());

  it('answers with its jobs before its commit is durable, and says when the commit is done', async () => {
    const id = await client.addJob('noop', { holdCommit: true });
    const hold = await holdCommits();
    try {
      const claim = await claimBatch(
        pool,
        claimByIdsQuery(db.schema, { ids: [id], tasks: ['noop'], queues: null, owner: 'sup-test', thread: 1, leaseMs: 60_000 }),
      );
      expect(claim.jobs.map((j) => j.id)).toEqual([id]);
      await hold.untilWaiting(1, 'the claim to wait at its commit');
      // Not committed: everyone else still sees the job pending.
      expect(await stateOf(id)).toEqual({ state: 'pending', attempts: 0 });
      await hold.release();
      expect(await claim.committed).toBeNull();
      expect(await stateOf(id)).toEqual({ state: 'running', attempts: 1 });
    } finally {
      await hold.release();
    }
  });
});

describe('a handler started before its claim committed', () => {
  it('reaches the database through its helpers only once the claim has committed', async () => {
    const channelName = `claim-commit-${randomBytes(4).toString('hex')}`;
    const channel = new BroadcastChannel(channelName);
    const started = new Promise<void>((resolve) => {
      channel.onmessage = () => resolve();
    });
    const hold = await holdCommits();
    const supervisor = await startTestSupervisor(db, { threads: 1 });
    try {
      const id = await client.addJob('read-own-job', { holdCommit: true, channel: channelName, table: `${s}.jobs` });
      await started;
      await hold.untilWaiting(1, 'the claim to wait at its commit');
      await hold.release();
      const job = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(job).toMatchObject({ state: 'succeeded', result: { state: 'running', attempts: 1 } });
    } finally {
      await hold.release();
      channel.close();
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('whose commit fails cannot reach the database, and the job runs again', async () => {
    await db.pool.query(`CREATE TABLE IF NOT EXISTS ${s}.runs (job_id bigint, attempt integer)`);
    const channelName = `claim-commit-${randomBytes(4).toString('hex')}`;
    const channel = new BroadcastChannel(channelName);
    let starts = 0;
    const started = new Promise<void>((resolve) => {
      channel.onmessage = () => {
        if (++starts === 1) resolve();
      };
    });
    const hold = await holdCommits();
    const supervisor = await startTestSupervisor(db, { threads: 1 });
    try {
      const id = await client.addJob('read-own-job', { holdCommit: true, channel: channelName, table: `${s}.jobs`, ledger: `${s}.runs` });
      await started;
      await hold.untilWaiting(1, 'the claim to wait at its commit');
      // The claim's connection dies while it commits: the claim rolls back.
      await db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1`, [
        holdKey,
      ]);
      await hold.release();
      const job = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(job).toMatchObject({ state: 'succeeded', attempts: 1, result: { state: 'running', attempts: 1 } });
      expect(starts).toBe(2);
      // Only the run whose claim committed wrote anything.
      expect((await db.pool.query(`SELECT job_id::text, attempt FROM ${s}.runs`)).rows).toEqual([{ job_id: id, attempt: 1 }]);
      // Counted when the failed batch ends, which since slots refill on 'handled' can come after the re-run.
      await eventually(() => supervisor.status().counters.commitErrors > 0, 'the failed batch to be reported');
      expect(supervisor.status().counters.commitErrors).toBe(1);
    } finally {
      await hold.release();
      channel.close();
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('that ends before the commit has its outcome recorded once the commit is done', async () => {
    const hold = await holdCommits();
    const supervisor = await startTestSupervisor(db, { threads: 1 });
    try {
      const id = await client.addJob('noop', { holdCommit: true });
      await hold.untilWaiting(1, 'the claim to wait at its commit');
      await hold.release();
      // Written before the commit, the outcome would not see the claim and be turned away by the fence.
      expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(supervisor.status().counters.fenced).toBe(0);
    } finally {
      await hold.release();
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('that kills its thread at once is released by the supervisor, with the attempt counted', async () => {
    const hold = await holdCommits();
    // Sweeps and the dead-thread sweep out of the way: only the dispatcher's release can bring the job back.
    const supervisor = await startTestSupervisor(db, { threads: 1, sweepIntervalMs: 600_000 });
    try {
      const id = await client.addJob('exit', { holdCommit: true });
      await hold.untilWaiting(1, 'the claim to wait at its commit');
      // The thread is gone, its COMMIT was sent: the release waits for the claim's row lock.
      await eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`,
          [`%${s}.jobs WHERE id = ANY%FOR UPDATE%`],
        );
        return rows[0].n === 1;
      }, 'the release to wait for the claim');
      await hold.release();
      const job = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(job).toMatchObject({ state: 'succeeded', attempts: 2, result: { survived: 2 } });
      expect(job.lastError).toMatch(/^thread crashed/);
    } finally {
      await hold.release();
      await supervisor.stop({ graceMs: 0 });
    }
  });
});
