import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSchedules, GrapevineError, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, testLogger, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('task_policy');
const { client, s } = db;

const POLICY_TASKS = path.resolve(import.meta.dirname, 'fixtures/policy-tasks');
const BAD_POLICIES = path.resolve(import.meta.dirname, 'fixtures/bad-policies');

async function jobRow(id: string) {
  const { rows } = await db.pool.query(
    `SELECT state, attempts, max_attempts, max_attempts_given, last_error,
            (extract(epoch FROM run_at - started_at) * 1000)::float8 AS delay_ms
       FROM ${s}.jobs WHERE id = $1`,
    [id],
  );
  return rows[0];
}

/** Waits for the job to be pending again after a failed run (attempt `attempt`), then makes it due. */
async function retriedAfter(id: string, attempt: number) {
  const row = await eventually(async () => {
    const r = await jobRow(id);
    return r.state === 'pending' && r.attempts === attempt ? r : null;
  }, `job ${id} to wait for its retry after attempt ${attempt}`);
  await db.pool.query(`UPDATE ${s}.jobs SET run_at = now() WHERE id = $1`, [id]);
  return row;
}

describe("a task module's retry policy and timeout", () => {
  let supervisor: Supervisor;
  beforeAll(async () => {
    supervisor = await startTestSupervisor(db, {
      tasks: POLICY_TASKS,
      threads: 1,
      concurrency: 4,
      sweepIntervalMs: 100,
      shutdownGraceMs: 0,
      // The supervisor's own backoff, which the tasks' policies replace.
      retryBaseMs: 1,
      retryMaxMs: 1,
    });
  });
  afterAll(() => supervisor?.stop({ graceMs: 0 }));

  it('takes its maxAttempts and fixed backoff, and a job given maxAttempts keeps its own', async () => {
    const byTask = await client.addJob('fixed', {});
    const byJob = await client.addJob('fixed', {}, { maxAttempts: 2 });
    for (const id of [byTask, byJob]) {
      const first = await retriedAfter(id, 1);
      expect(first.delay_ms).toBeGreaterThanOrEqual(60_000);
      expect(first.delay_ms).toBeLessThan(120_000);
    }
    // Its first failure wrote the task's number into the row, which keeps it from then on.
    expect(await jobRow(byTask)).toMatchObject({ max_attempts: 3, max_attempts_given: true });
    expect(await jobRow(byJob)).toMatchObject({ max_attempts: 2, max_attempts_given: true });
    await retriedAfter(byTask, 2);
    const ends = await Promise.all([byTask, byJob].map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
    expect(ends.map((j) => [j.state, j.attempts, j.maxAttempts])).toEqual([
      ['failed', 3, 3],
      ['failed', 2, 2],
    ]);
  });

  it('takes its exponential backoff: base, then double', async () => {
    const id = await client.addJob('exponential', {});
    const first = await retriedAfter(id, 1);
    const second = await retriedAfter(id, 2);
    expect(first.delay_ms).toBeGreaterThanOrEqual(40_000);
    expect(first.delay_ms).toBeLessThan(70_000);
    expect(second.delay_ms).toBeGreaterThanOrEqual(80_000);
    expect(second.delay_ms).toBeLessThan(100_000);
    const third = await retriedAfter(id, 3);
    // Capped at maxMs.
    expect(third.delay_ms).toBeGreaterThanOrEqual(100_000);
    expect(third.delay_ms).toBeLessThan(130_000);
    expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'failed', attempts: 4 });
  });

  it('lets a backoff function end the job failed, or retry it up to the task maxAttempts', async () => {
    const stopped = await client.addJob('decides', { message: 'please stop' });
    const retried = await client.addJob('decides', { message: 'try again' });
    const ends = await Promise.all([stopped, retried].map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
    expect(ends.map((j) => [j.state, j.attempts])).toEqual([
      ['failed', 1],
      ['failed', 3],
    ]);
    expect(ends[0].lastError).toMatch(/please stop/);
  });

  it("gives a schedule's jobs the task's maxAttempts when the schedule sets none, and the schedule's when it does", async () => {
    const schedules = createSchedules({ connectionString: db.url, schema: db.schema });
    try {
      await schedules.add({ name: 'fixed-by-task', cron: '* * * * * *', task: 'fixed' });
      await schedules.add({ name: 'fixed-by-schedule', cron: '* * * * * *', task: 'fixed', maxAttempts: 2 });
      // Its first tick's job, once its first run failed: the failure wrote the job's attempts in.
      const failedOnce = (name: string) =>
        eventually(async () => {
          const { rows } = await db.pool.query(
            `SELECT max_attempts, max_attempts_given FROM ${s}.jobs WHERE schedule = $1 AND attempts = 1 AND state = 'pending'
              ORDER BY scheduled_for LIMIT 1`,
            [name],
          );
          return rows[0] ?? null;
        }, `a job of schedule ${name} to have failed once`);
      expect(await failedOnce('fixed-by-task')).toEqual({ max_attempts: 3, max_attempts_given: true });
      expect(await failedOnce('fixed-by-schedule')).toEqual({ max_attempts: 2, max_attempts_given: true });
      expect((await schedules.list()).map((x) => [x.name, x.maxAttempts])).toEqual([
        ['fixed-by-schedule', 2],
        ['fixed-by-task', null],
      ]);
    } finally {
      await db.pool.query(`DELETE FROM ${s}.schedules WHERE name IN ('fixed-by-task', 'fixed-by-schedule')`);
      await schedules.close();
      await db.pool.query(`DELETE FROM ${s}.jobs WHERE schedule IS NOT NULL`);
    }
  });

  it('counts runs that crash their thread against the task maxAttempts, though no failure ever wrote it in', async () => {
    const id = await client.addJob('crashes', {});
    expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'failed', attempts: 2, maxAttempts: 2 });
  });

  it('takes its timeoutMs, which a job timeoutMs overrides', async () => {
    const byTask = await client.addJob('slow', {}, { maxAttempts: 1 });
    const byJob = await client.addJob('slow', {}, { maxAttempts: 1, timeoutMs: 60_000 });
    const ends = await Promise.all([byTask, byJob].map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
    expect(ends[0]).toMatchObject({ state: 'failed' });
    expect(ends[0].lastError).toMatch(/timed out after 300 ms/);
    expect(ends[1]).toMatchObject({ state: 'succeeded', result: 'slept' });
  });
});

describe('a job enqueued without maxAttempts', () => {
  it('is marked so by every way of enqueueing, and stores the default meanwhile', async () => {
    // A task no supervisor runs: the rows stay as enqueued.
    const ids = [
      await client.addJob('nobody-runs', {}),
      await client.addJob('nobody-runs', {}, { maxAttempts: 2 }),
      ...(await client.addJobs([{ task: 'nobody-runs' }, { task: 'nobody-runs', maxAttempts: 4 }])),
      ...(await client.addJobs([
        { task: 'nobody-runs', key: 'k1' },
        { task: 'nobody-runs', key: 'k2', maxAttempts: 6 },
      ])),
    ];
    const { rows: sql } = await db.pool.query(
      `SELECT ${s}.add_job('nobody-runs')::text AS a, ${s}.add_job('nobody-runs', max_attempts => 7)::text AS b`,
    );
    ids.push(sql[0].a, sql[0].b);
    const { rows } = await db.pool.query(
      `SELECT max_attempts, max_attempts_given FROM ${s}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [ids],
    );
    expect(rows.map((r) => [r.max_attempts, r.max_attempts_given])).toEqual([
      [5, false],
      [2, true],
      [5, false],
      [4, true],
      [5, false],
      [6, true],
      [5, false],
      [7, true],
    ]);
    await db.pool.query(`DELETE FROM ${s}.jobs WHERE id = ANY($1::bigint[])`, [ids]);
  });
});

describe('a task module whose policy is invalid', () => {
  for (const [dir, file, field] of [
    ['bad-backoff', 'flaky.mjs', /retry\.backoff\.type must be 'exponential' or 'fixed', not "linear"/],
    ['bad-timeout', 'sluggish.mjs', /timeoutMs must be a whole number of milliseconds from 1 to 2147483647, not "30s"/],
  ] as const) {
    it(`makes startSupervisor reject with GRAPEVINE_TASKS_INVALID naming the file and the field (${dir})`, async () => {
      const err = await startSupervisor({
        connectionString: db.url,
        schema: db.schema,
        tasks: path.join(BAD_POLICIES, dir),
        threads: 1,
        logger: testLogger(),
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_TASKS_INVALID');
      expect((err as Error).message).toContain(path.join(BAD_POLICIES, dir, file));
      expect((err as Error).message).toMatch(field);
    });
  }
});
