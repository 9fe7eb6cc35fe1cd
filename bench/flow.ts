/**
 * Fan-out and fan-in: one parent, N children (default 10,000), one fan-in job
 * waiting for every child (docs/workflows.md), run by a `grapevine run`
 * process. Reports, from the jobs' own timestamps (the server's clock):
 * - due: the last child's outcome (its finished_at) to the fan-in becoming
 *   due (a bench-only trigger notes clock_timestamp() there, inside the
 *   waking transaction);
 * - wake: the last child's outcome to the fan-in's start: due, commit,
 *   notification, claim;
 * - drain: the fan-in's end minus the flow's enqueue, the whole flow.
 * Then the same flow through pg-boss's flow() in the same run (bench/systems/pgboss.ts's
 * tuned worker settings), timed from pg-boss's own job table; --pgboss false skips it.
 * BullMQ's FlowProducer is not run: its flows are trees (a parent runs after its
 * children), so "one parent → children → one fan-in" is not one BullMQ flow.
 *
 *   node bench/flow.ts [--children N] [--rounds N] [--threads N] [--pgboss false]
 *
 * Uses DATABASE_URL, else an embedded PostgreSQL in ./.grapevine/bench-db.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PgBoss } from 'pg-boss';
import pg from 'pg';
import { createClient } from '../src/client.ts';
import { startEmbeddedDatabase } from '../src/embedded.ts';
import { describeConnection } from '../src/redact.ts';
import { installedVersion } from './lib/db.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCHEMA = 'bench_flow';
const PGBOSS_SCHEMA = 'bench_flow_pgboss';

const { values } = parseArgs({
  options: { children: { type: 'string' }, rounds: { type: 'string' }, threads: { type: 'string' }, pgboss: { type: 'string' } },
});
const children = Number(values.children ?? 10_000);
const rounds = Number(values.rounds ?? 3);
const threads = Number(values.threads ?? os.availableParallelism());
const withPgBoss = values.pgboss !== 'false';
// bench/systems/pgboss.ts's tuned settings, plus two pg-boss needs for flows: flowIntervalSeconds at
// its minimum (default 5), and notifyPollingIntervalSeconds at its minimum (default 30): pg-boss's
// resolver releases dependents without a NOTIFY, so with the default backstop each level of the
// flow (the children, then the fan-in) waits up to 30 s (measured: ~30 s each, 60 s drains).
const PGBOSS_WORKER = {
  batchSize: 250,
  localConcurrency: 2,
  burstWhenBatchFull: true,
  pollingIntervalSeconds: 0.5,
  notifyPollingIntervalSeconds: 0.5,
};
const PGBOSS_FLOW_INTERVAL_S = 1;

/** One measured round: all in ms. `due` is the last child's outcome to the fan-in becoming due. */
interface Round {
  enqueue: number;
  due: number;
  wake: number;
  drain: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const row = (system: string, round: string, what: string, r: Round): string =>
  `| ${system} | ${round} | ${what} | ${r.enqueue.toFixed(0)} | ${Number.isNaN(r.due) ? '' : r.due.toFixed(1)} | ${Number.isNaN(r.wake) ? '' : r.wake.toFixed(1)} | ${r.drain.toFixed(0)} | ${((children + 2) / (r.drain / 1000)).toFixed(0)} |`;

async function runGrapevine(url: string, admin: pg.Client): Promise<{ flow: Round[]; plain: Round[] }> {
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  const tasks = await mkdtemp(path.join(os.tmpdir(), 'grapevine-flow-bench-'));
  await writeFile(path.join(tasks, 'child.mjs'), 'export default async function child({ i }) { return { i }; }\n');
  await writeFile(
    path.join(tasks, 'fan-in.mjs'),
    'export default async function fanIn(_, { dependencies }) { return { children: (await dependencies()).length }; }\n',
  );
  const client = createClient({ connectionString: url, schema: SCHEMA });
  await client.migrate();
  // The instant a job without dependents (the fan-in) is woken, in the waking transaction.
  await admin.query(`
    CREATE TABLE ${SCHEMA}.woken (id bigint PRIMARY KEY, at timestamptz NOT NULL);
    CREATE FUNCTION ${SCHEMA}.note_wake() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO ${SCHEMA}.woken VALUES (NEW.id, clock_timestamp()); RETURN NULL; END $$;
    CREATE TRIGGER note_wake AFTER UPDATE OF state ON ${SCHEMA}.jobs FOR EACH ROW
      WHEN (OLD.state = 'waiting' AND NEW.state = 'pending' AND NOT NEW.has_dependents) EXECUTE FUNCTION ${SCHEMA}.note_wake();`);
  const child = spawn(
    process.execPath,
    [
      path.join(ROOT, 'supervisor/cli.ts'),
      'run',
      '--tasks',
      tasks,
      '--schema',
      SCHEMA,
      '--threads',
      String(threads),
      '--log-level',
      'error',
    ],
    { env: { ...process.env, DATABASE_URL: url }, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    const flow: Round[] = [];
    for (let round = 0; round <= rounds; round++) {
      const started = performance.now();
      const ids = await client.addFlow([
        { name: 'parent', task: 'child', payload: { i: -1 } },
        ...Array.from({ length: children }, (_, i) => ({ name: `c${i}`, task: 'child', payload: { i }, after: ['parent'] })),
        { name: 'fan-in', task: 'fan-in', after: Array.from({ length: children }, (_, i) => `c${i}`) },
      ]);
      const enqueue = performance.now() - started;
      const done = await client.waitForJob(ids['fan-in'], { timeoutMs: 600_000 });
      if (done.state !== 'succeeded' || (done.result as { children: number }).children !== children) {
        throw new Error(`the fan-in ended ${done.state}: ${JSON.stringify(done.result ?? done.lastError)}`);
      }
      const { rows: t } = await admin.query(
        `WITH last AS (SELECT max(finished_at) AS at FROM ${SCHEMA}.jobs WHERE task = 'child')
         SELECT extract(epoch FROM w.at - last.at) * 1000 AS due_ms,
                extract(epoch FROM f.started_at - last.at) * 1000 AS wake_ms,
                extract(epoch FROM f.finished_at - p.created_at) * 1000 AS drain_ms
           FROM ${SCHEMA}.jobs f JOIN ${SCHEMA}.woken w ON w.id = f.id, ${SCHEMA}.jobs p, last
          WHERE f.id = $1 AND p.id = $2`,
        [ids['fan-in'], ids.parent],
      );
      // Round 0 warms the supervisor's threads and the database up, and is not reported.
      if (round > 0) flow.push({ enqueue, due: Number(t[0].due_ms), wake: Number(t[0].wake_ms), drain: Number(t[0].drain_ms) });
      await admin.query(`DELETE FROM ${SCHEMA}.jobs; DELETE FROM ${SCHEMA}.job_dependencies; DELETE FROM ${SCHEMA}.woken`);
    }
    // The same number of jobs without dependencies, for scale: what the flow's drain would be with no joins.
    const plain: Round[] = [];
    for (let round = 1; round <= rounds; round++) {
      const started = performance.now();
      const ids = await client.addJobs(Array.from({ length: children + 2 }, (_, i) => ({ task: 'child', payload: { i } })));
      const enqueue = performance.now() - started;
      await client.waitForJob(ids[ids.length - 1], { timeoutMs: 600_000 });
      const drained = async () => (await admin.query(`SELECT 1 FROM ${SCHEMA}.jobs WHERE state <> 'succeeded' LIMIT 1`)).rowCount === 0;
      while (!(await drained())) await new Promise((r) => setTimeout(r, 50));
      const { rows: t } = await admin.query(
        `SELECT extract(epoch FROM max(finished_at) - min(created_at)) * 1000 AS drain_ms FROM ${SCHEMA}.jobs`,
      );
      plain.push({ enqueue, due: Number.NaN, wake: Number.NaN, drain: Number(t[0].drain_ms) });
      await admin.query(`DELETE FROM ${SCHEMA}.jobs`);
    }
    return { flow, plain };
  } finally {
    child.kill('SIGTERM');
    await exited;
    await client.close();
    await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await rm(tasks, { recursive: true, force: true });
  }
}

/**
 * The same flow through pg-boss: flow() with refs and dependsOn, one in-process instance working
 * both queues. pg-boss does not unblock dependents when a job completes: its background resolver
 * (Navigator, every flowIntervalSeconds) decrements them and moves a released job's start_after to
 * the release, and no notification follows, so a worker's next poll fetches it. Timestamps are
 * the job table's (created_on, start_after, started_on, completed_on; the server's clock).
 */
async function runPgBoss(url: string, admin: pg.Client): Promise<Round[]> {
  const s = PGBOSS_SCHEMA;
  await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  const boss = new PgBoss({
    connectionString: url,
    schema: s,
    useListenNotify: true,
    max: 10,
    flowIntervalSeconds: PGBOSS_FLOW_INTERVAL_S,
  });
  boss.on('error', (err) => console.error('[pgboss] error', err));
  await boss.start();
  try {
    for (const q of ['flow_child', 'flow_fanin']) await boss.createQueue(q, { notify: true });
    await boss.work('flow_child', PGBOSS_WORKER, async () => {});
    await boss.work('flow_fanin', PGBOSS_WORKER, async () => {});
    const out: Round[] = [];
    for (let round = 0; round <= rounds; round++) {
      const started = performance.now();
      const ids = await boss.flow([
        { ref: 'parent', name: 'flow_child', data: { i: -1 } },
        ...Array.from({ length: children }, (_, i) => ({ ref: `c${i}`, name: 'flow_child', data: { i }, dependsOn: ['parent'] })),
        { ref: 'fan-in', name: 'flow_fanin', dependsOn: Array.from({ length: children }, (_, i) => `c${i}`) },
      ]);
      const enqueue = performance.now() - started;
      const deadline = Date.now() + 600_000;
      for (;;) {
        const { rows } = await admin.query(`SELECT state FROM ${s}.job WHERE name = 'flow_fanin' AND id = $1`, [ids['fan-in']]);
        if (rows[0]?.state === 'completed') break;
        if (rows[0]?.state === 'failed' || Date.now() > deadline) throw new Error(`pg-boss's fan-in ended ${rows[0]?.state}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const { rows: t } = await admin.query(
        `WITH last AS (SELECT max(completed_on) AS at, count(*) FILTER (WHERE state = 'completed') AS n FROM ${s}.job WHERE name = 'flow_child')
         SELECT last.n, extract(epoch FROM f.start_after - last.at) * 1000 AS due_ms,
                extract(epoch FROM f.started_on - last.at) * 1000 AS wake_ms,
                extract(epoch FROM f.completed_on - p.created_on) * 1000 AS drain_ms
           FROM ${s}.job f, ${s}.job p, last
          WHERE f.name = 'flow_fanin' AND f.id = $1 AND p.name = 'flow_child' AND p.id = $2`,
        [ids['fan-in'], ids.parent],
      );
      if (Number(t[0].n) !== children + 1) throw new Error(`pg-boss completed ${t[0].n} of ${children + 1} children and parent`);
      if (round > 0) out.push({ enqueue, due: Number(t[0].due_ms), wake: Number(t[0].wake_ms), drain: Number(t[0].drain_ms) });
      await admin.query(`DELETE FROM ${s}.job_dependency; DELETE FROM ${s}.job`);
    }
    return out;
  } finally {
    await boss.stop({ graceful: true, timeout: 5000, close: true });
    await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  }
}

async function main(): Promise<void> {
  const embedded = process.env.DATABASE_URL ? null : await startEmbeddedDatabase({ dir: '.grapevine/bench-db' });
  const url = process.env.DATABASE_URL ?? embedded!.connectionString;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    const gv = await runGrapevine(url, admin);
    const pb = withPgBoss ? await runPgBoss(url, admin) : [];
    const load = os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
    console.log(`flow: 1 parent → ${children} children → 1 fan-in; ${rounds} rounds after a warm-up round`);
    console.log(`grapevine: addFlow, one \`grapevine run\` process, ${threads} threads`);
    if (withPgBoss) {
      console.log(
        `pg-boss ${installedVersion('pg-boss')}: flow() with dependsOn, one in-process instance, useListenNotify, queues notify: true, work(${JSON.stringify(PGBOSS_WORKER).replaceAll('"', '')}), flowIntervalSeconds ${PGBOSS_FLOW_INTERVAL_S} (minimum)`,
      );
    }
    console.log(
      `database ${describeConnection(url)}${embedded ? ' (embedded)' : ''}; ${os.availableParallelism()} cores, load average ${load}; node ${process.version}\n`,
    );
    console.log(
      "| system | round | shape | enqueue ms | last child's outcome → fan-in due, ms | last child's outcome → fan-in start, ms | drain ms | jobs/s |",
    );
    console.log('|---|---|---|---|---|---|---|---|');
    for (const [i, r] of gv.flow.entries()) console.log(row('grapevine', String(i + 1), `flow, ${children} children`, r));
    for (const [i, r] of pb.entries()) console.log(row('pg-boss', String(i + 1), `flow, ${children} children`, r));
    for (const [i, r] of gv.plain.entries()) console.log(row('grapevine', `plain ${i + 1}`, `${children + 2} jobs, no dependencies`, r));
    if (pb.length > 0) {
      const ratio = (f: (r: Round) => number) => (median(pb.map(f)) / median(gv.flow.map(f))).toFixed(1);
      console.log(
        `\npg-boss / grapevine, medians: last child's outcome → fan-in start ${ratio((r) => r.wake)}x, drain ${ratio((r) => r.drain)}x, enqueue ${ratio((r) => r.enqueue)}x`,
      );
    }
  } finally {
    await admin.end();
    if (embedded) await embedded.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
