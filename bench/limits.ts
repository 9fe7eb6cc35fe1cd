/**
 * Flow control (docs/limits.md), two rows:
 *
 * - capped: a queue at concurrency 10 drained by 4 supervisor processes; throughput, and the
 *   highest concurrency observed (from the jobs' database stamps: started_at is stamped under the
 *   queue's lock, finished_at by the outcome write, so overlapping stamps overlapped in fact).
 * - groups: G groups x K jobs at group concurrency 1, grapevine (one supervisor process) against
 *   pg-boss's groupConcurrency 1 (one instance, the tuned profile's fetch settings), same run.
 * - unconstrained: 20,000 no-op jobs in a queue with no limit, drained by one supervisor process (2
 *   threads), with no limits configured against with another queue limited (concurrency 10, group
 *   concurrency 1, a rate): the claims then take the limited path first. Variants alternate per round.
 *
 *   npm run build && node bench/limits.ts [--jobs N] [--hold-ms MS] [--supervisors N] [--groups G] [--per-group K]
 *                                          [--only capped|groups|unconstrained] [--no-pgboss] [--rounds N]
 *
 * Uses DATABASE_URL; works in the schemas bench_limits_*, dropped at the end. The full sizes
 * (2,000 capped jobs, 1,000 x 20 groups) are the defaults; pass smaller ones for a quick look.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { PgBoss } from 'pg-boss';
import { createClient, createControl } from 'grapevine-jobs';
import { forkSupervisor, killAllChildren, type ControlledSupervisor } from './lib/procs.ts';
import { nowMs, sleep } from './lib/stats.ts';
import { TASKS_DIR } from './systems/grapevine.ts';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string' },
    'hold-ms': { type: 'string' },
    supervisors: { type: 'string' },
    groups: { type: 'string' },
    'per-group': { type: 'string' },
    only: { type: 'string' },
    'no-pgboss': { type: 'boolean' },
    rounds: { type: 'string' },
  },
});
const ROUNDS = Number(values.rounds ?? 3);
const JOBS = Number(values.jobs ?? 2_000);
const HOLD_MS = Number(values['hold-ms'] ?? 5);
const SUPERVISORS = Number(values.supervisors ?? 4);
const ONLY = values.only;
const GROUPS = Number(values.groups ?? 1_000);
const PER_GROUP = Number(values['per-group'] ?? 20);
const TIMEOUT_MS = 300_000;
const url = process.env.DATABASE_URL;
if (!url) throw new Error('set DATABASE_URL');
const pool = new pg.Pool({ connectionString: url, max: 2 });

async function fresh(schema: string): Promise<void> {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
}

async function until(what: string, done: () => Promise<boolean>): Promise<number> {
  const deadline = nowMs() + TIMEOUT_MS;
  while (!(await done())) {
    if (nowMs() > deadline) throw new Error(`${what}: not done within ${TIMEOUT_MS} ms`);
    await sleep(20);
  }
  return nowMs();
}

async function grapevineFleet(schema: string, supervisors: number, threads: number): Promise<ControlledSupervisor[]> {
  const fleet: ControlledSupervisor[] = [];
  for (let i = 0; i < supervisors; i++) {
    fleet.push(await forkSupervisor({ connectionString: url!, schema, tasks: TASKS_DIR, threads, concurrency: 64, paused: true }));
  }
  return fleet;
}

async function drainGrapevine(
  schema: string,
  fleet: ControlledSupervisor[],
  jobs: Array<{ task: string; queue: string; group?: string; payload: unknown }>,
): Promise<number> {
  const client = createClient({ connectionString: url!, schema });
  try {
    for (let i = 0; i < jobs.length; i += 5_000) await client.addJobs(jobs.slice(i, i + 5_000));
  } finally {
    await client.close();
  }
  const t0 = nowMs();
  for (const s of fleet) s.send({ kind: 'resume' });
  const t1 = await until('grapevine drain', async () => {
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".jobs WHERE state <> 'succeeded'`);
    return rows[0].n === 0;
  });
  return t1 - t0;
}

async function stopFleet(fleet: ControlledSupervisor[]): Promise<void> {
  for (const s of fleet) {
    s.send({ kind: 'stop' });
    await s.next('stopped', 10_000).catch(() => {});
  }
}

async function capped(): Promise<void> {
  const schema = 'bench_limits_capped';
  await fresh(schema);
  const control = createControl({ connectionString: url!, schema });
  await control.setQueue('capped', { concurrency: 10 });
  await control.close();
  const fleet = await grapevineFleet(schema, SUPERVISORS, 1);
  try {
    const ms = await drainGrapevine(
      schema,
      fleet,
      Array.from({ length: JOBS }, () => ({ task: 'hold', queue: 'capped', payload: { ms: HOLD_MS } })),
    );
    const { rows } = await pool.query(
      `SELECT max((SELECT count(*) FROM "${schema}".jobs b
                    WHERE b.started_at <= a.started_at AND b.finished_at > a.started_at))::int AS highest
         FROM "${schema}".jobs a`,
    );
    const ideal = (10 * 1000) / Math.max(HOLD_MS, 1);
    console.log(
      `capped  concurrency 10, ${SUPERVISORS} supervisors, ${JOBS} jobs holding ${HOLD_MS} ms: ${((JOBS * 1000) / ms).toFixed(0)} jobs/s ` +
        `(a perfect handoff: ${ideal.toFixed(0)}/s), highest concurrency observed ${rows[0].highest}`,
    );
  } finally {
    await stopFleet(fleet);
    await fresh(schema);
  }
}

async function groupsGrapevine(): Promise<number> {
  const schema = 'bench_limits_groups';
  await fresh(schema);
  const control = createControl({ connectionString: url!, schema });
  await control.setQueue('grouped', { groupConcurrency: 1 });
  await control.close();
  const fleet = await grapevineFleet(schema, 1, 2);
  try {
    const jobs = [];
    for (let g = 0; g < GROUPS; g++) {
      for (let k = 0; k < PER_GROUP; k++) jobs.push({ task: 'hold', queue: 'grouped', group: `g${g}`, payload: { ms: 0 } });
    }
    return await drainGrapevine(schema, fleet, jobs);
  } finally {
    await stopFleet(fleet);
    await fresh(schema);
  }
}

async function groupsPgBoss(): Promise<number> {
  const schema = 'bench_limits_pgboss';
  await fresh(schema);
  // With NOTIFY on, pg-boss's backstop poll is notifyPollingIntervalSeconds (30 s by default): a group's
  // next job, due once its previous one completes, is announced by nothing, so it is set to the minimum.
  const boss = new PgBoss({ connectionString: url!, schema, useListenNotify: true, max: 10 });
  boss.on('error', (err) => console.error('[pgboss]', err.message));
  await boss.start();
  try {
    await boss.createQueue('grouped', { notify: true });
    const jobs = [];
    for (let g = 0; g < GROUPS; g++) for (let k = 0; k < PER_GROUP; k++) jobs.push({ data: {}, group: { id: `g${g}` } });
    for (let i = 0; i < jobs.length; i += 5_000) await boss.insert('grouped', jobs.slice(i, i + 5_000));
    const t0 = nowMs();
    await boss.work(
      'grouped',
      { batchSize: 250, localConcurrency: 2, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 0.5, groupConcurrency: 1 },
      async () => {},
    );
    const t1 = await until('pg-boss drain', async () => {
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".job WHERE name = 'grouped' AND state <> 'completed'`);
      return rows[0].n === 0;
    });
    return t1 - t0;
  } finally {
    await boss.stop({ graceful: true, timeout: 5000, close: true });
    await fresh(schema);
  }
}

async function unconstrained(): Promise<void> {
  const rates: Record<'none' | 'configured', number[]> = { none: [], configured: [] };
  const count = 20_000;
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? (['none', 'configured'] as const) : (['configured', 'none'] as const);
    for (const variant of order) {
      const schema = 'bench_limits_unconstrained';
      await fresh(schema);
      if (variant === 'configured') {
        const control = createControl({ connectionString: url!, schema });
        await control.setQueue('limited-elsewhere', { concurrency: 10, groupConcurrency: 1, rate: '100/1s' });
        await control.close();
      }
      const fleet = await grapevineFleet(schema, 1, 2);
      try {
        const ms = await drainGrapevine(
          schema,
          fleet,
          Array.from({ length: count }, () => ({ task: 'hold', queue: 'default', payload: { ms: 0 } })),
        );
        rates[variant].push((count * 1000) / ms);
      } finally {
        await stopFleet(fleet);
        await fresh(schema);
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const none = median(rates.none);
  const configured = median(rates.configured);
  console.log(
    `unconstrained  ${count} jobs, no limits configured ${none.toFixed(0)} jobs/s (${rates.none.map((r) => r.toFixed(0)).join(', ')}), ` +
      `another queue limited ${configured.toFixed(0)} jobs/s (${rates.configured.map((r) => r.toFixed(0)).join(', ')}), ratio ${(configured / none).toFixed(3)}`,
  );
}

try {
  if (ONLY === 'unconstrained') await unconstrained();
  else if (ONLY !== 'groups') await capped();
  if (ONLY !== 'capped' && ONLY !== 'unconstrained') {
    const total = GROUPS * PER_GROUP;
    const gv = await groupsGrapevine();
    const line = `groups  ${GROUPS} x ${PER_GROUP} at group concurrency 1: grapevine ${((total * 1000) / gv).toFixed(0)} jobs/s`;
    if (values['no-pgboss']) console.log(line);
    else {
      const boss = await groupsPgBoss();
      console.log(`${line}, pg-boss (groupConcurrency 1) ${((total * 1000) / boss).toFixed(0)} jobs/s, ratio ${(boss / gv).toFixed(2)}x`);
    }
  }
} finally {
  killAllChildren();
  await pool.end();
}
