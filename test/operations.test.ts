import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createControl, type Supervisor } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, run } from './helpers/process.ts';

const db = useMigratedSchema('operations');
const { client, s } = db;
const control = createControl({ connectionString: db.url, schema: db.schema });
const gate = `${s}.gate`;
const cli = (...args: string[]) => run([CLI, ...args, '--schema', db.schema], { DATABASE_URL: db.url });
let sup: Supervisor | undefined;

beforeAll(async () => {
  await db.pool.query(`CREATE TABLE ${gate} (open boolean NOT NULL)`);
});
afterAll(async () => {
  await sup?.stop({ graceMs: 0 });
  await control.close();
});

const later = () => new Date(Date.now() + 3_600_000);
const stateOf = async (id: string) => (await client.getJob(id))!.state;

async function clearJobs(): Promise<void> {
  await db.pool.query(`DELETE FROM ${s}.jobs`);
}

/** A job as a finished one: made directly, so that no supervisor is needed to fail it. */
async function finishedJob(
  task: string,
  state: 'succeeded' | 'failed' | 'cancelled',
  error: string | null = null,
  finishedAt = 'now()',
): Promise<string> {
  const { rows } = await db.pool.query(
    `INSERT INTO ${s}.jobs (task, state, attempts, max_attempts, last_error, finished_at) VALUES ($1, $2, 1, 1, $3, ${finishedAt}) RETURNING id::text AS id`,
    [task, state, error],
  );
  return rows[0].id;
}

describe('listJobs', () => {
  it('filters by state, task, queue, group, creation time and error text, newest first', async () => {
    await clearJobs();
    const a = await client.addJob('square', { n: 1 }, { runAt: later() });
    const b = await client.addJob('square', { n: 2 }, { runAt: later(), queue: 'email', group: 'customer-7' });
    const c = await finishedJob('fail', 'failed', 'Error: SMTP refused the connection');
    const d = await finishedJob('fail', 'failed', 'Error: timeout');
    const ids = async (filter: Parameters<typeof control.listJobs>[0]) => (await control.listJobs(filter)).jobs.map((j) => j.id);
    expect(await ids({})).toEqual([d, c, b, a]);
    expect(await ids({ state: 'failed' })).toEqual([d, c]);
    expect(await ids({ state: ['pending', 'failed'], task: 'square' })).toEqual([b, a]);
    expect(await ids({ queue: 'email' })).toEqual([b]);
    expect(await ids({ group: 'customer-7' })).toEqual([b]);
    expect(await ids({ group: 'customer-8' })).toEqual([]);
    expect(await ids({ errorContains: 'smtp' })).toEqual([c]);
    const { rows } = await db.pool.query(`SELECT created_at FROM ${s}.jobs WHERE id = $1`, [c]);
    expect(await ids({ createdAfter: rows[0].created_at })).toEqual([d, c]);
    expect(await ids({ createdBefore: rows[0].created_at })).toEqual([b, a]);
  });

  it('pages by keyset: every job once, in order, and no cursor after the last page', async () => {
    await clearJobs();
    const added = await client.addJobs(Array.from({ length: 7 }, (_, n) => ({ task: 'square', payload: { n }, runAt: later() })));
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const page = await control.listJobs({ task: 'square' }, { limit: 3, after });
      seen.push(...page.jobs.map((j) => j.id));
      after = page.next;
      pages++;
    } while (after !== null);
    expect(seen).toEqual([...added].reverse());
    expect(pages).toBe(3);
  });

  it('refuses an unknown state and a bad cursor with a config error', async () => {
    await expect(control.listJobs({ state: 'done' as never })).rejects.toMatchObject({
      code: 'GRAPEVINE_CONFIG_INVALID',
      message: /unknown job state "done"/,
    });
    await expect(control.listJobs({}, { after: 'x' })).rejects.toMatchObject({ code: 'GRAPEVINE_CONFIG_INVALID' });
  });
});

describe('stats', () => {
  it('counts by queue, task and state, with the oldest due job and the last minute', async () => {
    await clearJobs();
    await client.addJob('square', { n: 1 }, { queue: 'email' });
    await db.pool.query(`UPDATE ${s}.jobs SET run_at = now() - interval '1 hour'`);
    await finishedJob('fail', 'failed', 'boom');
    await finishedJob('square', 'succeeded');
    await finishedJob('square', 'succeeded', null, `now() - interval '1 hour'`);
    const stats = await control.stats();
    expect(stats.counts).toEqual([
      { queue: 'default', task: 'fail', state: 'failed', jobs: 1 },
      { queue: 'default', task: 'square', state: 'succeeded', jobs: 2 },
      { queue: 'email', task: 'square', state: 'pending', jobs: 1 },
    ]);
    expect(stats.oldestPendingSeconds).toBeGreaterThanOrEqual(3_600);
    expect(stats.lastMinute).toEqual({ succeeded: 1, failed: 1, cancelled: 0 });
  });
});

describe('actions on jobs', () => {
  it('retries failed and cancelled jobs only, with their attempts allowance again', async () => {
    await clearJobs();
    const failed = await finishedJob('fail', 'failed', 'boom');
    const cancelled = await finishedJob('fail', 'cancelled');
    const succeeded = await finishedJob('fail', 'succeeded');
    const pending = await client.addJob('fail', {}, { runAt: later() });
    expect((await control.retryJobs({ task: 'fail' })).sort()).toEqual([failed, cancelled].sort());
    const job = (await client.getJob(failed))!;
    expect(job).toMatchObject({ state: 'pending', attempts: 1, maxAttempts: 2, finishedAt: null, cancelRequestedAt: null });
    expect(await stateOf(succeeded)).toBe('succeeded');
    expect((await client.getJob(pending))!.runAt.getTime()).toBeGreaterThan(Date.now());
  });

  it('refuses an empty filter for actions that would touch every job', async () => {
    await expect(control.retryJobs({})).rejects.toMatchObject({ code: 'GRAPEVINE_CONFIG_INVALID', message: /empty filter/ });
    await expect(control.cancelJobs({})).rejects.toMatchObject({ code: 'GRAPEVINE_CONFIG_INVALID' });
    await expect(control.purgeJobs({ state: 'running' })).rejects.toMatchObject({
      code: 'GRAPEVINE_CONFIG_INVALID',
      message: /finished jobs only/,
    });
  });

  it('reschedules pending jobs only', async () => {
    await clearJobs();
    const pending = await client.addJob('square', { n: 1 }, { runAt: later() });
    const done = await finishedJob('square', 'succeeded');
    const at = new Date(Date.now() + 7_200_000);
    expect(await control.rescheduleJobs([pending, done], at)).toEqual([pending]);
    expect((await client.getJob(pending))!.runAt.toISOString()).toBe(at.toISOString());
  });

  it('purges finished jobs by state and finish time', async () => {
    await clearJobs();
    const old = await finishedJob('square', 'succeeded', null, `now() - interval '2 days'`);
    const recent = await finishedJob('square', 'succeeded');
    const failed = await finishedJob('fail', 'failed', 'boom', `now() - interval '2 days'`);
    const pending = await client.addJob('square', { n: 1 }, { runAt: later() });
    expect(await control.purgeJobs({ state: 'succeeded', finishedBefore: new Date(Date.now() - 86_400_000) })).toBe(1);
    expect(await client.getJob(old)).toBeNull();
    for (const id of [recent, failed, pending]) expect(await client.getJob(id)).not.toBeNull();
    expect(await control.purgeJobs({ task: 'fail' })).toBe(1);
  });
});

describe('with a supervisor running the jobs', () => {
  beforeAll(async () => {
    sup = await startTestSupervisor(db, { threads: 2, concurrency: 4, killGraceMs: 500 });
  });

  it('cancels in bulk: pending jobs at once, running ones through their owner', async () => {
    await clearJobs();
    await db.pool.query(`DELETE FROM ${gate}`);
    const running = await client.addJob('block', { gate });
    await eventually(async () => (await stateOf(running)) === 'running', 'the blocking job to run');
    const pending = await client.addJob('block', { gate }, { runAt: later() });
    const result = await control.cancelJobs({ task: 'block' });
    expect(result).toEqual({ cancelled: [pending], cancelling: [running] });
    const job = await client.waitForJob(running);
    expect(job.state).toBe('cancelled');
    expect(await stateOf(pending)).toBe('cancelled');
  });

  it('bulk retry leaves a running job to its claim, whose outcome still lands', async () => {
    await clearJobs();
    await db.pool.query(`DELETE FROM ${gate}`);
    // A job that was cancelled, then retried: its second attempt is running when the next bulk retry comes.
    const id = await client.addJob('block', { gate });
    await eventually(async () => (await stateOf(id)) === 'running', 'the first attempt to run');
    await client.cancelJob(id);
    expect((await client.waitForJob(id)).state).toBe('cancelled');
    expect(await control.retryJobs([id])).toEqual([id]);
    await eventually(
      async () => (await client.getJob(id))?.attempts === 2 && (await stateOf(id)) === 'running',
      'the second attempt to run',
    );
    const { rows: before } = await db.pool.query(`SELECT claim_token, locked_by, max_attempts FROM ${s}.jobs WHERE id = $1`, [id]);
    const failedAlongside = await finishedJob('block', 'failed', 'boom');

    expect(await control.retryJobs({ task: 'block', state: ['running', 'failed'] })).toEqual([failedAlongside]);
    expect(await control.retryJobs([id])).toEqual([]);
    const { rows: after } = await db.pool.query(`SELECT claim_token, locked_by, max_attempts, state FROM ${s}.jobs WHERE id = $1`, [id]);
    expect(after[0]).toEqual({ ...before[0], state: 'running' });

    await db.pool.query(`INSERT INTO ${gate} VALUES (true)`);
    const job = await client.waitForJob(id);
    expect(job).toMatchObject({ state: 'succeeded', attempts: 2, result: { released: true } });
    // It ran again (its payload names no gate, so it failed again).
    expect((await client.waitForJob(failedAlongside)).attempts).toBe(2);
  });

  it('bulk retries racing the owners of the jobs they retry never get an outcome fenced', async () => {
    await clearJobs();
    const ids = await client.addJobs(Array.from({ length: 20 }, () => ({ task: 'fail', payload: {}, maxAttempts: 1 })));
    const fencedBefore = sup!.status().counters.fenced;
    let retried = 0;
    // Retry whatever has failed so far while the supervisor is still running the rest, a few rounds over.
    for (let round = 0; round < 5; round++) {
      retried += (await control.retryJobs({ task: 'fail' })).length;
      await eventually(
        async () => (await control.listJobs({ task: 'fail', state: 'failed' }, { limit: 1 })).jobs.length > 0,
        'a failure to retry',
      );
    }
    await eventually(
      async () => (await control.listJobs({ task: 'fail', state: ['pending', 'running'] }, { limit: 1 })).jobs.length === 0,
      'every attempt to end',
    );
    const { rows } = await db.pool.query(`SELECT sum(attempts)::int AS attempts FROM ${s}.jobs WHERE id = ANY($1::bigint[])`, [ids]);
    expect(rows[0].attempts).toBe(ids.length + retried);
    expect(sup!.status().counters.fenced).toBe(fencedBefore);
  });
});

describe('grapevine jobs, stats, retry, reschedule, purge, cancel', () => {
  it('lists jobs as a table with control characters escaped, and as JSON', async () => {
    await clearJobs();
    const id = await finishedJob('fail', 'failed', 'boom \u001b[2J\u001b[31mred\u001b[0m\nsecond line \u202eevil');
    const table = await cli('jobs', '--state', 'failed');
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('boom \\u001b[2J\\u001b[31mred\\u001b[0m\\nsecond line \\u202eevil');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape sequence must not reach the terminal
    expect(table.stdout).not.toMatch(/\u001b|\u202e/);
    const json = await cli('jobs', '--error', 'BOOM', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ jobs: [{ id, state: 'failed' }], next: null });
  });

  it('retries, reschedules, cancels and purges, and refuses what would touch every job', async () => {
    await clearJobs();
    const failed = await finishedJob('fail', 'failed', 'boom');
    expect((await cli('retry', '--state', 'failed', '--task', 'fail', '--json')).stdout.trim()).toBe(JSON.stringify({ retried: [failed] }));
    const pending = await client.addJob('square', { n: 1 }, { runAt: later() });
    const rescheduled = await cli('reschedule', pending, '--run-at', '2099-01-01T00:00:00Z');
    expect(rescheduled.stdout.trim()).toBe('rescheduled 1 job');
    expect((await cli('cancel', '--task', 'square')).stdout).toMatch(/^cancelled 1 pending job;/);
    expect((await cli('purge', '--state', 'cancelled')).stdout.trim()).toBe('purged 1 job');
    const stats = await cli('stats', '--json');
    expect(JSON.parse(stats.stdout).counts).toEqual(expect.any(Array));
    for (const args of [['retry'], ['cancel'], ['purge'], ['retry', '1', '--state', 'failed']]) {
      const refused = await cli(...args);
      expect(refused.code).toBe(2);
    }
  });
});
