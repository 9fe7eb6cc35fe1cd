/**
 * Schedule precision: how long after its tick a scheduled job's handler
 * starts, over a per-second schedule fired by two supervisors.
 *
 *   node bench/schedule-precision.ts [--ticks N] [--pgboss-seconds S]
 *
 * Uses DATABASE_URL. Two `grapevine run --crontab` processes declare the same
 * per-second schedule; the handler stamps Date.now() as it starts, and the
 * sample is that stamp minus the job's tick (scheduled_for). Both clocks are
 * this machine's. Also checks that every tick between the first and the last
 * has exactly one job.
 *
 * Then pg-boss's schedule() on the same per-second expression, two instances
 * with the shortest cron pass it accepts (cronMonitorIntervalSeconds 1), for
 * S seconds (default 65, 0 to skip): the version installed here files a cron
 * occurrence under its minute, so it sends at most one job a minute, and
 * there is no per-second precision to compare. The run prints how many jobs
 * it sent rather than a tick-to-start figure.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { PgBoss } from 'pg-boss';
import { installedVersion } from './lib/db.ts';
import { percentiles } from './lib/stats.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCHEMA = 'bench_schedules';
const { values } = parseArgs({ options: { ticks: { type: 'string' }, 'pgboss-seconds': { type: 'string' } } });
const ticks = Number(values.ticks ?? 100);
const pgbossSeconds = Number(values['pgboss-seconds'] ?? 65);
const url = process.env.DATABASE_URL;
if (!url) throw new Error('set DATABASE_URL');

const dir = await mkdtemp(path.join(os.tmpdir(), 'grapevine-schedule-bench-'));
await writeFile(path.join(dir, 'stamp.mjs'), 'export default async function stamp() { return { startedAt: Date.now() }; }\n');
const crontab = path.join(dir, 'crontab');
await writeFile(crontab, '* * * * * * stamp --name=every-second\n');
const pool = new pg.Pool({ connectionString: url, max: 2 });
await pool.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);

const supervisors = [1, 2].map(() =>
  spawn(
    process.execPath,
    [
      path.join(ROOT, 'dist/supervisor/cli.js'),
      'run',
      '--tasks',
      dir,
      '--threads',
      '1',
      '--crontab',
      crontab,
      '--schema',
      SCHEMA,
      '--log-level',
      'warn',
    ],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  ),
);
try {
  const done = async () =>
    (
      await pool
        .query(`SELECT count(*)::int AS n FROM ${SCHEMA}.jobs WHERE schedule = 'every-second' AND state = 'succeeded'`)
        .catch(() => ({ rows: [{ n: 0 }] }))
    ).rows[0].n;
  while ((await done()) < ticks) await new Promise((r) => setTimeout(r, 500));
} finally {
  for (const child of supervisors) child.kill('SIGTERM');
  await Promise.all(supervisors.map((child) => new Promise((r) => child.once('exit', r))));
}
const { rows } = await pool.query(
  `SELECT scheduled_for, created_at, (result->>'startedAt')::bigint AS started_at FROM ${SCHEMA}.jobs
    WHERE schedule = 'every-second' AND state = 'succeeded' ORDER BY scheduled_for LIMIT $1`,
  [ticks],
);
const { rows: gaps } = await pool.query(
  `SELECT count(*)::int AS jobs, count(DISTINCT scheduled_for)::int AS ticks,
          (extract(epoch FROM max(scheduled_for) - min(scheduled_for)) + 1)::int AS span
     FROM ${SCHEMA}.jobs WHERE schedule = 'every-second'`,
);
await pool.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
await pool.end();
await rm(dir, { recursive: true, force: true });

const samples = rows.map((r) => Number(r.started_at) - r.scheduled_for.getTime());
const p = percentiles(samples);
// The part of it before the job's row existed: the timer and the firing transaction.
const inserted = percentiles(rows.map((r) => r.created_at.getTime() - r.scheduled_for.getTime()));
console.log(`schedule precision, ${samples.length} ticks of a per-second schedule on two supervisors (tick to handler start):`);
console.log(`  p50 ${p.p50.toFixed(1)} ms  p95 ${p.p95.toFixed(1)} ms  p99 ${p.p99.toFixed(1)} ms  max ${p.max.toFixed(1)} ms`);
console.log(`  of which tick to insert: p50 ${inserted.p50.toFixed(1)} ms  p99 ${inserted.p99.toFixed(1)} ms`);
console.log(`  jobs ${gaps[0].jobs}, distinct ticks ${gaps[0].ticks}, seconds from first to last tick ${gaps[0].span}`);

if (pgbossSeconds > 0) {
  const bossSchema = 'bench_schedules_pgboss';
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  await admin.query(`DROP SCHEMA IF EXISTS ${bossSchema} CASCADE`);
  const started: number[] = [];
  const bosses = [1, 2].map(
    () => new PgBoss({ connectionString: url, schema: bossSchema, cronMonitorIntervalSeconds: 1, cronWorkerIntervalSeconds: 1 }),
  );
  try {
    for (const boss of bosses) {
      boss.on('error', (err) => console.error('[pgboss] error', err));
      await boss.start();
    }
    if (!(await bosses[0].getQueue('every-second'))) await bosses[0].createQueue('every-second');
    await bosses[0].schedule('every-second', '* * * * * *');
    for (const boss of bosses) {
      await boss.work('every-second', { pollingIntervalSeconds: 0.5 }, async () => {
        started.push(Date.now());
      });
    }
    await new Promise((r) => setTimeout(r, pgbossSeconds * 1000));
  } finally {
    for (const boss of bosses) await boss.stop({ graceful: false }).catch(() => {});
  }
  await admin.query(`DROP SCHEMA IF EXISTS ${bossSchema} CASCADE`);
  await admin.end();
  console.log(
    `pg-boss ${installedVersion('pg-boss')} schedule('* * * * * *') on two instances, cronMonitorIntervalSeconds 1, for ${pgbossSeconds} s: ` +
      `${started.length} jobs for ${pgbossSeconds} per-second ticks (it files each cron occurrence under its minute: ` +
      'at most one job a minute, so no tick-to-start comparison)',
  );
}
