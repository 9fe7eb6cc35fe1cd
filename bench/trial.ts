// One (system, workload) trial. Normally run in a fresh process — nothing leaks between
// systems (JIT state, pools, timers) and the process's peak RSS is that system's alone:
//   bench/run.ts starts `node bench/trial.ts` with the TrialSpec in its environment
//   (specEnv in lib/procs.ts) → it prints one line "RESULT <json>"
// The smoke mode calls runTrial() in-process instead, to stay within a few seconds.
import { measureFloor } from './floor.ts';
import { dropSchema } from './lib/db.ts';
import { readSpec } from './lib/procs.ts';
import { createAdapter } from './systems/index.ts';
import type { Profile, SystemName } from './systems/types.ts';
import { runArriving } from './workloads/arriving.ts';
import { runDrain } from './workloads/drain.ts';
import { runEnqueue } from './workloads/enqueue.ts';
import { runLatency } from './workloads/latency.ts';
import type { Workload } from './lib/plan.ts';

export interface TrialSpec {
  system: SystemName | 'floor';
  workload: Workload;
  /** Settings the system runs with (throughput and arriving; the other workloads use tuned). */
  profile: Profile;
  connectionString: string;
  schema: string;
  /** Keep the schema afterwards (the deep queue reuses its million rows across rounds). */
  keepSchema: boolean;
  threads: number;
  jobs: number;
  cpuJobs: number;
  cpuIterations: number;
  /** Not-due rows to write first; 0 when the schema already has them. */
  deepFiller: number;
  latencySamples: number;
  latencyIntervalMs: number;
  supervisors: number;
  /** The hosts workload: supervisors straight to PostgreSQL, or through a PgBouncer in transaction mode. */
  via?: 'direct' | 'pgbouncer';
  recoveryTrials: number;
  replacementBootMs: number;
  killTrials: number;
  timeoutMs: number;
  /** Stop a throughput or arriving trial this long after its clock started (0: never; the spec travels as JSON, which has no Infinity). */
  capMs: number;
}

export type TrialResult = { ok: true; rssMb?: number; [key: string]: unknown } | { ok: false; error: string };

async function dispatch(spec: TrialSpec): Promise<Record<string, unknown>> {
  const worker = { threads: spec.threads };
  if (spec.system === 'floor') {
    const r = await measureFloor(spec.connectionString, spec.schema, spec.latencySamples, spec.latencyIntervalMs);
    return { latency: r.latency, samples: r.samples };
  }
  if (spec.workload === 'scaleout' || spec.workload === 'hosts' || spec.workload === 'recovery') {
    // grapevine-only workloads drive separate supervisor processes.
    const mod = await import(`./workloads/${spec.workload}.ts`);
    return mod.run(spec);
  }
  const adapter = await createAdapter(spec.system, { connectionString: spec.connectionString, schema: spec.schema, profile: spec.profile });
  const capMs = spec.capMs || Infinity;
  const drain = (task: 'noop' | 'cpu', jobs: number, iterations: number, filler: number, capMs = Infinity) =>
    runDrain(adapter, {
      task,
      jobs,
      payload: task === 'cpu' ? { iterations } : {},
      filler,
      worker: { ...worker, cpuBound: task === 'cpu' },
      timeoutMs: spec.timeoutMs,
      capMs,
    });
  try {
    switch (spec.workload) {
      case 'throughput':
        return { ...(await drain('noop', spec.jobs, 0, 0, capMs)) };
      case 'arriving':
        return {
          ...(await runArriving(adapter, {
            jobs: spec.jobs,
            connectionString: spec.connectionString,
            schema: spec.schema,
            profile: spec.profile,
            worker,
            timeoutMs: spec.timeoutMs,
            capMs,
          })),
        };
      case 'enqueue':
        return { ...(await runEnqueue(adapter, spec.jobs)) };
      case 'deep':
        return { ...(await drain('noop', spec.jobs, 0, spec.deepFiller)) };
      case 'cpu':
        return { ...(await drain('cpu', spec.cpuJobs, spec.cpuIterations, 0)) };
      case 'latency': {
        const r = await runLatency(adapter, {
          samples: spec.latencySamples,
          warmup: 5,
          intervalMs: spec.latencyIntervalMs,
          worker,
          timeoutMs: spec.timeoutMs,
        });
        return { latency: r.latency, samples: r.samples };
      }
    }
  } finally {
    await adapter.close();
  }
}

export async function runTrial(spec: TrialSpec, inProcess = false): Promise<TrialResult> {
  try {
    const result = await dispatch(spec);
    // maxRSS: peak resident set of this process (kB on Linux) — meaningless in-process.
    const rssMb = inProcess ? undefined : process.resourceUsage().maxRSS / 1024;
    return { ok: true, rssMb, ...result };
  } catch (err) {
    return { ok: false, error: String((err as Error)?.stack ?? err) };
  } finally {
    if (!spec.keepSchema) await dropSchema(spec.connectionString, spec.schema).catch(() => undefined);
  }
}

if (import.meta.main) {
  const result = await runTrial(readSpec<TrialSpec>());
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  // Libraries may leave timers behind after close(); the result is out, so leave.
  process.exit(result.ok ? 0 : 1);
}
