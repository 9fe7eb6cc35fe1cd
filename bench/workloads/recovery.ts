// Recovery (grapevine).
//  thread crash: a handler records its first run, then reports the time and calls
//    process.exit(1), which ends its worker thread; measured from that call until the
//    re-run of that job starts (in-process supervisor). Trials alternate between a
//    settled pool (every thread, the last replacement included, has booted) and a crash
//    that comes while the last crash's replacement thread is still booting.
//  supervisor SIGKILL: two supervisor processes; the one running a long job is killed
//    with SIGKILL; measured from the kill until the job starts on the other one. Bounded
//    by the lease (grapevine's heartbeat timeout) plus one reaper tick.
// All stamps come from the machine-wide monotonic clock, written by the handlers to an
// events table, so times from threads and other processes compare directly.
import pg from 'pg';
import pino from 'pino';
import { createClient, DEFAULTS, startSupervisor, type Supervisor } from 'grapevine-jobs';
import { listenToThreads } from '../lib/channel.mjs';
import { exited, killAllChildren, spawnSupervisorProcess } from '../lib/procs.ts';
import { median, nowMs, sleep } from '../lib/stats.ts';
import { GRAPEVINE_CONCURRENCY, TASKS_DIR } from '../systems/grapevine.ts';
import type { TrialSpec } from '../trial.ts';

interface Event {
  kind: string;
  at_ms: number;
  pid: number;
}

async function waitEvent(pool: pg.Pool, table: string, jobId: string, kind: string, timeoutMs: number): Promise<Event> {
  const deadline = nowMs() + timeoutMs;
  while (nowMs() < deadline) {
    const r = await pool.query(`SELECT kind, at_ms, pid FROM ${table} WHERE job_id = $1 AND kind = $2`, [jobId, kind]);
    if (r.rows[0]) return r.rows[0] as Event;
    await sleep(5);
  }
  throw new Error(`job ${jobId}: no "${kind}" event within ${timeoutMs} ms`);
}

async function waitRegistered(pool: pg.Pool, schema: string, pids: number[], timeoutMs: number): Promise<void> {
  const deadline = nowMs() + timeoutMs;
  while (nowMs() < deadline) {
    const r = await pool.query(`SELECT pid FROM "${schema}".supervisors WHERE status NOT IN ('EXITED', 'LOST')`);
    const up = new Set(r.rows.map((row) => row.pid as number));
    if (pids.every((p) => up.has(p))) return;
    await sleep(50);
  }
  throw new Error(`supervisors ${pids.join(', ')} did not register within ${timeoutMs} ms`);
}

/** Until the pool has its full count of threads again (a crashed one's replacement exists, booted or not). */
async function poolRefilled(sup: Supervisor, threads: number): Promise<void> {
  const until = nowMs() + 5000;
  while (sup.status().threads.length < threads) {
    if (nowMs() > until) throw new Error(`the thread pool did not get back to ${threads} threads within 5 s of a crash`);
    await sleep(10);
  }
}

export async function run(spec: TrialSpec): Promise<Record<string, unknown>> {
  const { connectionString, schema } = spec;
  const client = createClient({ connectionString, schema });
  const pool = new pg.Pool({ connectionString, max: 2 });
  const events = `"${schema}".bench_events`;
  try {
    await client.migrate();
    await pool.query(`CREATE TABLE ${events} (job_id text, kind text, at_ms double precision, pid integer, PRIMARY KEY (job_id, kind))`);

    // Thread crash, in this process.
    const sup = await startSupervisor({
      connectionString,
      schema,
      tasks: TASKS_DIR,
      threads: spec.threads,
      concurrency: GRAPEVINE_CONCURRENCY,
      logger: pino({ level: process.env.GRAPEVINE_LOG_LEVEL ?? 'error' }),
    });
    const threadMs: number[] = [];
    const bootingMs: number[] = [];
    const killedAt = new Map<string, number>();
    const channel = listenToThreads((report) => {
      if (report.kind === 'killed' && report.jobId !== undefined) killedAt.set(report.jobId, report.atMs ?? Number.NaN);
    });
    const crashOnce = async (): Promise<number> => {
      const id = await client.addJob('crash', { events });
      await waitEvent(pool, events, id, 'first', 10_000);
      const rerun = await waitEvent(pool, events, id, 'rerun', 30_000);
      const killed = killedAt.get(id);
      if (killed === undefined) throw new Error(`job ${id}: its thread never reported being killed`);
      return rerun.at_ms - killed;
    };
    try {
      for (let i = 0; i < spec.recoveryTrials; i++) {
        await poolRefilled(sup, spec.threads);
        // piscina counts a replacement from the moment it creates it; booting it
        // (importing its modules, opening and warming its connections) takes
        // longer, on the same cores the recovery needs. The full run waits
        // 1 s, the smoke run (whose numbers mean nothing) less.
        await sleep(spec.replacementBootMs);
        threadMs.push(await crashOnce());
        await poolRefilled(sup, spec.threads);
        bootingMs.push(await crashOnce());
      }
    } finally {
      channel.close();
      await sup.stop({ graceMs: 2000 });
    }

    const killMs: number[] = [];
    let via = '';
    for (let i = 0; i < spec.killTrials; i++) {
      const procSpec = { connectionString, schema, tasks: TASKS_DIR, threads: 1, concurrency: GRAPEVINE_CONCURRENCY, paused: false };
      const a = spawnSupervisorProcess(procSpec);
      const b = spawnSupervisorProcess(procSpec);
      via = a.via;
      await waitRegistered(pool, schema, [a.child.pid!, b.child.pid!], 30_000);
      const id = await client.addJob('hang', { events, hangMs: 120_000 });
      const first = await waitEvent(pool, events, id, 'first', 10_000);
      const victim = [a, b].find((p) => p.child.pid === first.pid);
      if (!victim) throw new Error(`hang job ran in pid ${first.pid}, not in a supervisor this bench started`);
      const survivor = victim === a ? b : a;
      const killedAt = nowMs();
      victim.child.kill('SIGKILL');
      const rerun = await waitEvent(pool, events, id, 'rerun', DEFAULTS.leaseMs + 30_000);
      killMs.push(rerun.at_ms - killedAt);
      survivor.child.kill('SIGTERM');
      await Promise.all([exited(victim.child), exited(survivor.child)]);
    }
    return {
      threadCrashMs: threadMs,
      threadCrashMedianMs: median(threadMs),
      threadCrashBootingMs: bootingMs,
      supervisorKillMs: killMs,
      supervisorKillMedianMs: median(killMs),
      heartbeatTimeoutMs: DEFAULTS.leaseMs,
      killedProcess: via,
    };
  } finally {
    killAllChildren();
    await client.close();
    await pool.end();
  }
}
