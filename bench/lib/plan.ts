// What a run does: sizes per mode, the workload order, and the CLI flags that filter it.
import os from 'node:os';
import { ALL_PROFILES, ALL_SYSTEMS, type Profile, type SystemName } from '../systems/types.ts';

export const ALL_WORKLOADS = ['throughput', 'arriving', 'enqueue', 'latency', 'cpu', 'scaleout', 'hosts', 'deep', 'recovery'] as const;
export type Workload = (typeof ALL_WORKLOADS)[number];

export interface Plan {
  mode: 'full' | 'smoke';
  rounds: number;
  systems: SystemName[];
  workloads: Workload[];
  /** Settings the throughput and arriving workloads run each system with (the others: tuned). */
  profiles: Profile[];
  /** Trials run in this process instead of a fresh one each (smoke: saves a process start per trial). */
  inProcess: boolean;
  writeReport: boolean;
  reportPath: string;
  threads: number;
  jobs: number;
  cpuJobs: number;
  cpuTargetMs: number;
  deepFiller: number;
  latencySamples: number;
  latencyIntervalMs: number;
  supervisorCounts: number[];
  /** The hosts workload: supervisor processes of one thread each, direct and through PgBouncer. */
  hostCounts: number[];
  recoveryTrials: number;
  /** How long the recovery workload lets a replacement thread boot before a settled-pool trial. */
  replacementBootMs: number;
  killTrials: number;
  timeoutMs: number;
  /** A throughput or arriving trial stops measuring after this long, finished or not, and
   * reports jobs handled / elapsed: pg-boss at its defaults takes one job per 2 s poll (hours
   * for the backlog), BullMQ on PostgreSQL drains far slower than the others even tuned. */
  capMs: Record<Profile, number>;
  /** Wall-clock budget for the whole run: later rounds are skipped (and the report says
   * so) when the last round's pace says they would not fit. */
  budgetMs: number;
}

function list<T extends string>(flag: string | undefined, allowed: readonly T[], fallback: T[]): T[] {
  if (!flag) return fallback;
  const names = flag
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const n of names) if (!allowed.includes(n as T)) throw new Error(`unknown "${n}": choose from ${allowed.join(', ')}`);
  return allowed.filter((a) => names.includes(a));
}

export function parsePlan(argv: string[], repoDir: string): Plan {
  const flags = new Map<string, string>();
  for (const arg of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg} (try --smoke, --only=..., --systems=..., --rounds=N, --write)`);
    flags.set(m[1], m[2] ?? 'true');
  }
  const smoke = flags.has('smoke');
  const systems = list(flags.get('systems'), ALL_SYSTEMS, smoke ? ['grapevine', 'graphile'] : [...ALL_SYSTEMS]);
  const workloads = list(flags.get('only'), ALL_WORKLOADS, [...ALL_WORKLOADS]);
  const profiles = list(flags.get('profiles'), ALL_PROFILES, [...ALL_PROFILES]);
  const base = {
    systems,
    workloads,
    profiles,
    threads: os.availableParallelism(),
    reportPath: flags.get('out') ?? `${repoDir}/BENCHMARKS.md`,
    writeReport: flags.has('write') || (!smoke && !flags.has('no-write')),
    cpuTargetMs: 25,
    latencyIntervalMs: 20,
  };
  const plan: Plan = smoke
    ? {
        ...base,
        mode: 'smoke',
        rounds: 1,
        inProcess: !flags.has('isolate'),
        jobs: 500,
        cpuJobs: 6,
        deepFiller: 5_000,
        latencySamples: 10,
        supervisorCounts: [2],
        hostCounts: [2],
        recoveryTrials: 1,
        replacementBootMs: 200,
        killTrials: 0,
        timeoutMs: 30_000,
        capMs: { tuned: 10_000, defaults: 3_000 },
        budgetMs: 90_000,
      }
    : {
        ...base,
        mode: 'full',
        rounds: 5,
        inProcess: false,
        jobs: 20_000,
        cpuJobs: 200,
        deepFiller: 1_000_000,
        latencySamples: 150,
        supervisorCounts: [1, 2, 4],
        hostCounts: [1, 2, 4, 8],
        recoveryTrials: 7,
        replacementBootMs: 1000,
        killTrials: 3,
        timeoutMs: 180_000,
        capMs: { tuned: 15_000, defaults: 5_000 },
        // npm run bench must end within 12 minutes, build included.
        budgetMs: 11 * 60_000,
      };
  if (flags.has('rounds')) plan.rounds = Math.max(1, Number(flags.get('rounds')));
  if (flags.has('budget-s')) plan.budgetMs = Math.max(1, Number(flags.get('budget-s'))) * 1000;
  // Size overrides, for trying things out; the published numbers use the defaults above.
  const sizes = {
    'kill-trials': 'killTrials',
    jobs: 'jobs',
    'cpu-jobs': 'cpuJobs',
    'deep-filler': 'deepFiller',
    'latency-samples': 'latencySamples',
  } as const;
  for (const [flag, key] of Object.entries(sizes)) {
    if (!flags.has(flag)) continue;
    const n = Number(flags.get(flag));
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${flag} takes a whole number`);
    plan[key] = n;
  }
  return plan;
}

/** Round r starts the rotation at a different system, so nobody always runs first. */
export function rotate<T>(items: readonly T[], round: number): T[] {
  const k = items.length ? round % items.length : 0;
  return [...items.slice(k), ...items.slice(0, k)];
}
