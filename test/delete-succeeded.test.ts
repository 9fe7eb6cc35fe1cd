import { describe, expect, it } from 'vitest';
import type { Supervisor } from '../supervisor/public.ts';
import { claimByIds, deleteSucceeded, releaseJobs } from '../src/sql/jobs.ts';
import { createTestQueue } from '../supervisor/testing.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { RECORDED_TASKS } from './helpers/queue.ts';

const db = useMigratedSchema('delete_ok');
const { client, s } = db;

function start(): Promise<Supervisor> {
  return startTestSupervisor(db, {
    threads: 2,
    concurrency: 8,
    deleteSucceeded: true,
    shutdownGraceMs: 0,
  });
}

async function rowsOf(ids: string[]) {
  const { rows } = await db.pool.query(`SELECT id::text, state, result FROM ${s}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
  return rows;
}

describe('a supervisor with deleteSucceeded', () => {
  it('deletes jobs that succeed, keeps jobs that fail, and keeps the result of a job someone waits for', async () => {
    const gate = `${s}.gate`;
    await db.pool.query(`CREATE TABLE ${gate} (open boolean NOT NULL)`);
    await db.pool.query(`INSERT INTO ${gate} VALUES (false)`);
    const supervisor = await start();
    try {
      const waited = await client.addJob('block', { gate });
      const waiting = client.waitForJob(waited, { timeoutMs: 30_000 });
      const succeeded = await client.addJobs(Array.from({ length: 40 }, (_, n) => ({ task: 'square', payload: { n } })));
      const failed = await client.addJob('permanent', {});

      // Succeeded jobs disappear; the failed one stays, parked as failed.
      await eventually(async () => (await rowsOf(succeeded)).length === 0, 'succeeded jobs to be deleted');
      await eventually(async () => (await client.getJob(failed))?.state === 'failed', 'the failing job to be parked');

      // The waiter marked its job before it finished: that job is recorded, not deleted.
      await eventually(
        async () => (await db.pool.query(`SELECT watched FROM ${s}.jobs WHERE id = $1`, [waited])).rows[0]?.watched,
        'the wait to be registered',
      );
      await db.pool.query(`UPDATE ${gate} SET open = true`);
      const job = await waiting;
      expect(job).toMatchObject({ state: 'succeeded', result: { released: true } });
      expect(await rowsOf([waited])).toEqual([{ id: waited, state: 'succeeded', result: { released: true } }]);
      expect(supervisor.status().counters.fenced).toBe(0);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('is fenced like a recorded success: a stale claim deletes nothing', async () => {
    const id = await client.addJob('square', { n: 9 });
    const claim = async (owner: string) =>
      (await claimByIds(db.pool, db.schema, { ids: [id], tasks: ['square'], queues: null, owner, thread: 1, leaseMs: 60_000 }))[0]
        .claim_token;
    const stale = await claim('sup-a');
    await releaseJobs(db.pool, db.schema, { owner: 'sup-a', jobs: [{ id, thread: 1, reason: 'given back', count: false }] });
    const current = await claim('sup-b');

    expect(await deleteSucceeded(db.pool, db.schema, { ids: [id], tokens: [stale] })).toEqual([id]);
    expect(await rowsOf([id])).toEqual([{ id, state: 'running', result: null }]);

    expect(await deleteSucceeded(db.pool, db.schema, { ids: [id], tokens: [current] })).toEqual([]);
    expect(await rowsOf([id])).toEqual([]);
  });

  it('pairs each id with its own token in a batch: tokens that belong to other jobs of the batch delete nothing', async () => {
    const ids = [await client.addJob('square', { n: 1 }), await client.addJob('square', { n: 2 })];
    // Two claims, so the two jobs hold different tokens.
    const tokens: string[] = [];
    for (const id of ids) {
      tokens.push(
        (
          await claimByIds(db.pool, db.schema, { ids: [id], tasks: ['square'], queues: null, owner: 'sup-a', thread: 1, leaseMs: 60_000 })
        )[0].claim_token,
      );
    }
    expect(tokens[0]).not.toBe(tokens[1]);

    const swapped = [tokens[1], tokens[0]];
    expect((await deleteSucceeded(db.pool, db.schema, { ids, tokens: swapped })).sort()).toEqual([...ids].sort());
    expect((await rowsOf(ids)).map((r) => r.state)).toEqual(['running', 'running']);

    expect(await deleteSucceeded(db.pool, db.schema, { ids, tokens })).toEqual([]);
    expect(await rowsOf(ids)).toEqual([]);
  });

  it('logs a deleted success as TASK_COMPLETE in the worker log, a failure and a crashed attempt as TASK_ERROR', async () => {
    const supervisor = await start();
    let stopped = false;
    try {
      const ok = await client.addJob('square', { n: 3 });
      const failed = await client.addJob('permanent', {});
      await eventually(async () => (await rowsOf([ok])).length === 0, 'the succeeded job to be deleted');
      await eventually(async () => (await client.getJob(failed))?.state === 'failed', 'the failing job to be parked');
      // Alone, so that its crash ends no other job's attempt: its first
      // attempt kills its thread, its second succeeds and is deleted.
      const crashed = await client.addJob('exit', { crashes: 1 });
      await eventually(async () => (await rowsOf([crashed])).length === 0, 'the crashed job to succeed and be deleted');
      // stop() writes what the log still holds.
      await supervisor.stop({ graceMs: 0 });
      stopped = true;
      const { rows } = await db.pool.query(
        `SELECT event, detail FROM ${s}.worker_log WHERE worker = $1 AND event IN ('TASK_COMPLETE', 'TASK_ERROR') ORDER BY id`,
        [supervisor.id],
      );
      expect(rows).toEqual(
        expect.arrayContaining([
          { event: 'TASK_COMPLETE', detail: `${ok} square` },
          { event: 'TASK_ERROR', detail: `${failed} permanent (failed)` },
          { event: 'TASK_COMPLETE', detail: `${crashed} exit` },
        ]),
      );
      // The crashed attempt: what its detail says depends on how far the retry got when the log was written.
      const crashes = rows.filter((r) => r.detail.startsWith(`${crashed} exit (`));
      expect(crashes.map((r) => r.event)).toEqual(['TASK_ERROR']);
      expect(rows).toHaveLength(4);
    } finally {
      if (!stopped) await supervisor.stop({ graceMs: 0 });
    }
  });

  it("counts a deleted success as the job's one finish in grapevine/testing's check()", async () => {
    const queue = await createTestQueue({ connectionString: db.url });
    try {
      await queue.startSupervisor({ tasks: RECORDED_TASKS, threads: 2, deleteSucceeded: true });
      await queue.client.addJobs(Array.from({ length: 50 }, (_, n) => ({ task: 'recorded', payload: { n } })));
      await queue.waitUntilDone({ timeoutMs: 30_000 });
      const result = await queue.check();
      expect(result).toMatchObject({ jobs: 0, unfinished: [], finishedTwice: [], executions: 50, ok: true });
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM "${queue.schema}".transitions WHERE state = 'succeeded'`);
      expect(rows[0].n).toBe(50);
    } finally {
      await queue.close();
    }
  });
});
