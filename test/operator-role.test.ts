import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createDashboardHandler, type DashboardHandler, type Supervisor } from '../supervisor/public.ts';
import { serve } from './helpers/browser.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, run } from './helpers/process.ts';
import { sqlstateAs, useOwnRole, type OwnRole } from './helpers/role.ts';

/**
 * The job operations (grapevine jobs, stats, retry, reschedule, purge,
 * cancel) and the dashboard under a real login role granted `--as operator`
 * and nothing else, end to end: each works, the operator still cannot write
 * a job's row itself, and the enqueuer and worker kinds are refused them.
 */
const db = useMigratedSchema('oprole');
const { s } = db;
const operator = useOwnRole(db, 'op', { superuser: false, as: 'operator' });
const enqueuer = useOwnRole(db, 'enq', { superuser: false, as: 'enqueuer' });
const worker = useOwnRole(db, 'wrk', { superuser: false, as: 'worker' });
const DENIED = '42501';

let sup: Supervisor | undefined;
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  // The supervisor runs as the schema's owner: only the operator's side is under test here.
  sup = await startTestSupervisor(db, { threads: 1 });
});
afterAll(async () => {
  for (const close of closers) await close().catch(() => {});
  await sup?.stop({ graceMs: 0 });
});

const cliAs = (role: OwnRole, ...args: string[]) => run([CLI, ...args, '--schema', db.schema], { DATABASE_URL: role.url });

async function stateOf(id: string): Promise<string | undefined> {
  return (await db.pool.query(`SELECT state FROM ${s}.jobs WHERE id = $1`, [id])).rows[0]?.state;
}

/** A failed job, written directly by the owner: no supervisor needs to fail it. */
async function failedJob(task: string): Promise<string> {
  const { rows } = await db.pool.query(
    `INSERT INTO ${s}.jobs (task, state, attempts, max_attempts, last_error, finished_at)
     VALUES ($1, 'failed', 1, 1, 'Error: no route to host', now()) RETURNING id::text AS id`,
    [task],
  );
  return rows[0].id;
}

const later = () => new Date(Date.now() + 3_600_000).toISOString();

describe('an operator role', () => {
  it('runs grapevine jobs, stats, retry, reschedule, cancel (a running job through its owner) and purge', async () => {
    const enqueue = createClient({ connectionString: enqueuer.url, schema: db.schema });
    closers.push(() => enqueue.close());
    const failed = [await failedJob('op-mail'), await failedJob('op-mail')];

    const listed = await cliAs(operator, 'jobs', '--state', 'failed', '--task', 'op-mail', '--error', 'ROUTE', '--json');
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).jobs.map((j: { id: string }) => j.id)).toEqual([failed[1], failed[0]]);

    const stats = await cliAs(operator, 'stats', '--json');
    expect(stats.code, stats.stderr).toBe(0);
    expect(JSON.parse(stats.stdout).counts).toContainEqual({ queue: 'default', task: 'op-mail', state: 'failed', jobs: 2 });

    const retried = await cliAs(operator, 'retry', '--state', 'failed', '--task', 'op-mail', '--json');
    expect(retried.code, retried.stderr).toBe(0);
    expect(JSON.parse(retried.stdout).retried.sort()).toEqual([...failed].sort());
    // No supervisor runs op-mail: the retried jobs stay pending.
    expect([await stateOf(failed[0]), await stateOf(failed[1])]).toEqual(['pending', 'pending']);

    const runAt = later();
    const moved = await cliAs(operator, 'reschedule', failed[0], '--run-at', runAt);
    expect([moved.code, moved.stdout.trim()], moved.stderr).toEqual([0, 'rescheduled 1 job']);
    const { rows } = await db.pool.query(`SELECT run_at FROM ${s}.jobs WHERE id = $1`, [failed[0]]);
    expect(rows[0].run_at.toISOString()).toBe(runAt);

    // A running job: flagged, its owner told, and its own fenced outcome write records the cancellation.
    const running = await enqueue.addJob('hang', { cooperative: true }, { queue: 'op-queue' });
    await eventually(async () => (await stateOf(running)) === 'running', 'the hang job to start');
    const pending = await enqueue.addJob('hang', {}, { queue: 'op-queue', runAt: later() });
    const cancelled = await cliAs(operator, 'cancel', '--queue', 'op-queue');
    expect([cancelled.code, cancelled.stdout.trim()], cancelled.stderr).toEqual([
      0,
      'cancelled 1 pending job; asked the owners of 1 running job to abort them',
    ]);
    expect(await stateOf(pending)).toBe('cancelled');
    expect((await enqueue.waitForJob(running, { timeoutMs: 30_000 })).state).toBe('cancelled');

    const purged = await cliAs(operator, 'purge', '--state', 'cancelled', '--queue', 'op-queue');
    expect([purged.code, purged.stdout.trim()], purged.stderr).toEqual([0, 'purged 2 jobs']);
    expect([await stateOf(running), await stateOf(pending)]).toEqual([undefined, undefined]);

    // Still no right to write a row itself, nor to reach the functions' tables around them.
    for (const text of [
      `UPDATE ${s}.jobs SET state = 'succeeded' WHERE id = ${failed[1]}`,
      `DELETE FROM ${s}.jobs WHERE id = ${failed[1]}`,
      `INSERT INTO ${s}.jobs (task, state, finished_at) VALUES ('op-mail', 'succeeded', now())`,
      `SELECT 1 FROM ${s}.jobs WHERE id = ${failed[1]} FOR UPDATE`,
    ]) {
      expect([text, await sqlstateAs(operator, text)]).toEqual([text, DENIED]);
    }
    expect(await stateOf(failed[1])).toBe('pending');
  });

  it("reads and acts through the dashboard: overview, lists, a job's page, retry, cancel, bulk actions, pause", async () => {
    const site = await dashboardAs(operator);
    const failed = [await failedJob('op-report'), await failedJob('op-report'), await failedJob('op-report')];

    const overview = await site.get('/api/overview');
    expect(overview.status, JSON.stringify(overview.body)).toBe(200);
    expect(overview.body.states.failed).toBeGreaterThanOrEqual(3);
    expect(overview.body.supervisors.map((x: { id: string }) => x.id)).toContain(sup!.id);
    const list = await site.get('/api/jobs?state=failed&task=op-report');
    expect(list.body.jobs.map((j: { id: string }) => j.id)).toEqual([...failed].reverse());
    const page = await site.get(`/api/jobs/${failed[0]}`);
    expect([page.status, page.body.job.lastError]).toEqual([200, 'Error: no route to host']);
    expect((await site.get('/api/supervisors')).status).toBe(200);
    expect((await site.get('/api/schedules')).status).toBe(200);

    expect(await site.post(`/api/jobs/${failed[0]}/retry`)).toEqual({ status: 200, body: { retried: [failed[0]] } });
    expect(await stateOf(failed[0])).toBe('pending');
    expect(await site.post(`/api/jobs/${failed[0]}/cancel`)).toEqual({ status: 200, body: { cancelled: [failed[0]], cancelling: [] } });
    expect(await stateOf(failed[0])).toBe('cancelled');
    expect(await site.post('/api/matching/retry?task=op-report')).toEqual({ status: 200, body: { retried: 3 } });
    expect(await site.post('/api/matching/cancel?task=op-report')).toEqual({ status: 200, body: { cancelled: 3, cancelling: 0 } });
    expect(await Promise.all(failed.map(stateOf))).toEqual(['cancelled', 'cancelled', 'cancelled']);

    const paused = await site.post(`/api/supervisors/${sup!.id}/pause`);
    expect(paused.status, JSON.stringify(paused.body)).toBe(200);
    await eventually(
      async () => (await site.get('/api/supervisors')).body.find((x: { id: string }) => x.id === sup!.id)?.status === 'PAUSED',
      'the supervisor to pause',
    );
    expect((await site.post(`/api/supervisors/${sup!.id}/resume`)).status).toBe(200);
    await eventually(
      async () => (await site.get('/api/supervisors')).body.find((x: { id: string }) => x.id === sup!.id)?.status !== 'PAUSED',
      'the supervisor to resume',
    );
  });
});

describe('the enqueuer and worker kinds', () => {
  it('are refused the operations from the command line, with GRAPEVINE_PERMISSION_DENIED naming the fix', async () => {
    const id = await failedJob('op-refused');
    const actions = [
      ['retry', id],
      ['reschedule', id, '--run-at', later()],
      ['purge', '--state', 'failed', '--task', 'op-refused'],
      ['cancel', '--task', 'op-refused'],
    ];
    const reads = [['jobs', '--state', 'failed'], ['stats']];
    // The enqueuer may not even see the list of jobs; the worker reads the table it works on, and acts on none.
    for (const [role, refused] of [
      [enqueuer, [...reads, ...actions]],
      [worker, actions],
    ] as const) {
      for (const args of refused) {
        const out = await cliAs(role, ...args);
        expect([role.name, args[0], out.code], out.stdout).toEqual([role.name, args[0], 1]);
        expect(out.stderr).toContain(`grapevine grant ROLE --as operator --schema ${db.schema}`);
      }
    }
    expect(await stateOf(id)).toBe('failed');
    const read = await cliAs(worker, 'jobs', '--state', 'failed', '--task', 'op-refused', '--json');
    expect(JSON.parse(read.stdout).jobs.map((j: { id: string }) => j.id)).toEqual([id]);
  });

  it('are refused by the dashboard: the enqueuer its reads and actions, the worker its actions', async () => {
    const id = await failedJob('op-refused-web');
    const asEnqueuer = await dashboardAs(enqueuer);
    for (const path of ['/api/overview', '/api/jobs?state=failed', `/api/jobs/${id}`]) {
      const res = await asEnqueuer.get(path);
      expect([path, res.status, res.body.error?.code]).toEqual([path, 403, 'GRAPEVINE_PERMISSION_DENIED']);
    }
    const asWorker = await dashboardAs(worker);
    expect((await asWorker.get('/api/jobs?state=failed&task=op-refused-web')).body.jobs.map((j: { id: string }) => j.id)).toEqual([id]);
    for (const site of [asEnqueuer, asWorker]) {
      for (const path of [`/api/jobs/${id}/retry`, `/api/jobs/${id}/cancel`, '/api/matching/retry?task=op-refused-web']) {
        const res = await site.post(path);
        expect([path, res.status, res.body.error?.code]).toEqual([path, 403, 'GRAPEVINE_PERMISSION_DENIED']);
        expect(res.body.error.message).toContain('--as operator');
      }
    }
    expect(await stateOf(id)).toBe('failed');
  });
});

/** The dashboard connected as `role`, served on a free port, with its page's CSRF token for actions. */
async function dashboardAs(role: OwnRole) {
  const handler: DashboardHandler = createDashboardHandler({ connectionString: role.url, schema: db.schema, refreshMs: 500 });
  const site = await serve(handler);
  closers.push(
    () => site.close(),
    () => handler.close(),
  );
  const token = /name="grapevine-csrf" content="([^"]+)"/.exec(await (await fetch(`${site.url}/`)).text())![1];
  const answer = async (res: Response) => ({ status: res.status, body: await res.json() });
  return {
    get: (path: string) => fetch(`${site.url}${path}`).then(answer),
    post: (path: string) => fetch(`${site.url}${path}`, { method: 'POST', headers: { 'x-grapevine-csrf': token } }).then(answer),
  };
}
