// Scale-out (grapevine): the throughput workload drained by N supervisor processes on
// one database. Every supervisor boots paused and drains an unmeasured warm-up backlog
// (half the job count) first; then the backlog is queued and all are resumed together:
// the clock runs from the resume to the last job recorded as finished, exactly like the
// single-process throughput workload. The hosts workload (hosts.ts) drains the same way.
import os from 'node:os';
import pg from 'pg';
import { createClient } from 'grapevine-jobs';
import { forkSupervisor, killAllChildren, type ControlledSupervisor } from '../lib/procs.ts';
import { nowMs, sleep } from '../lib/stats.ts';
import type { ChildSpec } from '../supervisor-child.ts';
import { GRAPEVINE_CONCURRENCY, GRAPEVINE_DELETE_SUCCEEDED, TASKS_DIR } from '../systems/grapevine.ts';
import type { TrialSpec } from '../trial.ts';

export function run(spec: TrialSpec): Promise<Record<string, unknown>> {
  // Each supervisor stands in for one host: the machine's cores are shared out
  // between them (at least one thread each), so N supervisors do not run N times
  // the threads on the same two cores.
  return drainWithSupervisors(spec, { threads: Math.max(1, Math.floor(spec.threads / spec.supervisors)) });
}

/** The bench's own connections are named so: a count of the supervisors' connections leaves them out. */
export const CONDUCTOR_APPLICATION = 'bench-conductor';

export interface SupervisorsDrain {
  /** Threads per supervisor process. */
  threads: number;
  /** Where the supervisors connect, if not the trial's connection string (a pooler). */
  child?: Partial<ChildSpec>;
}

export async function drainWithSupervisors(spec: TrialSpec, drain: SupervisorsDrain): Promise<Record<string, unknown>> {
  const { connectionString, schema } = spec;
  const pool = new pg.Pool({ connectionString, max: 2, application_name: CONDUCTOR_APPLICATION });
  const client = createClient({ pool, schema });
  const sups: ControlledSupervisor[] = [];
  try {
    await client.migrate();
    const childSpec: ChildSpec = {
      connectionString,
      schema,
      tasks: TASKS_DIR,
      threads: drain.threads,
      concurrency: GRAPEVINE_CONCURRENCY,
      paused: true,
      deleteSucceeded: GRAPEVINE_DELETE_SUCCEEDED,
      ...drain.child,
    };
    // Boot one at a time: N node processes starting at once on 2 cores would only
    // slow each other's boot, which is not what is being measured.
    for (let i = 0; i < spec.supervisors; i++) sups.push(await forkSupervisor(childSpec));

    // Unmeasured warm-up: every supervisor process compiles its hot code (V8's JIT, in
    // its main thread and in each of its threads) on its first few thousand jobs. In a
    // sub-second drain that would be timed too, N times over for N processes, and the
    // comparison would be of start-up costs, not of N supervisors sharing one queue.
    const warmJobs = Math.max(100, Math.floor(spec.jobs / 2));
    await client.addJobs(Array.from({ length: warmJobs }, () => ({ task: 'noop', payload: {} })));
    for (const s of sups) s.send({ kind: 'resume' });
    const warmDeadline = nowMs() + spec.timeoutMs;
    while (sups.reduce((n, s) => n + s.handled, 0) < warmJobs) {
      if (nowMs() > warmDeadline) throw new Error(`scale-out x${spec.supervisors}: warm-up not drained within ${spec.timeoutMs} ms`);
      await sleep(5);
    }
    for (const s of sups) s.send({ kind: 'pause' });
    // Paused supervisors still finish what they hold; then the counts start from zero.
    while ((await pool.query(`SELECT count(*)::int AS n FROM "${schema}".jobs WHERE state <> 'succeeded'`)).rows[0].n > 0) await sleep(10);
    await sleep(100);
    for (const s of sups) s.handled = 0;
    const before = await countersOf(sups);

    const ids = await client.addJobs(Array.from({ length: spec.jobs }, () => ({ task: 'noop', payload: {} })));
    const firstId = ids.reduce((a, b) => (BigInt(b) < BigInt(a) ? b : a));

    const unfinished = async () =>
      (await pool.query(`SELECT count(*)::int AS n FROM "${schema}".jobs WHERE id >= $1 AND state <> 'succeeded'`, [firstId])).rows[0]
        .n as number;
    const t0 = nowMs();
    for (const s of sups) s.send({ kind: 'resume' });
    const deadline = t0 + spec.timeoutMs;
    // Completion counts arrive over IPC; the DB is only asked once they add up (or
    // every second, in case a job ran twice).
    let lastSafety = t0;
    let t1 = Number.NaN;
    while (nowMs() < deadline) {
      const handled = sups.reduce((n, s) => n + s.handled, 0);
      const safety = nowMs() - lastSafety > 1000;
      if (handled >= spec.jobs || safety) {
        lastSafety = nowMs();
        const asOf = nowMs();
        if ((await unfinished()) === 0) {
          t1 = asOf;
          break;
        }
      }
      await sleep(handled >= spec.jobs ? 2 : 5);
    }
    if (Number.isNaN(t1)) throw new Error(`scale-out x${spec.supervisors}: not drained within ${spec.timeoutMs} ms`);

    const stats = await statsOf(sups);
    const during = (counter: string) => stats.reduce((n, s, i) => n + (s.counters[counter] ?? 0) - (before[i][counter] ?? 0), 0);
    const claimed = during('claimed');
    const wasted = during('wastedClaims');
    // From the table: jobs that needed more than one claim to finish.
    const reclaimed = (await pool.query(`SELECT count(*)::int AS n FROM "${schema}".jobs WHERE id >= $1 AND attempts > 1`, [firstId]))
      .rows[0].n;
    const drainMs = t1 - t0;
    return {
      jobsPerSec: spec.jobs / (drainMs / 1000),
      drainMs,
      supervisors: spec.supervisors,
      claimed,
      wastedClaims: wasted,
      wastedClaimsPerJob: wasted / spec.jobs,
      emptyClaims: during('emptyClaims'),
      emptyClaimsPerJob: during('emptyClaims') / spec.jobs,
      jobsWithAttemptsOver1: reclaimed,
      // Peak RSS of each supervisor process (the trial process is only the conductor).
      rssMb: Math.max(...stats.map((s) => s.rssMb)),
      rssMbEach: stats.map((s) => Math.round(s.rssMb)),
      cores: os.availableParallelism(),
    };
  } finally {
    await Promise.all(
      sups.map(async (s) => {
        if (s.child.exitCode !== null) return;
        s.send({ kind: 'stop' });
        await s.next('stopped', 10_000).catch(() => undefined);
      }),
    );
    killAllChildren();
    await client.close();
    await pool.end();
  }
}

async function statsOf(sups: ControlledSupervisor[]) {
  const stats = [];
  for (const s of sups) {
    s.send({ kind: 'stats' });
    stats.push(await s.next('stats'));
  }
  return stats;
}

async function countersOf(sups: ControlledSupervisor[]): Promise<Record<string, number>[]> {
  return (await statsOf(sups)).map((s) => s.counters);
}
