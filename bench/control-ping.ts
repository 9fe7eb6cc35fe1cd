/**
 * PING round trip to a supervisor whose threads are all stuck in CPU loops.
 *
 *   node bench/control-ping.ts [--pings N] [--threads N]
 *
 * Uses DATABASE_URL, else an embedded PostgreSQL in ./.grapevine/bench-db.
 * The supervisor is a separate `grapevine run` process; every one of its
 * threads runs a job that spins on the CPU for the whole measurement, so a
 * PING is answered only if messages are handled on the main thread and not
 * behind a job. The time measured is what an operator sees: sendAndWait()
 * from send to the response in hand. Target: median under 50 ms.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createClient } from '../src/client.ts';
import { createControl } from '../src/control.ts';
import { startEmbeddedDatabase } from '../src/embedded.ts';
import { describeConnection } from '../src/redact.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCHEMA = 'bench_control_ping';
const TARGET_MEDIAN_MS = 50;

const { values } = parseArgs({ options: { pings: { type: 'string' }, threads: { type: 'string' } } });
const pings = Number(values.pings ?? 200);
const threads = Number(values.threads ?? os.availableParallelism());

function summarize(samples: number[]): { n: number; median: number; p95: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { n: sorted.length, median: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] };
}

const fmt = (s: ReturnType<typeof summarize>) =>
  `n=${s.n}  median ${s.median.toFixed(1)} ms  p95 ${s.p95.toFixed(1)} ms  max ${s.max.toFixed(1)} ms`;

async function main(): Promise<void> {
  const embedded = process.env.DATABASE_URL ? null : await startEmbeddedDatabase({ dir: '.grapevine/bench-db' });
  const url = process.env.DATABASE_URL ?? embedded!.connectionString;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.end();

  const tasks = await mkdtemp(path.join(os.tmpdir(), 'grapevine-ping-bench-'));
  await writeFile(
    path.join(tasks, 'burn.mjs'),
    'export default async function burn({ until }) { let x = 0; while (Date.now() < until) x++; return { x }; }\n',
  );
  const client = createClient({ connectionString: url, schema: SCHEMA });
  await client.migrate();
  const control = createControl({ connectionString: url, schema: SCHEMA });

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
      '--concurrency',
      '1',
      '--log-level',
      'error',
    ],
    { env: { ...process.env, DATABASE_URL: url }, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    let worker: string | undefined;
    while (!worker) {
      worker = (await control.supervisors()).find((w) => w.pid === child.pid && w.status !== 'EXITED')?.id;
      if (!worker) await new Promise((r) => setTimeout(r, 100));
    }
    const ping = async () => {
      const start = performance.now();
      const responses = await control.sendAndWait('PING', undefined, { supervisors: [worker], timeoutMs: 10_000 });
      if (responses[worker].value !== 'PONG') throw new Error(`unexpected answer ${JSON.stringify(responses[worker])}`);
      return performance.now() - start;
    };

    for (let i = 0; i < 10; i++) await ping();
    const idle: number[] = [];
    for (let i = 0; i < Math.min(50, pings); i++) idle.push(await ping());

    // One burning job per thread, long enough to outlast the measurement.
    const until = Date.now() + 120_000;
    await client.addJobs(Array.from({ length: threads }, () => ({ task: 'burn', payload: { until } })));
    for (;;) {
      const info = (await control.sendAndWait('INFO', undefined, { supervisors: [worker] }))[worker].value as {
        threadStates: Array<{ currentJobs: string[] }>;
      };
      if (info.threadStates.length === threads && info.threadStates.every((t) => t.currentJobs.length > 0)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const busy: number[] = [];
    for (let i = 0; i < pings; i++) busy.push(await ping());
    const info = (await control.sendAndWait('INFO', undefined, { supervisors: [worker] }))[worker].value as {
      threadStates: Array<{ currentJobs: string[] }>;
    };
    const stillBusy = info.threadStates.filter((t) => t.currentJobs.length > 0).length;

    const b = summarize(busy);
    console.log('grapevine control plane: PING round trip (control.sendAndWait, supervisor in its own process)');
    const load = os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
    console.log(
      `database ${describeConnection(url)}${embedded ? ' (embedded)' : ''}; ${os.availableParallelism()} cores, load average ${load}; node ${process.version}`,
    );
    console.log(`idle threads:                        ${fmt(summarize(idle))}`);
    console.log(`all ${threads} threads in a CPU loop:         ${fmt(b)}  (${stillBusy}/${threads} threads still busy at the end)`);
    console.log(`target: median under ${TARGET_MEDIAN_MS} ms with every thread busy: ${b.median < TARGET_MEDIAN_MS ? 'met' : 'NOT met'}`);
  } finally {
    // Twice: the second stop does not wait for the burning jobs.
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGTERM'), 200).unref();
    await exited;
    await control.close();
    await client.close();
    await rm(tasks, { recursive: true, force: true });
    if (embedded) await embedded.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
