/**
 * Fan-out and fan-in: one parent, N children (default 10,000), one fan-in job
 * waiting for every child (docs/workflows.md), run by a `grapevine run`
 * process. Reports, from the jobs' own timestamps (the server's clock):
 * - wake: the fan-in's start minus the moment the last child's outcome
 *   write made it due (a bench-only trigger notes clock_timestamp() there,
 *   inside that write's transaction): commit, notification, claim;
 * - drain: the fan-in's end minus the flow's enqueue, the whole flow.
 * grapevine only: the bench runs no other system's flows.
 *
 *   node bench/flow.ts [--children N] [--rounds N] [--threads N]
 *
 * Uses DATABASE_URL, else an embedded PostgreSQL in ./.grapevine/bench-db.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createClient } from '../src/client.ts';
import { startEmbeddedDatabase } from '../src/embedded.ts';
import { describeConnection } from '../src/redact.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCHEMA = 'bench_flow';

const { values } = parseArgs({ options: { children: { type: 'string' }, rounds: { type: 'string' }, threads: { type: 'string' } } });
const children = Number(values.children ?? 10_000);
const rounds = Number(values.rounds ?? 3);
const threads = Number(values.threads ?? os.availableParallelism());

async function main(): Promise<void> {
  const embedded = process.env.DATABASE_URL ? null : await startEmbeddedDatabase({ dir: '.grapevine/bench-db' });
  const url = process.env.DATABASE_URL ?? embedded!.connectionString;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
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
    const rows: string[] = [];
    for (let round = 0; round <= rounds; round++) {
      const started = performance.now();
      const ids = await client.addFlow([
        { name: 'parent', task: 'child', payload: { i: -1 } },
        ...Array.from({ length: children }, (_, i) => ({ name: `c${i}`, task: 'child', payload: { i }, after: ['parent'] })),
        { name: 'fan-in', task: 'fan-in', after: Array.from({ length: children }, (_, i) => `c${i}`) },
      ]);
      const enqueueMs = performance.now() - started;
      const done = await client.waitForJob(ids['fan-in'], { timeoutMs: 600_000 });
      if (done.state !== 'succeeded' || (done.result as { children: number }).children !== children) {
        throw new Error(`the fan-in ended ${done.state}: ${JSON.stringify(done.result ?? done.lastError)}`);
      }
      const { rows: t } = await admin.query(
        `SELECT extract(epoch FROM f.started_at - w.at) * 1000 AS wake_ms,
                extract(epoch FROM f.finished_at - p.created_at) * 1000 AS drain_ms
           FROM ${SCHEMA}.jobs f JOIN ${SCHEMA}.woken w ON w.id = f.id, ${SCHEMA}.jobs p
          WHERE f.id = $1 AND p.id = $2`,
        [ids['fan-in'], ids.parent],
      );
      // Round 0 warms the supervisor's threads and the database up, and is not reported.
      if (round > 0) {
        rows.push(
          `| ${round} | ${children} | ${enqueueMs.toFixed(0)} | ${Number(t[0].wake_ms).toFixed(1)} | ${Number(t[0].drain_ms).toFixed(0)} | ${((children + 2) / (Number(t[0].drain_ms) / 1000)).toFixed(0)} |`,
        );
      }
      await admin.query(`DELETE FROM ${SCHEMA}.jobs; DELETE FROM ${SCHEMA}.job_dependencies; DELETE FROM ${SCHEMA}.woken`);
    }
    // The same number of jobs without dependencies, for scale: what the flow's drain would be with no joins.
    const plainRows: string[] = [];
    for (let round = 1; round <= rounds; round++) {
      const started = performance.now();
      const ids = await client.addJobs(Array.from({ length: children + 2 }, (_, i) => ({ task: 'child', payload: { i } })));
      const enqueueMs = performance.now() - started;
      await client.waitForJob(ids[ids.length - 1], { timeoutMs: 600_000 });
      const drained = async () => (await admin.query(`SELECT 1 FROM ${SCHEMA}.jobs WHERE state <> 'succeeded' LIMIT 1`)).rowCount === 0;
      while (!(await drained())) await new Promise((r) => setTimeout(r, 50));
      const { rows: t } = await admin.query(
        `SELECT extract(epoch FROM max(finished_at) - min(created_at)) * 1000 AS drain_ms FROM ${SCHEMA}.jobs`,
      );
      plainRows.push(
        `| plain ${round} | ${children + 2} jobs, no dependencies | ${enqueueMs.toFixed(0)} (addJobs) | | ${Number(t[0].drain_ms).toFixed(0)} | ${((children + 2) / (Number(t[0].drain_ms) / 1000)).toFixed(0)} |`,
      );
      await admin.query(`DELETE FROM ${SCHEMA}.jobs`);
    }
    const load = os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
    console.log(`grapevine flow: 1 parent → ${children} children → 1 fan-in (addFlow), one \`grapevine run\` process, ${threads} threads`);
    console.log(
      `database ${describeConnection(url)}${embedded ? ' (embedded)' : ''}; ${os.availableParallelism()} cores, load average ${load}; node ${process.version}\n`,
    );
    console.log("| round | children | addFlow ms | last child's outcome → fan-in start, ms | drain ms | jobs/s |");
    console.log('|---|---|---|---|---|---|');
    for (const row of [...rows, ...plainRows]) console.log(row);
  } finally {
    child.kill('SIGTERM');
    await exited;
    await client.close();
    await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await admin.end();
    await rm(tasks, { recursive: true, force: true });
    if (embedded) await embedded.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
