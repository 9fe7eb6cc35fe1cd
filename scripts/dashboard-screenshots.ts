/**
 * The dashboard's screenshots in docs/img/ (docs/operations.md shows them).
 *
 *   npm run build && node scripts/dashboard-screenshots.ts
 *
 * Uses DATABASE_URL, else an embedded PostgreSQL in ./.grapevine/screenshots-db,
 * and Debian's chromium (/usr/bin/chromium) through playwright-core. Fills a
 * schema of its own with a small day of jobs, runs a real supervisor on it
 * (slow handlers, so its threads are busy in the picture), shoots each view
 * and drops the schema.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { chromium } from 'playwright-core';
import { createClient, createDashboardHandler, createSchedules, startSupervisor } from '../dist/supervisor/public.js';
import { startEmbeddedDatabase } from '../dist/src/embedded.js';
import { createLogger } from '../dist/src/log.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../test/helpers/browser.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'docs', 'img');
const SCHEMA = 'screenshots';

const embedded = process.env.DATABASE_URL ? null : await startEmbeddedDatabase({ dir: '.grapevine/screenshots-db' });
const url = process.env.DATABASE_URL ?? embedded!.connectionString;
const admin = new pg.Client({ connectionString: url });
await admin.connect();
await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);

const tasks = mkdtempSync(path.join(os.tmpdir(), 'grapevine-shots-'));
writeFileSync(
  path.join(tasks, 'resize-image.mjs'),
  `export default async (p, helpers) => {
    for (let i = 0; i <= 600; i++) { helpers.progress({ done: i * (1 + (p.n % 3)), total: 1800 }); await new Promise((r) => setTimeout(r, 100)); }
    return { width: 320 };
  }\n`,
);
writeFileSync(
  path.join(tasks, 'send-email.mjs'),
  "export default async (p) => { if (p.to.endsWith('.invalid')) throw new Error('SMTP 550: mailbox ' + p.to + ' unavailable'); return { sent: true }; }\n",
);
writeFileSync(path.join(tasks, 'nightly-report.mjs'), 'export default async () => ({ rows: 1234 });\n');

const client = createClient({ connectionString: url, schema: SCHEMA });
await client.migrate();
// A past day, written directly: finished jobs of several tasks and queues.
await admin.query(
  `INSERT INTO ${SCHEMA}.jobs (task, queue, state, payload, attempts, max_attempts, last_error, created_at, started_at, finished_at)
   SELECT t, q, st, jsonb_build_object('to', 'user' || i || '@example.com', 'template', 'welcome'), 1, 3,
          CASE WHEN st = 'failed' THEN 'Error: SMTP 421: too many connections' || E'\\n    at send (tasks/send-email.mjs:14:11)' END,
          now() - i * interval '20 seconds', now() - i * interval '20 seconds', now() - i * interval '20 seconds' + interval '150 ms'
     FROM (SELECT i, (ARRAY['send-email', 'resize-image', 'nightly-report'])[1 + i % 3] AS t,
                  (ARRAY['default', 'email', 'media'])[1 + i % 3] AS q,
                  CASE WHEN i % 17 = 0 THEN 'failed' WHEN i % 41 = 0 THEN 'cancelled' ELSE 'succeeded' END AS st
             FROM generate_series(1, 4000) i) g`,
);
const schedules = createSchedules({ connectionString: url, schema: SCHEMA });
await schedules.add({ name: 'nightly-report', cron: '0 3 * * *', tz: 'Europe/Paris', task: 'nightly-report' });
await schedules.add({ name: 'digest', cron: '*/15 * * * *', task: 'send-email', payload: { to: 'team@example.com' }, queue: 'email' });
await schedules.close();

const supervisor = await startSupervisor({
  connectionString: url,
  schema: SCHEMA,
  tasks,
  threads: 2,
  concurrency: 4,
  logger: createLogger({ level: 'silent' }),
});
for (let i = 0; i < 6; i++) await client.addJob('resize-image', { image: `photos/${i}.jpg`, width: 320, n: i }, { queue: 'media' });
for (let i = 0; i < 3; i++) await client.addJob('send-email', { to: `old${i}@example.invalid` }, { queue: 'email', maxAttempts: 1 });
for (let i = 0; i < 5; i++) await client.addJob('send-email', { to: `new${i}@example.com` }, { queue: 'email' });
await client.addJob('nightly-report', {}, { runAt: new Date(Date.now() + 3_600_000) });
await new Promise((r) => setTimeout(r, 2_000));

const handler = createDashboardHandler({ connectionString: url, schema: SCHEMA, refreshMs: 1_000 });
const server = createServer((req, res) => handler(req, res));
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const running = (await admin.query(`SELECT id FROM ${SCHEMA}.jobs WHERE state = 'running' ORDER BY id DESC LIMIT 1`)).rows[0].id;
const failed = (await admin.query(`SELECT id FROM ${SCHEMA}.jobs WHERE state = 'failed' ORDER BY id DESC LIMIT 1`)).rows[0].id;

const profile = mkdtempSync(path.join(os.tmpdir(), 'grapevine-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: CHROMIUM_ARGS,
  viewport: { width: 1280, height: 760 },
});
const page = await browser.newPage();
mkdirSync(OUT, { recursive: true });
const shots: Array<[string, string, string]> = [
  ['overview', '/#/', '#queues'],
  ['jobs', '/#/jobs?state=failed&task=send-email', '#jobs tr[data-job]'],
  ['job', `/#/job/${failed}`, '#payload'],
  ['progress', `/#/job/${running}`, '#progress'],
  ['supervisors', '/#/supervisors', '[data-supervisor]'],
  ['schedules', '/#/schedules', '#schedules'],
];
for (const [name, hash, ready] of shots) {
  await page.goto(base + hash);
  await page.waitForSelector(ready);
  await page.waitForSelector('#live.on');
  await page.screenshot({ path: path.join(OUT, `dashboard-${name}.png`), fullPage: name === 'job' });
  console.log(`docs/img/dashboard-${name}.png`);
}
await page.goto(`${base}/#/job/${failed}`);
await page.waitForSelector('#payload');
await page.click('button[data-action="retry"]');
await page.waitForSelector('#confirm[open]');
await page.screenshot({ path: path.join(OUT, 'dashboard-confirm.png') });
console.log('docs/img/dashboard-confirm.png');

await browser.close();
rmSync(profile, { recursive: true, force: true });
server.closeAllConnections();
server.close();
await handler.close();
await supervisor.stop({ graceMs: 0 });
await client.close();
await admin.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
await admin.end();
await embedded?.stop();
rmSync(tasks, { recursive: true, force: true });
