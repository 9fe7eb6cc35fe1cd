// Turns the trials of a run into medians, ratios and the PASS/FAIL targets.
import type { Profile, SystemName } from '../systems/types.ts';
import { CLIENT_PATH, KEYED_PATH, SQL_PER_ROW_PATH } from '../workloads/enqueue.ts';
import type { TrialResult } from '../trial.ts';
import type { Workload } from './plan.ts';
import { median, percentiles, type Percentiles } from './stats.ts';

export type Subject = SystemName | 'floor';

export interface TrialRecord {
  round: number;
  workload: Workload;
  system: Subject;
  profile: Profile;
  supervisors?: number;
  /** The hosts workload: direct or through PgBouncer. */
  via?: 'direct' | 'pgbouncer';
  wallMs: number;
  result: TrialResult;
}

/** capped: some round stopped at the cap (handled jobs / elapsed), see Plan.capMs. */
export interface RateStat {
  median: number;
  rounds: number[];
  rssMb: number;
  bootMs: number;
  enqueueMs: number;
  drainMs: number;
  fillMs: number;
  capped: boolean;
}
/** One bulk enqueue path of one system: median ms for `jobs` jobs over rounds. */
export interface EnqueueStat {
  system: SystemName;
  path: string;
  jobs: number;
  medianMs: number;
  rounds: number[];
  jobsPerSec: number;
}
export interface ScaleStat {
  supervisors: number;
  median: number;
  rounds: number[];
  wastedPerJob: number;
  reclaimed: number;
  rssMb: number;
}
export interface HostsStat {
  via: 'direct' | 'pgbouncer';
  supervisors: number;
  median: number;
  rounds: number[];
  /** The most client connections the server had from the supervisors, over all rounds. */
  serverConnections: number;
  /** N × (maxConnections + 1 LISTEN). */
  budget: number;
  emptyClaimsPerJob: number;
}
export interface RecoveryStat {
  threadCrashMs: number[];
  threadMedian: number;
  bootingMs: number[];
  bootingMedian: number;
  killMs: number[];
  killMedian: number;
  heartbeatTimeoutMs: number;
  killedProcess: string;
}

export interface Summary {
  /** The backlog protocol at tuned settings (the throughput workload). */
  throughput: Map<SystemName, RateStat>;
  throughputDefaults: Map<SystemName, RateStat>;
  /** Jobs enqueued in bulk while idle workers run. */
  arriving: Map<SystemName, RateStat>;
  arrivingDefaults: Map<SystemName, RateStat>;
  enqueue: EnqueueStat[];
  cpu: Map<SystemName, RateStat>;
  deep: Map<SystemName, RateStat>;
  latency: Map<Subject, Percentiles & { rssMb: number }>;
  scaleout: ScaleStat[];
  hosts: HostsStat[];
  recovery: RecoveryStat | null;
  failures: string[];
}

export interface Target {
  name: string;
  verdict: 'PASS' | 'FAIL' | 'n/a';
  detail: string;
}

const ok = (r: TrialRecord) => r.result.ok;
const num = (r: TrialRecord, key: string) => Number((r.result as Record<string, unknown>)[key] ?? Number.NaN);
const maxOf = (xs: number[]) => (xs.filter(Number.isFinite).length ? Math.max(...xs.filter(Number.isFinite)) : Number.NaN);

function rates(records: TrialRecord[], workload: Workload, profile: Profile = 'tuned'): Map<SystemName, RateStat> {
  const out = new Map<SystemName, RateStat>();
  const mine = records.filter((r) => r.workload === workload && r.profile === profile && ok(r) && r.system !== 'floor');
  for (const system of new Set(mine.map((r) => r.system as SystemName))) {
    const rs = mine.filter((r) => r.system === system);
    out.set(system, {
      median: median(rs.map((r) => num(r, 'jobsPerSec'))),
      rounds: rs.map((r) => num(r, 'jobsPerSec')),
      rssMb: maxOf(rs.map((r) => num(r, 'rssMb'))),
      bootMs: median(rs.map((r) => num(r, 'bootMs'))),
      enqueueMs: median(rs.map((r) => num(r, 'enqueueMs'))),
      drainMs: median(rs.map((r) => num(r, 'drainMs'))),
      fillMs: maxOf(rs.map((r) => num(r, 'fillMs'))),
      capped: rs.some((r) => (r.result as Record<string, unknown>).capped === true),
    });
  }
  return out;
}

function enqueueStats(records: TrialRecord[]): EnqueueStat[] {
  const out: EnqueueStat[] = [];
  const mine = records.filter((r) => r.workload === 'enqueue' && ok(r) && r.system !== 'floor');
  for (const system of new Set(mine.map((r) => r.system as SystemName))) {
    const rs = mine.filter((r) => r.system === system).map((r) => r.result as Record<string, unknown>);
    const paths = new Set(rs.flatMap((r) => Object.keys(r.enqueueMs as Record<string, number>)));
    for (const path of paths) {
      const rounds = rs.map((r) => (r.enqueueMs as Record<string, number>)[path]).filter(Number.isFinite);
      const jobs = Number(rs[0].jobs);
      const medianMs = median(rounds);
      out.push({ system, path, jobs, medianMs, rounds, jobsPerSec: jobs / (medianMs / 1000) });
    }
  }
  return out;
}

export function summarize(records: TrialRecord[]): Summary {
  const latency = new Map<Subject, Percentiles & { rssMb: number }>();
  const lat = records.filter((r) => r.workload === 'latency' && ok(r));
  for (const subject of new Set(lat.map((r) => r.system))) {
    const rs = lat.filter((r) => r.system === subject);
    // Samples of all rounds pooled: a p99 from 3 x 150 samples beats a median of three p99s.
    const samples = rs.flatMap((r) => ((r.result as Record<string, unknown>).samples as number[]) ?? []);
    latency.set(subject, { ...percentiles(samples), rssMb: maxOf(rs.map((r) => num(r, 'rssMb'))) });
  }
  const scale = records.filter((r) => r.workload === 'scaleout' && ok(r));
  const scaleout = [...new Set(scale.map((r) => r.supervisors ?? 1))]
    .sort((a, b) => a - b)
    .map((n) => {
      const rs = scale.filter((r) => r.supervisors === n);
      return {
        supervisors: n,
        median: median(rs.map((r) => num(r, 'jobsPerSec'))),
        rounds: rs.map((r) => num(r, 'jobsPerSec')),
        wastedPerJob: median(rs.map((r) => num(r, 'wastedClaimsPerJob'))),
        reclaimed: median(rs.map((r) => num(r, 'jobsWithAttemptsOver1'))),
        rssMb: maxOf(rs.map((r) => num(r, 'rssMb'))),
      };
    });
  const hostRecords = records.filter((r) => r.workload === 'hosts' && ok(r));
  const hosts: HostsStat[] = [];
  for (const via of ['direct', 'pgbouncer'] as const) {
    for (const n of [...new Set(hostRecords.filter((r) => r.via === via).map((r) => r.supervisors ?? 1))].sort((a, b) => a - b)) {
      const rs = hostRecords.filter((r) => r.via === via && r.supervisors === n);
      hosts.push({
        via,
        supervisors: n,
        median: median(rs.map((r) => num(r, 'jobsPerSec'))),
        rounds: rs.map((r) => num(r, 'jobsPerSec')),
        serverConnections: maxOf(rs.map((r) => num(r, 'serverConnections'))),
        budget: num(rs[0], 'budget'),
        emptyClaimsPerJob: median(rs.map((r) => num(r, 'emptyClaimsPerJob'))),
      });
    }
  }
  const rec = records.find((r) => r.workload === 'recovery' && ok(r));
  const rr = rec?.result as Record<string, unknown> | undefined;
  const booting = (rr?.threadCrashBootingMs as number[] | undefined) ?? [];
  return {
    throughput: rates(records, 'throughput'),
    throughputDefaults: rates(records, 'throughput', 'defaults'),
    arriving: rates(records, 'arriving'),
    arrivingDefaults: rates(records, 'arriving', 'defaults'),
    enqueue: enqueueStats(records),
    cpu: rates(records, 'cpu'),
    deep: rates(records, 'deep'),
    latency,
    scaleout,
    hosts,
    recovery: rr
      ? {
          threadCrashMs: rr.threadCrashMs as number[],
          // From the arrays: NaN does not survive JSON (it comes back as null, i.e. 0).
          threadMedian: median(rr.threadCrashMs as number[]),
          bootingMs: booting,
          bootingMedian: median(booting),
          killMs: rr.supervisorKillMs as number[],
          killMedian: median(rr.supervisorKillMs as number[]),
          heartbeatTimeoutMs: Number(rr.heartbeatTimeoutMs),
          killedProcess: String(rr.killedProcess ?? ''),
        }
      : null,
    failures: records
      .filter((r) => !r.result.ok)
      .map(
        (r) =>
          `${r.workload}/${r.system}${r.profile === 'defaults' ? ' (defaults)' : ''}${r.supervisors ? ` x${r.supervisors}` : ''} round ${r.round}: ${(r.result as { error: string }).error.split('\n')[0]}`,
      ),
  };
}

const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '—');

/** at least `factor` times `other` (higher is better). */
function atLeast(name: string, mine: number | undefined, other: number | undefined, factor: number, unit: string): Target {
  if (mine === undefined || other === undefined || !Number.isFinite(mine) || !Number.isFinite(other))
    return { name, verdict: 'n/a', detail: 'not measured in this run' };
  const need = other * factor;
  return {
    name,
    verdict: mine >= need ? 'PASS' : 'FAIL',
    detail: `${f(mine, 1)} ${unit} vs required ${f(need, 1)} (ratio ${f(mine / other)}×)`,
  };
}

/** at most `limit` (lower is better); `base`, when given, is what the limit derives from, and the detail gives mine ÷ base. */
function atMost(name: string, mine: number | undefined, limit: number | undefined, unit: string, strict = false, base?: number): Target {
  if (mine === undefined || limit === undefined || !Number.isFinite(mine) || !Number.isFinite(limit))
    return { name, verdict: 'n/a', detail: 'not measured in this run' };
  const pass = strict ? mine < limit : mine <= limit;
  const ratio = base !== undefined && Number.isFinite(base) && base > 0 ? ` (ratio ${f(mine / base)}×)` : '';
  return { name, verdict: pass ? 'PASS' : 'FAIL', detail: `${f(mine)} ${unit} vs limit ${f(limit)} ${unit}${ratio}` };
}

/**
 * grapevine's bulk enqueue paths against graphile-worker's addJobs, the keyed one against its addJobs with job
 * keys, and add_job() per row against its add_job() per row (not a bulk path: the bar is to be no slower);
 * the SQL bulk path is named even when the schema lacks it.
 */
function enqueueTargets(s: Summary): Target[] {
  const graphile = (path: string) => s.enqueue.find((e) => e.system === 'graphile' && e.path === path)?.jobsPerSec;
  const gw = graphile(CLIENT_PATH);
  const gv = s.enqueue.filter((e) => e.system === 'grapevine');
  const list = gv.map((e) =>
    e.path === KEYED_PATH
      ? atLeast(`enqueue, ${KEYED_PATH}: ≥ 1.25× graphile-worker addJobs with job_key`, e.jobsPerSec, graphile(KEYED_PATH), 1.25, 'jobs/s')
      : e.path === SQL_PER_ROW_PATH
        ? atLeast(
            `enqueue, ${SQL_PER_ROW_PATH}: ≥ graphile-worker's add_job() per row`,
            e.jobsPerSec,
            graphile(SQL_PER_ROW_PATH),
            1,
            'jobs/s',
          )
        : atLeast(
            `enqueue, ${e.path === CLIENT_PATH ? 'client addJobs' : e.path}: ≥ 1.5× graphile-worker addJobs`,
            e.jobsPerSec,
            gw,
            1.5,
            'jobs/s',
          ),
  );
  if (gv.length && !gv.some((e) => e.path.includes('add_jobs'))) {
    list.push({
      name: 'enqueue, SQL bulk function: ≥ 1.5× graphile-worker addJobs',
      verdict: 'FAIL',
      detail: 'the schema has no add_jobs(jsonb) or add_jobs(jsonb[]) function',
    });
  }
  if (!gv.length) list.push(atLeast('enqueue: ≥ 1.5× graphile-worker addJobs', undefined, gw, 1.5, 'jobs/s'));
  return list;
}

export function targets(s: Summary, threads: number): Target[] {
  const gv = (m: Map<SystemName, RateStat>) => m.get('grapevine')?.median;
  const gw = (m: Map<SystemName, RateStat>) => m.get('graphile')?.median;
  const pb = (m: Map<SystemName, RateStat>) => m.get('pgboss')?.median;
  const gvL = s.latency.get('grapevine');
  const gwL = s.latency.get('graphile');
  const one = s.scaleout.find((x) => x.supervisors === 1);
  const four = s.scaleout.find((x) => x.supervisors === 4);
  const rec = s.recovery;
  const scale = atLeast('scale-out: 4 supervisors ≥ 1 supervisor', four?.median, one?.median, 1, 'jobs/s');
  if (four) scale.detail += `; wasted claim attempts per job: x1 ${f(one?.wastedPerJob ?? Number.NaN, 4)}, x4 ${f(four.wastedPerJob, 4)}`;
  const gwRss = s.throughput.get('graphile')?.rssMb;
  return [
    atLeast('defaults, backlog: ≥ 1.25× graphile-worker tuned', gv(s.throughputDefaults), gw(s.throughput), 1.25, 'jobs/s'),
    atLeast('defaults, arriving: ≥ 1.25× graphile-worker tuned', gv(s.arrivingDefaults), gw(s.arriving), 1.25, 'jobs/s'),
    atLeast('tuned, backlog: ≥ 1.5× graphile-worker', gv(s.throughput), gw(s.throughput), 1.5, 'jobs/s'),
    atLeast('tuned, backlog: ≥ 2.5× pg-boss', gv(s.throughput), pb(s.throughput), 2.5, 'jobs/s'),
    atLeast('tuned, arriving: ≥ 1.5× graphile-worker', gv(s.arriving), gw(s.arriving), 1.5, 'jobs/s'),
    atLeast('tuned, arriving: ≥ 2.5× pg-boss', gv(s.arriving), pb(s.arriving), 2.5, 'jobs/s'),
    ...enqueueTargets(s),
    atMost('latency p50 ≤ 2× floor p50', gvL?.p50, (s.latency.get('floor')?.p50 ?? Number.NaN) * 2, 'ms'),
    atMost('latency p50 ≤ 0.9× graphile-worker p50', gvL?.p50, (gwL?.p50 ?? Number.NaN) * 0.9, 'ms', false, gwL?.p50),
    atMost('latency p50 ≤ 0.7× graphile-worker p50', gvL?.p50, (gwL?.p50 ?? Number.NaN) * 0.7, 'ms', false, gwL?.p50),
    atMost('latency p99 ≤ graphile-worker p99', gvL?.p99, gwL?.p99, 'ms', false, gwL?.p99),
    atMost('latency p99 < 10 ms', gvL?.p99, 10, 'ms', true),
    atMost('peak RSS, throughput (backlog, tuned) ≤ graphile-worker', s.throughput.get('grapevine')?.rssMb, gwRss, 'MB', false, gwRss),
    atLeast(
      `cpu ≥ 0.85 × ${threads} threads × graphile-worker (concurrentJobs 24, one thread)`,
      s.cpu.get('grapevine')?.median,
      s.cpu.get('graphile')?.median,
      0.85 * threads,
      'jobs/s',
    ),
    scale,
    ...hostTargets(s),
    atLeast('deep queue ≥ 0.8× shallow throughput', s.deep.get('grapevine')?.median, gv(s.throughput), 0.8, 'jobs/s'),
    atMost('recovery: thread crash median < 100 ms', rec?.threadMedian, 100, 'ms', true),
    atMost(
      'recovery: supervisor SIGKILL median < heartbeat timeout + 1 s',
      rec?.killMedian,
      rec ? rec.heartbeatTimeoutMs + 1000 : undefined,
      'ms',
      true,
    ),
  ];
}

/** Many hosts: the server's connections within the budgets' sum, and fewer than 0.05 empty claims per job, at every size. */
function hostTargets(s: Summary): Target[] {
  if (!s.hosts.length) return [atMost('hosts: server connections ≤ the budgets’ sum', undefined, undefined, '')];
  const worst = (pick: (h: HostsStat) => number) => s.hosts.reduce((a, b) => (pick(b) > pick(a) ? b : a));
  const conns = worst((h) => h.serverConnections / h.budget);
  const empty = worst((h) => h.emptyClaimsPerJob);
  const where = (h: HostsStat) => ` (worst: ${h.supervisors} ${h.via})`;
  const c = atMost('hosts: server connections ≤ the budgets’ sum', conns.serverConnections, conns.budget, 'connections');
  const e = atMost('hosts: empty claims < 0.05 per job', empty.emptyClaimsPerJob, 0.05, 'per job', true);
  c.detail += where(conns);
  e.detail += where(empty);
  return [c, e];
}
