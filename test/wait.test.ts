import { afterEach, describe, expect, it } from 'vitest';
import { createClient, GrapevineError, type Job, type Supervisor } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { useOwnRole } from './helpers/role.ts';

const db = useMigratedSchema('wait');
const role = useOwnRole(db, 'wait');
const { client, s: S } = db;

const started = new Set<Supervisor>();

async function start(): Promise<Supervisor> {
  const supervisor = await startTestSupervisor(db, {
    threads: 2,
    concurrency: 8,
    leaseMs: 2_000,
    heartbeatIntervalMs: 200,
    reaperIntervalMs: 200,
    sweepIntervalMs: 200,
  });
  started.add(supervisor);
  return supervisor;
}

afterEach(async () => {
  await Promise.all([...started].map((s) => s.stop({ graceMs: 0 })));
  started.clear();
});

async function databaseNow(): Promise<Date> {
  const { rows } = await db.pool.query('SELECT clock_timestamp() AS now');
  return rows[0].now;
}

/** Finishes a job by hand without telling anyone: only a reader of the table can notice. */
async function finishSilently(id: string, result: unknown): Promise<void> {
  await db.pool.query(`UPDATE ${S}.jobs SET state = 'succeeded', result = $2, finished_at = now() WHERE id = $1`, [
    id,
    JSON.stringify(result),
  ]);
}

/** Sends the done notification a supervisor sends when it records an outcome. */
async function announceDone(ids: string[]): Promise<void> {
  await db.pool.query(`SELECT ${S}.notify_ids($1, $2::bigint[])`, [`${db.schema}_done`, ids]);
}

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(promise: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { settled: () => settled, promise };
}

describe('waitForJob', () => {
  it('resolves when a job that was still pending at the start of the wait finishes', async () => {
    const id = await client.addJob('square', { n: 36 });
    const waitStartedAt = await databaseNow();
    const waiting = client.waitForJob(id, { timeoutMs: 30_000 });
    // Nothing runs jobs until now.
    expect((await client.getJob(id))!.state).toBe('pending');
    const supervisor = await start();
    const job = await waiting;
    expect(job).toMatchObject({ id, state: 'succeeded', result: { n: 36, root: 6 }, lockedBy: supervisor.id });
    expect(job.startedAt!.getTime()).toBeGreaterThanOrEqual(waitStartedAt.getTime());
    expect(job.finishedAt!.getTime()).toBeGreaterThanOrEqual(waitStartedAt.getTime());
  });

  it('wakes on the done notification and does not poll: a job finished without one is noticed only when it arrives', async () => {
    // A client of our own role, so that its connections can be watched in pg_stat_activity.
    const watched = createClient({ connectionString: role.url, schema: db.schema });
    try {
      const [silent, other] = await watched.addJobs([
        { task: 'nobody_runs_this', payload: {} },
        { task: 'nobody_runs_this', payload: {} },
      ]);
      const waitingForSilent = track(watched.waitForJob(silent, { timeoutMs: 30_000 }));
      // The waiter reads the job once after subscribing; once that read is over, only a notification wakes it.
      await eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT 1 FROM pg_stat_activity
            WHERE usename = $1 AND application_name = 'grapevine-client' AND state = 'idle' AND query LIKE '%.get_job($1)'`,
          [role.name],
        );
        return rows.length > 0;
      }, 'the waiter to read the job once');
      await finishSilently(silent, { how: 'silently' });
      await finishSilently(other, { how: 'announced' });
      const waitingForOther = watched.waitForJob(other, { timeoutMs: 30_000 });
      await announceDone([other]);
      // The listener received this notification after `silent` had finished, and woke only the waiter it named.
      expect((await waitingForOther).result).toEqual({ how: 'announced' });
      await new Promise((r) => setTimeout(r, 1_000));
      expect(waitingForSilent.settled()).toBe(false);

      await announceDone([silent]);
      expect(await waitingForSilent.promise).toMatchObject({ id: silent, state: 'succeeded', result: { how: 'silently' } });
    } finally {
      await watched.close();
    }
  });

  it('resolves at once for a job that had already finished, without any notification', async () => {
    const id = await client.addJob('nobody_runs_this', {});
    await finishSilently(id, { done: 'before anyone waited' });
    const job = await client.waitForJob(id, { timeoutMs: 5_000 });
    expect(job).toMatchObject({ id, state: 'succeeded', result: { done: 'before anyone waited' } });
  });

  it('resolves for failed and cancelled jobs too, with their state', async () => {
    await start();
    const failing = await client.addJob('fail', { message: 'wait for me to fail' }, { maxAttempts: 1 });
    const cancelled = await client.addJob('nobody_runs_this', {}, { runAt: new Date(Date.now() + 3_600_000) });
    const [failedJob, cancelledJob] = await Promise.all([
      client.waitForJob(failing, { timeoutMs: 30_000 }),
      client.waitForJob(cancelled, { timeoutMs: 30_000 }),
      client.cancelJob(cancelled),
    ]);
    expect(failedJob).toMatchObject({ state: 'failed', attempts: 1 });
    expect(failedJob.lastError).toMatch(/wait for me to fail/);
    expect(cancelledJob).toMatchObject({ state: 'cancelled' });
  });

  it('rejects with GRAPEVINE_WAIT_TIMEOUT naming the job and the limit when it does not finish in time', async () => {
    const id = await client.addJob('nobody_runs_this', {});
    const err = await client.waitForJob(id, { timeoutMs: 300 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GrapevineError);
    expect((err as GrapevineError).code).toBe('GRAPEVINE_WAIT_TIMEOUT');
    expect((err as Error).message).toBe(`job ${id} did not finish within 300 ms`);
    // Giving up waiting does not touch the job.
    expect((await client.getJob(id))!.state).toBe('pending');
  });

  it('refuses a timeoutMs setTimeout cannot hold (over 2^31-1, negative, NaN, not a number) with GRAPEVINE_CONFIG_INVALID', async () => {
    const id = await client.addJob('nobody_runs_this', {});
    // Over 2^31-1 ms Node's setTimeout fires at once: without the check this wait gave up immediately.
    for (const bad of [2 ** 31, 30 * 24 * 3600 * 1000, -1, Number.NaN, Number.POSITIVE_INFINITY, '5000']) {
      const err = await client.waitForJob(id, { timeoutMs: bad as number }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, String(bad)).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_CONFIG_INVALID');
      expect((err as Error).message).toMatch(/^timeoutMs must be a number of milliseconds from 0 to 2147483647 \(about 24.8 days\), got /);
    }
    // The largest value is accepted and waits (the job is still pending when we stop looking).
    const longest = track(client.waitForJob(id, { timeoutMs: 2 ** 31 - 1 }));
    await new Promise((r) => setTimeout(r, 300));
    expect(longest.settled()).toBe(false);
    await client.cancelJob(id);
    expect((await longest.promise).state).toBe('cancelled');
  });

  it('rejects with GRAPEVINE_JOB_NOT_FOUND for ids that do not exist or are not ids', async () => {
    const missing = await client.waitForJob('987654321987', { timeoutMs: 5_000 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(missing).toBeInstanceOf(GrapevineError);
    expect((missing as GrapevineError).code).toBe('GRAPEVINE_JOB_NOT_FOUND');
    expect((missing as Error).message).toMatch(
      new RegExp(`^job 987654321987 does not exist in schema "${db.schema}": the id is wrong, or the job was deleted`),
    );

    for (const bad of ['abc', '0', '-5', '1; DROP TABLE jobs']) {
      const err = await client.waitForJob(bad).then(
        () => null,
        (e: unknown) => e,
      );
      expect((err as GrapevineError).code).toBe('GRAPEVINE_JOB_NOT_FOUND');
      expect((err as Error).message).toMatch(/invalid job id .*job ids are positive integers/);
    }
  });
});

describe('many waiters', () => {
  it('serves many concurrent waiters on one client from one listener connection', async () => {
    // Our own role tells this client's connections apart from other test files'.
    const waiterClient = createClient({ connectionString: role.url, listenUrl: role.url, schema: db.schema });
    try {
      const ids = await waiterClient.addJobs(Array.from({ length: 60 }, (_, n) => ({ task: 'square', payload: { n } })));
      // 60 jobs, three waiters on the first one, one on each of the others.
      const waits: Array<Promise<Job>> = [
        ...ids.map((id) => waiterClient.waitForJob(id, { timeoutMs: 30_000 })),
        waiterClient.waitForJob(ids[0], { timeoutMs: 30_000 }),
        waiterClient.waitForJob(ids[0], { timeoutMs: 30_000 }),
      ];
      const connections = async () =>
        (
          await db.pool.query<{ application_name: string; n: number }>(
            `SELECT application_name, count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 GROUP BY application_name`,
            [role.name],
          )
        ).rows;
      await eventually(
        async () => (await connections()).some((r) => r.application_name === 'grapevine-waiter'),
        'the waiter listener to connect',
      );
      const whileWaiting = await connections();
      expect(whileWaiting.find((r) => r.application_name === 'grapevine-waiter')!.n).toBe(1);
      // The rest is the client's small pool (at most 4 connections), not one per waiter.
      expect(whileWaiting.filter((r) => r.application_name !== 'grapevine-waiter').reduce((sum, r) => sum + r.n, 0)).toBeLessThanOrEqual(4);

      await start();
      const jobs = await Promise.all(waits);
      expect(jobs.map((j) => j.state)).toEqual(Array(62).fill('succeeded'));
      expect(jobs.slice(0, 60).map((j) => (j.result as { n: number }).n)).toEqual(ids.map((_, n) => n));
      expect(jobs[60].id).toBe(ids[0]);
      expect(jobs[61].id).toBe(ids[0]);
      expect((await connections()).find((r) => r.application_name === 'grapevine-waiter')!.n).toBe(1);
    } finally {
      await waiterClient.close();
    }
    await eventually(
      async () => (await db.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1`, [role.name])).rows[0].n === 0,
      'the client to close its connections',
    );
  });
});
