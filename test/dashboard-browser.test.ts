import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { createDashboardHandler, type DashboardHandler, type Supervisor } from '../supervisor/public.ts';
import { type Browser, haveChromium, launchChromium, serve } from './helpers/browser.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

// The dashboard in a real browser (Debian's chromium through playwright-core):
// what the operator sees and clicks, checked against the database.
const db = useMigratedSchema('dash_browser');
const { client, s } = db;
const enabled = haveChromium();

let handler: DashboardHandler;
let site: Awaited<ReturnType<typeof serve>>;
let browser: Browser;
let page: Page;
let sup: Supervisor | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!enabled) return;
  // No periodic refresh within a test: what changes on screen was pushed by a notification.
  handler = createDashboardHandler({ connectionString: db.url, schema: db.schema, refreshMs: 600_000 });
  site = await serve(handler);
  browser = await launchChromium();
  page = await browser.context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
});
afterAll(async () => {
  await sup?.stop({ graceMs: 0 });
  await browser?.close();
  await site?.close();
  await handler?.close();
});

async function finishedJob(task: string, state: 'failed' | 'succeeded', error: string | null, payload: unknown = {}): Promise<string> {
  const { rows } = await db.pool.query(
    `INSERT INTO ${s}.jobs (task, state, attempts, max_attempts, last_error, payload, started_at, finished_at)
     VALUES ($1, $2, 1, 1, $3, $4, now(), now()) RETURNING id::text AS id`,
    [task, state, error, JSON.stringify(payload)],
  );
  return rows[0].id;
}

const stateOf = async (id: string) => (await client.getJob(id))!.state;
const rowIds = (p: Page) => p.locator('#jobs tr[data-job]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-job')));

describe.skipIf(!enabled)('the dashboard in chromium', () => {
  it('loads the overview with counts by state and goes live over server-sent events', async () => {
    await finishedJob('send-email', 'failed', 'Error: SMTP refused');
    await page.goto(`${site.url}/`);
    await expect.poll(() => page.locator('h1').textContent()).toBe('Overview');
    await expect.poll(() => page.locator('[data-tile="failed"] .n').textContent()).toBe('1');
    await expect.poll(() => page.locator('#live').textContent()).toBe('live');
    expect(pageErrors).toEqual([]);
  });

  it('narrows the job list with a filter', async () => {
    await finishedJob('alpha', 'succeeded', null);
    await finishedJob('beta', 'failed', 'Error: beta broke');
    await finishedJob('alpha', 'failed', 'Error: alpha broke');
    await page.goto(`${site.url}/#/jobs`);
    await expect.poll(async () => (await rowIds(page)).length).toBeGreaterThanOrEqual(4);
    await page.fill('#filters input[name="task"]', 'alpha');
    await page.click('#filters button[type="submit"]');
    await expect.poll(() => page.locator('#jobs tr[data-job] td:nth-child(2)').allTextContents()).toEqual(['alpha', 'alpha']);
    await page.selectOption('#filters select[name="state"]', 'failed');
    await page.click('#filters button[type="submit"]');
    await expect.poll(() => page.locator('#jobs tr[data-job] td:nth-child(2)').allTextContents()).toEqual(['alpha']);
    expect(page.url()).toContain('task=alpha');
    await page.goto(`${site.url}/#/jobs`);
    // The unfiltered view replaces the form: fill the new one, not the one it is about to replace.
    await expect.poll(async () => (await rowIds(page)).length).toBeGreaterThanOrEqual(4);
    await page.fill('#filters input[name="error"]', 'BETA BROKE');
    await page.click('#filters button[type="submit"]');
    await expect.poll(() => page.locator('#jobs tr[data-job] td:nth-child(2)').allTextContents()).toEqual(['beta']);
    await page.fill('#filters input[name="since"]', '2099-01-01T00:00');
    await page.click('#filters button[type="submit"]');
    await expect.poll(() => page.locator('#jobs td').first().textContent()).toBe('No jobs match.');
    expect(decodeURIComponent(page.url())).toMatch(/since=2099-01-0\dT/);
  });

  it('sends a failed job back to pending with its retry button, only after the confirmation', async () => {
    // Later than now, so that nothing else races the check (no supervisor runs here anyway).
    const id = await finishedJob('report', 'failed', 'Error: upstream 503\n    at fetch (report.mjs:3:9)');
    await page.goto(`${site.url}/#/job/${id}`);
    await expect.poll(() => page.locator('#error').textContent()).toContain('at fetch (report.mjs:3:9)');
    await page.click('button[data-action="retry"]');
    await expect.poll(() => page.locator('#confirm').isVisible()).toBe(true);
    await page.click('#confirm-no');
    expect(await stateOf(id)).toBe('failed');
    await page.click('button[data-action="retry"]');
    await page.click('#confirm-yes');
    await eventually(async () => (await stateOf(id)) === 'pending', 'the retried job to be pending in the database');
    await expect.poll(() => page.locator('h1 .state').textContent()).toBe('pending');
  });

  it('retries every failed job a filter matches, after the confirmation, and no other', async () => {
    const mine = [await finishedJob('bulk-task', 'failed', 'Error: x'), await finishedJob('bulk-task', 'failed', 'Error: y')];
    const other = await finishedJob('other-task', 'failed', 'Error: z');
    await page.goto(`${site.url}/#/jobs?state=failed&task=bulk-task`);
    await expect.poll(async () => (await rowIds(page)).sort()).toEqual([...mine].sort());
    await page.click('button[data-action="retry-all-matching"]');
    await expect.poll(() => page.locator('#confirm-text').textContent()).toContain('task=bulk-task');
    await page.click('#confirm-yes');
    await expect.poll(() => page.locator('[role="alert"]').textContent()).toBe('retried 2 jobs');
    expect(await Promise.all(mine.map(stateOf))).toEqual(['pending', 'pending']);
    expect(await stateOf(other)).toBe('failed');
  });

  it('shows a job added meanwhile on the open list, pushed over server-sent events', async () => {
    await page.goto(`${site.url}/#/jobs`);
    await expect.poll(() => page.locator('#live').textContent()).toBe('live');
    const before = await rowIds(page);
    const id = await client.addJob('arrives-live', { n: 1 });
    // The list re-reads only on a `jobs` event: nothing polls it.
    await expect.poll(async () => (await rowIds(page))[0], { timeout: 20_000 }).toBe(id);
    expect(before).not.toContain(id);
  });

  it('shows user data as text: markup in a task, payload or error never runs', async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
    const id = await finishedJob(`t${evil}`.slice(0, 120), 'failed', `Error: ${evil}`, { html: evil });
    await page.goto(`${site.url}/#/jobs?state=failed`);
    await expect.poll(async () => (await rowIds(page)).includes(id)).toBe(true);
    await page.goto(`${site.url}/#/job/${id}`);
    await expect.poll(() => page.locator('#payload').textContent()).toContain('<script>window.__pwned=2</script>');
    expect(await page.locator('#error').textContent()).toContain('onerror="window.__pwned=1"');
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.locator('#view img, #view script').count()).toBe(0);
  });

  it("moves a running job's progress bar as its handler reports, pushed over the progress channel", async () => {
    const gate = `${s}.gate`;
    await db.pool.query(`CREATE TABLE ${gate} (step integer NOT NULL); INSERT INTO ${gate} VALUES (0)`);
    sup = await startTestSupervisor(db, { threads: 1 });
    const id = await client.addJob('progress', { gate, steps: 4 });
    await eventually(async () => (await stateOf(id)) === 'running', 'the job to run');
    await page.goto(`${site.url}/#/job/${id}`);
    const bar = () => page.locator('#progress [role="progressbar"]').getAttribute('aria-valuenow');
    await expect.poll(bar, { timeout: 30_000 }).toBe('25');
    // The page marked the job watched: its progress writes are now announced.
    const { rows } = await db.pool.query(`SELECT progress_watched_until > now() AS watched FROM ${s}.jobs WHERE id = $1`, [id]);
    expect(rows[0].watched).toBe(true);
    await db.pool.query(`UPDATE ${gate} SET step = 1`);
    await expect.poll(bar, { timeout: 30_000 }).toBe('50');
    await db.pool.query(`UPDATE ${gate} SET step = 2`);
    await expect.poll(bar, { timeout: 30_000 }).toBe('75');
    await db.pool.query(`UPDATE ${gate} SET step = 4`);
    await client.waitForJob(id, { timeoutMs: 30_000 });
  });
});
