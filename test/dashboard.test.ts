import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createControl, createDashboardHandler, type DashboardHandler, type Supervisor } from '../supervisor/public.ts';
import { serve } from './helpers/browser.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, start } from './helpers/process.ts';
import { useOwnRole } from './helpers/role.ts';

// The dashboard's HTTP side without a browser: its API on real PostgreSQL,
// the defences of its actions, and its one LISTEN connection.
const db = useMigratedSchema('dashboard');
const { client, s } = db;
// Its own role, with a password: connections are counted by role, and the password must never be shown.
const role = useOwnRole(db, 'dashboard');
const password = new URL(role.url).password;

let handler: DashboardHandler;
let site: Awaited<ReturnType<typeof serve>>;
let sup: Supervisor | undefined;

beforeAll(async () => {
  handler = createDashboardHandler({ connectionString: role.url, schema: db.schema, basePath: '/ops/jobs/', refreshMs: 500 });
  site = await serve(handler);
});
afterAll(async () => {
  await sup?.stop({ graceMs: 0 });
  await site.close();
  await handler.close();
});

const base = () => `${site.url}/ops/jobs`;
async function get(path: string): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(`${base()}${path}`, { redirect: 'manual' });
  return { status: res.status, body: await res.text(), headers: res.headers };
}
async function csrfToken(): Promise<string> {
  return /name="grapevine-csrf" content="([^"]+)"/.exec((await get('/')).body)![1];
}
function post(path: string, headers: Record<string, string>) {
  return fetch(`${base()}${path}`, { method: 'POST', headers }).then(async (r) => ({ status: r.status, body: await r.json() }));
}
async function failedJob(task = 'report'): Promise<string> {
  const { rows } = await db.pool.query(
    `INSERT INTO ${s}.jobs (task, state, attempts, max_attempts, last_error, finished_at) VALUES ($1, 'failed', 1, 1, 'Error: no', now()) RETURNING id::text AS id`,
    [task],
  );
  return rows[0].id;
}

describe('pages and API', () => {
  it('serves the page under its base path with a strict content security policy, and nothing outside it', async () => {
    expect((await get('')).headers.get('location')).toBe('/ops/jobs/');
    const page = await get('/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.body).toContain('src="/ops/jobs/static/app.js?v=');
    expect((await get('/static/app.js')).status).toBe(200);
    expect((await fetch(`${site.url}/elsewhere`)).status).toBe(404);
  });

  it('lists jobs by key, state and task, and pages by keyset', async () => {
    const keyed = await client.addJob('mail', {}, { key: 'user-7', runAt: new Date(Date.now() + 3_600_000) });
    const failed = [await failedJob(), await failedJob(), await failedJob()];
    const list = async (q: string) => JSON.parse((await get(`/api/jobs?${q}`)).body);
    expect((await list('key=user-7')).jobs.map((j: { id: string }) => j.id)).toEqual([keyed]);
    const first = await list('state=failed&task=report&limit=2');
    expect(first.jobs.map((j: { id: string }) => j.id)).toEqual([failed[2], failed[1]]);
    expect((await list(`state=failed&task=report&limit=2&after=${first.next}`)).jobs.map((j: { id: string }) => j.id)).toEqual([failed[0]]);
    expect((await get('/api/jobs?state=lost')).status).toBe(400);
    expect((await get('/api/jobs/abc')).status).toBe(400);
    expect((await get('/api/jobs/999999999')).status).toBe(404);
  });

  it("shows a job's timeline from the supervisor log, and the supervisors with their threads", async () => {
    sup = await startTestSupervisor(db, { threads: 1 });
    const id = await client.addJob('fail', { message: 'boom' }, { maxAttempts: 1 });
    await client.waitForJob(id, { timeoutMs: 30_000 });
    const detail = await eventually(async () => {
      const body = JSON.parse((await get(`/api/jobs/${id}`)).body);
      return body.timeline.some((e: { event: string }) => e.event === 'TASK_ERROR') && body;
    }, 'the job to be in the supervisor log');
    expect(detail.job.lastError).toContain('boom');
    expect(detail.timeline.map((e: { event: string }) => e.event)).toEqual(['TASK_START', 'TASK_ERROR']);
    const overview = JSON.parse((await get('/api/overview')).body);
    expect(overview.supervisors.map((x: { id: string }) => x.id)).toContain(sup.id);
    expect(overview.states.failed).toBeGreaterThanOrEqual(1);
    await sup.stop({ graceMs: 0 });
    sup = undefined;
  });

  it("shows each queue's limits and whether it is paused across the fleet, even with no jobs", async () => {
    const control = createControl({ connectionString: db.url, schema: db.schema });
    try {
      await control.setQueue('dash-limited', { concurrency: 4, groupConcurrency: 1, rate: '10/s' });
      await control.pauseQueue('dash-paused');
    } finally {
      await control.close();
    }
    await client.addJob('mail', {}, { queue: 'dash-limited', group: 'g' });
    const overview = JSON.parse((await get('/api/overview')).body);
    const byName = Object.fromEntries(overview.queues.map((q: { queue: string }) => [q.queue, q]));
    expect(byName['dash-limited']).toMatchObject({ due: 1, paused: false, limits: 'concurrency 4, per group 1, rate 10/s' });
    expect(byName['dash-paused']).toMatchObject({ due: 0, running: 0, paused: true, limits: null });
  });

  it('never shows the connection password', async () => {
    const bodies = await Promise.all(['/', '/api/overview', '/api/supervisors', '/api/schedules', '/api/jobs'].map((p) => get(p)));
    for (const b of bodies) expect(b.body).not.toContain(password);
  });
});

describe('actions', () => {
  it('are refused without the page token, from another origin, or cross-site', async () => {
    const id = await failedJob();
    const token = await csrfToken();
    expect((await post(`/api/jobs/${id}/retry`, {})).status).toBe(403);
    expect((await post(`/api/jobs/${id}/retry`, { 'x-grapevine-csrf': 'guess' })).status).toBe(403);
    expect((await post(`/api/jobs/${id}/retry`, { 'x-grapevine-csrf': token, origin: 'https://evil.example' })).status).toBe(403);
    expect((await post(`/api/jobs/${id}/retry`, { 'x-grapevine-csrf': token, 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await client.getJob(id))!.state).toBe('failed');
    const ok = await post(`/api/jobs/${id}/retry`, { 'x-grapevine-csrf': token, origin: site.url });
    expect(ok).toEqual({ status: 200, body: { retried: [id] } });
    expect((await client.getJob(id))!.state).toBe('pending');
    const cancelled = await post(`/api/jobs/${id}/cancel`, { 'x-grapevine-csrf': token });
    expect(cancelled.body).toEqual({ cancelled: [id], cancelling: [] });
    // A bulk action with no filter would act on every job: refused, naming the fix.
    const everything = await post('/api/matching/retry', { 'x-grapevine-csrf': token });
    expect(everything.status).toBe(400);
    expect(everything.body.error.message).toContain('empty filter');
  });

  it('are refused, and hidden, in read-only mode', async () => {
    const readOnly = createDashboardHandler({ connectionString: db.url, schema: db.schema, readOnly: true });
    const other = await serve(readOnly);
    try {
      const page = await (await fetch(`${other.url}/`)).text();
      expect(page).toContain('name="grapevine-readonly" content="true"');
      const token = /name="grapevine-csrf" content="([^"]+)"/.exec(page)![1];
      const id = await failedJob();
      const res = await fetch(`${other.url}/api/jobs/${id}/retry`, { method: 'POST', headers: { 'x-grapevine-csrf': token } });
      expect(res.status).toBe(403);
      expect((await client.getJob(id))!.state).toBe('failed');
    } finally {
      await other.close();
      await readOnly.close();
    }
  });
});

describe('live updates', () => {
  it('feed every browser from one LISTEN connection, and tell them when a job is added', async () => {
    const streams = await Promise.all([1, 2, 3].map(() => openStream(`${base()}/api/events`)));
    try {
      await eventually(() => streams.every((st) => st.text.includes('event: overview')), 'every stream to get the overview');
      const listening = async () =>
        (
          await db.pool.query(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND application_name = 'grapevine-dashboard-listen'`,
            [role.name],
          )
        ).rows[0].n;
      // The LISTEN connection is opened with the first stream, and no other.
      await eventually(async () => (await listening()) >= 1, 'the LISTEN connection');
      expect(await listening()).toBe(1);
      for (const st of streams) st.text = '';
      await client.addJob('noop', {});
      await eventually(() => streams.every((st) => st.text.includes('event: jobs')), 'every stream to hear of the new job');
      expect(await listening()).toBe(1);
    } finally {
      for (const st of streams) st.close();
    }
  });
});

/** An SSE stream read as text (Node's fetch would buffer nothing, but http gives the chunks as they come). */
function openStream(url: string): Promise<{ text: string; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      const stream = { text: '', close: () => req.destroy() };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        stream.text += chunk;
      });
      res.on('error', () => {});
      resolve(stream);
    });
    req.on('error', reject);
  });
}

describe('grapevine dashboard', () => {
  it('serves on this host, names the database without its password, refuses other host names, and stops on SIGTERM', async () => {
    const proc = start([CLI, 'dashboard', '--port', '0', '--schema', db.schema, '--read-only'], { DATABASE_URL: role.url });
    try {
      const address = (await proc.waitFor(/http:\/\/127\.0\.0\.1:\d+\//)).trim();
      expect(proc.stderr()).toContain(`${role.name}@`);
      const page = await fetch(address);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('name="grapevine-readonly" content="true"');
      // A DNS-rebinding page reaches 127.0.0.1 under a host name of its own.
      const rebound = await new Promise<number>((resolve, reject) =>
        http.get(address, { headers: { host: 'attacker.example' } }, (res) => resolve(res.statusCode!)).on('error', reject),
      );
      expect(rebound).toBe(421);
    } finally {
      proc.child.kill('SIGTERM');
    }
    const exit = await proc.exited;
    expect(exit.code).toBe(0);
    expect(exit.stdout + exit.stderr).not.toContain(password);
  });
});
