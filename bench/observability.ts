/**
 * Observability overhead: backlog throughput of no-op jobs with the metrics
 * port on (and the supervisor's events with no listener, as by default)
 * against the same supervisor without it, and with a listener on every event
 * for scale. The bar: metrics on, events unheard, within 3 %.
 *
 *   node bench/observability.ts [--jobs N] [--rounds N]
 *
 * Uses DATABASE_URL. Each trial: a fresh schema, N jobs queued, the
 * supervisor booted paused (threads 2, concurrency 512, deleteSucceeded, as
 * the main bench's tuned profile), then timed from resume() to the last
 * handler's report. Variants alternate within each round, so drift on a
 * shared machine spreads over all of them; the medians are compared, both
 * as jobs/s and as CPU time per job of this process (the supervisor and its
 * threads), which other load on the host skews less than the wall clock.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { createClient, startSupervisor, type SupervisorEventName, type SupervisorOptions } from 'grapevine-jobs';
import { listenToThreads } from './lib/channel.mjs';
import { median } from './lib/stats.ts';
import { TASKS_DIR } from './systems/grapevine.ts';

const { values } = parseArgs({ options: { jobs: { type: 'string' }, rounds: { type: 'string' } } });
const jobs = Number(values.jobs ?? 20_000);
const rounds = Number(values.rounds ?? 3);
const url = process.env.DATABASE_URL;
if (!url) throw new Error('set DATABASE_URL');

const EVENTS: SupervisorEventName[] = [
  'job:started',
  'job:succeeded',
  'job:failed',
  'job:retried',
  'job:cancelled',
  'job:timedOut',
  'thread:crashed',
  'thread:replaced',
  'listen:lost',
  'listen:restored',
];

interface Variant {
  name: string;
  options: Partial<SupervisorOptions>;
  listen: boolean;
}
const VARIANTS: Variant[] = [
  { name: 'plain', options: {}, listen: false },
  { name: '--metrics-port, events unheard', options: { metricsPort: 0 }, listen: false },
  { name: '--metrics-port, a listener on every event', options: { metricsPort: 0 }, listen: true },
];

const pool = new pg.Pool({ connectionString: url, max: 2 });

/** Jobs per second (wall clock), and CPU ms per 1,000 jobs (this process: the supervisor and its threads), which a loaded host skews less. */
async function trial(variant: Variant, n: number): Promise<{ rate: number; cpuMs: number }> {
  const schema = `bench_obs_${process.pid}_${n}`;
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  const client = createClient({ connectionString: url, schema });
  try {
    await client.migrate();
    for (let i = 0; i < jobs; i += 5_000) {
      await client.addJobs(Array.from({ length: Math.min(5_000, jobs - i) }, () => ({ task: 'noop', payload: {} })));
    }
    await pool.query(`VACUUM (ANALYZE) ${schema}.jobs`);
    let handled = 0;
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const channel = listenToThreads((report) => {
      if (report.kind !== 'handled') return;
      handled += report.count ?? 0;
      if (handled >= jobs) finish();
    });
    const supervisor = await startSupervisor({
      connectionString: url,
      schema,
      tasks: TASKS_DIR,
      threads: 2,
      concurrency: 512,
      deleteSucceeded: true,
      logger: pino({ level: 'warn' }),
      ...variant.options,
    });
    let heard = 0;
    if (variant.listen) for (const event of EVENTS) supervisor.on(event, () => heard++);
    supervisor.pause();
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    supervisor.resume();
    await done;
    const elapsedMs = performance.now() - started;
    const cpu = process.cpuUsage(cpuBefore);
    await supervisor.stop({ graceMs: 5_000 });
    channel.close();
    if (variant.listen && heard < jobs) throw new Error(`the listener heard ${heard} events for ${jobs} jobs`);
    return { rate: jobs / (elapsedMs / 1000), cpuMs: (cpu.user + cpu.system) / 1000 / (jobs / 1000) };
  } finally {
    await client.close();
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  }
}

const results = new Map<string, number[]>(VARIANTS.map((v) => [v.name, []]));
const cpuResults = new Map<string, number[]>(VARIANTS.map((v) => [v.name, []]));
let n = 0;
for (let round = 0; round < rounds; round++) {
  // Rotated each round, so no variant always runs first (on a cold cache) or last.
  const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]);
  for (const variant of order) {
    const { rate, cpuMs } = await trial(variant, n++);
    results.get(variant.name)!.push(rate);
    cpuResults.get(variant.name)!.push(cpuMs);
    console.log(`round ${round + 1} ${variant.name}: ${rate.toFixed(0)} jobs/s, ${cpuMs.toFixed(1)} CPU ms per 1,000 jobs`);
  }
}
await pool.end();

const base = median(results.get('plain')!);
const cpuBase = median(cpuResults.get('plain')!);
console.log(`\nobservability overhead, ${jobs} no-op jobs, ${rounds} rounds, medians (ratios to plain):`);
console.log(`  ${'variant'.padEnd(45)} ${'jobs/s'.padStart(7)}  ratio  ${'CPU ms/1k'.padStart(9)}  ratio`);
for (const [name, rates] of results) {
  const cpu = median(cpuResults.get(name)!);
  console.log(
    `  ${name.padEnd(45)} ${median(rates).toFixed(0).padStart(7)}  ${(median(rates) / base).toFixed(3)}  ${cpu.toFixed(1).padStart(9)}  ${(cpu / cpuBase).toFixed(3)}`,
  );
}
