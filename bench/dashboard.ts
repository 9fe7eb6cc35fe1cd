/**
 * The dashboard's server time with 1,000,000 jobs in the table.
 *
 *   node bench/dashboard.ts [--jobs N] [--samples N] [--keep]
 *
 * Uses DATABASE_URL, else an embedded PostgreSQL in ./.grapevine/bench-db.
 * Fills a schema of its own with N jobs (default 1,000,000) shaped like a
 * busy day: mostly succeeded, 1% failed, 0.5% cancelled, 1% pending, a few
 * hundred running, the last few minutes' finishes included; VACUUM ANALYZEs it;
 * then times each page's API request inside the server (request in to
 * response finished) and drops the schema (unless --keep, to EXPLAIN). Target: p50 under 50 ms for the
 * overview (the first page) and for a filtered job list.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createClient } from '../src/client.ts';
import { createDashboardHandler } from '../src/dashboard/handler.ts';
import { startEmbeddedDatabase } from '../src/embedded.ts';

const SCHEMA = 'bench_dashboard';
const TARGET_P50_MS = 50;
const { values } = parseArgs({ options: { jobs: { type: 'string' }, samples: { type: 'string' }, keep: { type: 'boolean' } } });
const jobs = Number(values.jobs ?? 1_000_000);
const samples = Number(values.samples ?? 30);

const PAGES: Array<[string, string, number]> = [
  ['overview (first page)', '/api/overview', samples],
  ['jobs, first page, no filter', '/api/jobs', samples],
  ['jobs, state=failed', '/api/jobs?state=failed', samples],
  ['jobs, state=failed task=t3', '/api/jobs?state=failed&task=t3', samples],
  ['jobs, queue=q2 state=pending', '/api/jobs?queue=q2&state=pending', samples],
  ['jobs, state=failed error~smtp', '/api/jobs?state=failed&error=smtp', samples],
  ['jobs, 10th page of state=failed', 'PAGE10', samples],
  ['jobs, error~nothing-matches (worst case)', '/api/jobs?error=nothing-matches', 3],
];

async function main(): Promise<void> {
  const embedded = process.env.DATABASE_URL ? null : await startEmbeddedDatabase({ dir: '.grapevine/bench-db' });
  const url = process.env.DATABASE_URL ?? embedded!.connectionString;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  const client = createClient({ connectionString: url, schema: SCHEMA });
  await client.migrate();
  await client.close();

  const filled = performance.now();
  // Ids follow created_at; the last ~0.3% finished within the last five minutes.
  // Task, queue and error text vary by hundreds of ids, so that no filter's
  // matches are an artifact of the states' own modulo.
  await admin.query(
    `INSERT INTO ${SCHEMA}.jobs (task, queue, state, payload, attempts, max_attempts, last_error, run_at, created_at, started_at, finished_at)
     SELECT 't' || ((i / 100) % 10), 'q' || ((i / 1000) % 5), st, jsonb_build_object('n', i, 'to', 'user' || i || '@example.com'),
            CASE WHEN st = 'pending' THEN 0 ELSE 1 END, 5,
            CASE WHEN st = 'failed' THEN CASE WHEN (i / 100) % 2 = 0 THEN 'Error: SMTP refused the connection' ELSE 'Error: timeout after 30000 ms' END END,
            CASE WHEN st = 'pending' AND (i / 200) % 2 = 0 THEN now() + interval '1 hour' ELSE at END,
            at, CASE WHEN st <> 'pending' THEN at END, CASE WHEN st IN ('succeeded', 'failed', 'cancelled') THEN at + interval '1 second' END
       FROM (SELECT i, now() - interval '1 day' + (i::float8 / $1) * interval '1 day' - interval '2 seconds' AS at,
                    CASE WHEN i % 100 = 7 THEN 'failed' WHEN i % 200 = 11 THEN 'cancelled'
                         WHEN i > $1 - 2000 AND i % 4 = 0 THEN 'running'
                         WHEN i % 100 = 13 THEN 'pending' ELSE 'succeeded' END AS st
               FROM generate_series(1, $1) AS i) g`,
    [jobs],
  );
  // As autovacuum would leave it: statistics, the visibility map, the BRIN ranges summarised.
  await admin.query(`VACUUM ANALYZE ${SCHEMA}.jobs`);
  console.log(`${jobs.toLocaleString('en')} jobs inserted and vacuumed in ${((performance.now() - filled) / 1000).toFixed(0)} s`);

  const handler = createDashboardHandler({ connectionString: url, schema: SCHEMA });
  const times: number[] = [];
  const server = createServer((req, res) => {
    const start = performance.now();
    res.on('finish', () => times.push(performance.now() - start));
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const page10 = async () => {
    let query = '';
    for (let i = 0; i < 9; i++) query = `&after=${(await (await fetch(`${base}/api/jobs?state=failed${query}`)).json()).next}`;
    return `/api/jobs?state=failed${query}`;
  };

  const rows: string[] = [];
  for (const [name, path0, n] of PAGES) {
    const path = path0 === 'PAGE10' ? await page10() : path0;
    for (let i = 0; i < 2; i++) await (await fetch(base + path)).text(); // warm the plan cache and the pages
    times.length = 0;
    for (let i = 0; i < n; i++) {
      const res = await fetch(base + path);
      if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
      await res.text();
    }
    const sorted = [...times].sort((a, b) => a - b);
    const p50 = sorted[Math.floor(sorted.length / 2)];
    const p95 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))];
    console.log(`${name}: p50 ${p50.toFixed(1)} ms`);
    rows.push(`| ${name} | ${n} | ${p50.toFixed(1)} | ${p95.toFixed(1)} | ${p50 < TARGET_P50_MS ? 'yes' : 'no'} |`);
  }
  console.log(`\n| page (server time, ${jobs.toLocaleString('en')} jobs) | n | p50 ms | p95 ms | p50 under ${TARGET_P50_MS} ms |`);
  console.log('|---|---|---|---|---|');
  for (const row of rows) console.log(row);

  server.closeAllConnections();
  server.close();
  await handler.close();
  if (!values.keep) await admin.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
  await admin.end();
  await embedded?.stop();
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
