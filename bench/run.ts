// `npm run bench`: grapevine against graphile-worker, pg-boss and BullMQ's PostgreSQL
// backend on one PostgreSQL, alternating over rounds; prints medians, ratios and the
// targets, and writes BENCHMARKS.md.
//   node bench/run.ts                full run (up to 5 rounds in an 11-minute budget), writes BENCHMARKS.md
//   node bench/run.ts --smoke        a few seconds: tiny sizes, one round, grapevine + graphile-worker
//   --only=throughput,arriving,enqueue,latency,cpu,scaleout,hosts,deep,recovery   --systems=grapevine,graphile,pgboss,bullmq
//   --profiles=tuned,defaults        which settings the throughput and arriving workloads run each system with
//   --rounds=N   --write (also in smoke)   --no-write   --out=FILE   --isolate (smoke: a process per trial)
//   --jobs=N --cpu-jobs=N --deep-filler=N --latency-samples=N --kill-trials=N   (trying things out)
// Database: DATABASE_URL, else the embedded server in ./.grapevine/bench-db.
// grapevine runs from its build (dist/), as installed from npm: `npm run bench` builds first.
import './lib/build.ts';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { calibrateBurn } from './lib/calibrate.ts';
import { describeConnection, dropBenchDatabase, dropSchema, recreateBenchDatabase, serverFacts, settleDatabase } from './lib/db.ts';
import { parsePlan, rotate, type Plan, type Workload } from './lib/plan.ts';
import { killAllChildren, specEnv } from './lib/procs.ts';
import { cappedNote, enqueueTable, hostsTable, mainTable, recoveryTable, scaleTable, targetTable } from './lib/render.ts';
import { loadLine, machineLine, renderReport, writeReport } from './lib/report.ts';
import { median, nowMs } from './lib/stats.ts';
import { summarize, targets, type Subject, type TrialRecord } from './lib/summary.ts';
import { describeSettings } from './systems/index.ts';
import type { Profile, SystemName } from './systems/types.ts';
import { runTrial, type TrialResult, type TrialSpec } from './trial.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
/** One SIGKILL trial: grapevine's default 10 s lease, a reaper tick, two process boots. */
const KILL_TRIAL_ESTIMATE_MS = 14_000;
const REPO_DIR = path.join(BENCH_DIR, '..');

async function openDatabase(): Promise<{ url: string; note: string; stop: () => Promise<void> }> {
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL, note: 'DATABASE_URL', stop: async () => {} };
  const { startEmbeddedDatabase } = await import('../src/embedded.ts');
  const db = await startEmbeddedDatabase({ dir: path.join(REPO_DIR, '.grapevine', 'bench-db') });
  return { url: db.connectionString, note: 'embedded server in ./.grapevine/bench-db', stop: () => db.stop() };
}

/** A trial in a fresh process (or in this one for the smoke mode). */
function runTrialProcess(spec: TrialSpec, inProcess: boolean): Promise<TrialResult> {
  if (inProcess) return runTrial(spec, true);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(BENCH_DIR, 'trial.ts')], {
      env: { ...specEnv(spec), GRAPEVINE_LOG_LEVEL: process.env.GRAPEVINE_LOG_LEVEL ?? 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err = (err + d).slice(-6000)));
    // Fill + drain + set-up must fit; past that the trial is stuck, not slow.
    const killer = setTimeout(() => child.kill('SIGKILL'), spec.timeoutMs * 2);
    child.on('exit', (code, signal) => {
      clearTimeout(killer);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (line) return resolve(JSON.parse(line.slice(7)) as TrialResult);
      resolve({ ok: false, error: `trial exited ${signal ?? code} without a result\n${err.slice(-2000)}` });
    });
  });
}

function describe(r: TrialResult): string {
  if (!r.ok) return `FAILED: ${r.error.split('\n').slice(0, 3).join(' | ')}`;
  const x = r as Record<string, unknown>;
  const enqueue = x.enqueueMs as Record<string, number> | undefined;
  if (enqueue && typeof enqueue === 'object') {
    return Object.entries(enqueue)
      .map(([name, ms]) => `${name} ${(ms / 1000).toFixed(2)} s`)
      .join('; ');
  }
  const capped = x.capped ? ` — capped: the clock stopped before the last job finished` : '';
  const rss = typeof x.rssMb === 'number' ? `, peak RSS ${Math.round(x.rssMb)} MB` : '';
  if (typeof x.jobsPerSec === 'number')
    return `${x.jobsPerSec < 10 ? x.jobsPerSec.toFixed(1) : Math.round(x.jobsPerSec).toLocaleString('en-US')} jobs/s (drain ${(Number(x.drainMs) / 1000).toFixed(2)} s${rss})${capped}`;
  const lat = x.latency as { p50: number; p99: number } | undefined;
  if (lat) return `p50 ${lat.p50.toFixed(2)} ms, p99 ${lat.p99.toFixed(2)} ms${rss}`;
  if (typeof x.threadCrashMedianMs === 'number') {
    const kill = (x.supervisorKillMs as number[]).length
      ? `SIGKILL median ${Number(x.supervisorKillMedianMs).toFixed(0)} ms`
      : 'SIGKILL not run';
    const booting = x.threadCrashBootingMs as number[] | undefined;
    const whileBooting = booting?.length ? ` (${median(booting).toFixed(1)} ms while a replacement boots)` : '';
    return `thread crash median ${x.threadCrashMedianMs.toFixed(1)} ms${whileBooting}, ${kill}`;
  }
  return 'ok';
}

async function main(): Promise<number> {
  const plan: Plan = parsePlan(process.argv.slice(2), REPO_DIR);
  const started = new Date();
  const t0 = nowMs();
  const db = await openDatabase();
  let url = db.url;
  let createdDb = false;
  try {
    url = await recreateBenchDatabase(db.url);
    createdDb = true;
  } catch (err) {
    console.warn(
      `could not create a bench database (${(err as Error).message}); using ${describeConnection(db.url)} with a schema per trial`,
    );
  }
  const pg = await serverFacts(url);
  const loadAtStart = loadLine();
  console.log(`grapevine bench (${plan.mode}): ${machineLine()}; ${loadAtStart}`);
  console.log(
    `PostgreSQL ${pg.version} at ${describeConnection(url)} (${db.note}); systems ${plan.systems.join(', ')}; workloads ${plan.workloads.join(', ')}; ${plan.rounds} round(s)`,
  );
  const cpuIterations = calibrateBurn(plan.cpuTargetMs);

  const records: TrialRecord[] = [];
  const keep = new Set<string>();
  const settleNotes = new Set<string>();
  const base = {
    connectionString: url,
    keepSchema: false,
    threads: plan.threads,
    jobs: plan.jobs,
    cpuJobs: plan.cpuJobs,
    cpuIterations,
    deepFiller: 0,
    latencySamples: plan.latencySamples,
    latencyIntervalMs: plan.latencyIntervalMs,
    supervisors: 1,
    recoveryTrials: plan.recoveryTrials,
    replacementBootMs: plan.replacementBootMs,
    killTrials: plan.killTrials,
    timeoutMs: plan.timeoutMs,
    profile: 'tuned' as Profile,
    capMs: 0,
  };
  const trial = async (round: number, workload: Workload, system: Subject, extra: Partial<TrialSpec> = {}) => {
    const profile = extra.profile ?? base.profile;
    const schema = `b${round}_${workload}_${system}${profile === 'defaults' ? '_d' : ''}${extra.supervisors ? `_${extra.supervisors}` : ''}${extra.via ? `_${extra.via}` : ''}`;
    const spec: TrialSpec = { ...base, system, workload, schema, ...extra };
    const s0 = nowMs();
    if (!plan.inProcess) {
      const skipped = await settleDatabase(url);
      for (const note of skipped) if (!settleNotes.has(note)) settleNotes.add(note) && console.log(`  settle: ${note}`);
    }
    const settleMs = nowMs() - s0;
    const w0 = nowMs();
    const result = await runTrialProcess(spec, plan.inProcess);
    const wallMs = nowMs() - w0;
    records.push({ round, workload, system, profile, supervisors: extra.supervisors, via: extra.via, wallMs, result });
    const who = `${system}${extra.supervisors ? ` x${extra.supervisors}` : ''}${extra.via ? ` ${extra.via}` : ''}${profile === 'defaults' ? ' defaults' : ''}`;
    console.log(
      `  [round ${round}/${plan.rounds}] ${workload.padEnd(10)} ${who.padEnd(18)} ${describe(result)}  (${(wallMs / 1000).toFixed(1)} s, settle ${(settleMs / 1000).toFixed(1)} s)`,
    );
  };

  const has = (w: Workload) => plan.workloads.includes(w);
  const gv = plan.systems.includes('grapevine');
  // Time kept back for the recovery workload that follows the rounds.
  const reserveMs = has('recovery') && gv ? plan.killTrials * KILL_TRIAL_ESTIMATE_MS + 20_000 : 0;
  let roundsRun = 0;
  let lastRoundMs = 0;
  let roundsNote = '';
  for (let round = 1; round <= plan.rounds; round++) {
    const elapsed = nowMs() - t0;
    if (round > 1 && elapsed + lastRoundMs * 1.05 + reserveMs > plan.budgetMs) {
      roundsNote = `stopped after ${round - 1} of ${plan.rounds} rounds to stay within the ${Math.round(plan.budgetMs / 60000)}-minute budget (this machine was slower than planned, or busy)`;
      console.log(`  ${roundsNote}`);
      break;
    }
    const r0 = nowMs();
    // Both protocols, each system at its tuned settings and at its defaults.
    for (const workload of ['throughput', 'arriving'] as const) {
      if (!has(workload)) continue;
      for (const profile of plan.profiles) {
        for (const s of rotate(plan.systems, round)) await trial(round, workload, s, { profile, capMs: plan.capMs[profile] });
      }
    }
    if (has('enqueue')) for (const s of rotate(plan.systems, round)) await trial(round, 'enqueue', s);
    if (has('latency')) for (const s of rotate<Subject>([...plan.systems, 'floor'], round)) await trial(round, 'latency', s);
    if (has('cpu')) for (const s of rotate(plan.systems, round)) await trial(round, 'cpu', s);
    if (has('scaleout') && gv)
      for (const n of rotate(plan.supervisorCounts, round)) await trial(round, 'scaleout', 'grapevine', { supervisors: n });
    if (has('hosts') && gv)
      for (const via of rotate(['direct', 'pgbouncer'] as const, round))
        for (const n of rotate(plan.hostCounts, round)) await trial(round, 'hosts', 'grapevine', { supervisors: n, via });
    if (has('deep')) {
      for (const s of rotate(plan.systems, round)) {
        // One schema per system for the deep queue: the filler is written in round 1 only.
        const schema = `deep_${s}`;
        keep.add(schema);
        await trial(round, 'deep', s, { schema, keepSchema: true, deepFiller: round === 1 ? plan.deepFiller : 0 });
      }
    }
    // The pace of a round, without the one-off filler writes of round 1.
    const fills = records
      .filter((r) => r.round === round && r.workload === 'deep' && r.result.ok)
      .reduce((n, r) => n + (Number((r.result as Record<string, unknown>).fillMs) || 0), 0);
    lastRoundMs = nowMs() - r0 - fills;
    roundsRun = round;
  }
  if (has('recovery') && gv) await trial(1, 'recovery', 'grapevine');
  for (const schema of keep) await dropSchema(url, schema).catch(() => undefined);

  const summary = summarize(records);
  const ts = targets(summary, plan.threads);
  console.log(
    `\n${roundsRun} round(s). Medians; latency pools all samples. In brackets: how many times better grapevine is (above 1 = grapevine better).`,
  );
  const note = cappedNote(summary, plan.capMs);
  console.log(`${mainTable(summary, plan.systems)}\n${note ? `${note}\n` : ''}`);
  if (summary.enqueue.length) console.log(`${enqueueTable(summary)}\n`);
  if (summary.scaleout.length) console.log(`${scaleTable(summary)}\n`);
  if (summary.hosts.length) console.log(`${hostsTable(summary)}\n`);
  if (summary.recovery) console.log(`${recoveryTable(summary)}\n`);
  console.log(`${targetTable(ts)}\n`);
  for (const f of summary.failures) console.log(`FAILED ${f}`);

  if (plan.writeReport) {
    const settings = new Map<SystemName, Map<Profile, Record<string, string>>>();
    for (const s of plan.systems) settings.set(s, await describeSettings(s, plan.threads));
    const text = renderReport(
      {
        plan,
        roundsRun,
        roundsNote,
        database: describeConnection(url),
        databaseNote: db.note,
        pgVersion: pg.version,
        pgSettings: pg.settings,
        cpuIterations,
        settings,
        startedAt: started,
        wallMs: nowMs() - t0,
        loadAtStart,
        loadAtEnd: loadLine(),
      },
      summary,
      ts,
    );
    await writeReport(plan.reportPath, text);
    console.log(`wrote ${path.relative(process.cwd(), plan.reportPath) || plan.reportPath}`);
  }
  if (createdDb) await dropBenchDatabase(db.url).catch(() => undefined);
  await db.stop();
  console.log(`done in ${((nowMs() - t0) / 1000).toFixed(1)} s`);
  // Targets are measurements, not assertions; a trial that could not run is an error.
  return summary.failures.length ? 1 : 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  killAllChildren();
}
// In-process (smoke) trials can leave library timers behind.
process.exit();
