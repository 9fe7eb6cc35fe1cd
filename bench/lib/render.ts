// Tables for the terminal and BENCHMARKS.md (both markdown: it reads fine in a terminal).
import type { Profile, SystemName } from '../systems/types.ts';
import type { RateStat, Subject, Summary, Target } from './summary.ts';
import { CLIENT_PATH, KEYED_PATH, SQL_PER_ROW_PATH } from '../workloads/enqueue.ts';

export const LABEL: Record<Subject, string> = {
  grapevine: 'grapevine',
  graphile: 'graphile-worker',
  pgboss: 'pg-boss',
  bullmq: 'BullMQ (PostgreSQL)',
  floor: 'floor (plain pg)',
};

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
const ms = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '—');
const sec = (n: number) => (Number.isFinite(n) ? (n / 1000).toFixed(2) : '—');

export function table(head: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

/** Marks a rate from a trial that stopped at the cap (see the note under the table). */
export const CAPPED = '†';
/** jobs/s: whole numbers, but a tenth below 10 (pg-boss at its defaults takes one job per 2 s poll). */
const jobsPerSec = (n: number) => (Number.isFinite(n) && n < 10 ? n.toFixed(1) : int(n));
const rate = (st: RateStat | undefined) => (st?.capped ? (n: number) => `${jobsPerSec(n)}${CAPPED}` : jobsPerSec);

/** "value (k×)" where k > 1 means grapevine is better. */
function cell(value: number, gv: number | undefined, fmt: (n: number) => string, higherIsBetter: boolean, self: boolean): string {
  if (!Number.isFinite(value)) return '—';
  if (self || gv === undefined || !Number.isFinite(gv) || gv === 0 || value === 0) return fmt(value);
  const adv = higherIsBetter ? gv / value : value / gv;
  return `${fmt(value)} (${adv.toFixed(2)}×)`;
}

export function mainTable(s: Summary, systems: SystemName[]): string {
  const cols: Subject[] = [...systems, ...(s.latency.has('floor') ? (['floor'] as Subject[]) : [])];
  const rows: string[][] = [];
  const rateRows = (name: string, m: Summary['throughput'], extra: 'fill' | 'drain' | null) => {
    if (m.size === 0) return;
    const gv = m.get('grapevine');
    rows.push([
      name,
      'jobs/s (median)',
      ...cols.map((c) => (c === 'floor' ? '' : cell(m.get(c)?.median ?? NaN, gv?.median, rate(m.get(c)), true, c === 'grapevine'))),
    ]);
    if (extra === 'drain')
      rows.push([
        name,
        'drain s (median)',
        ...cols.map((c) => (c === 'floor' ? '' : cell(m.get(c)?.drainMs ?? NaN, gv?.drainMs, sec, false, c === 'grapevine'))),
      ]);
    if (extra === 'fill') rows.push([name, 'filler write s', ...cols.map((c) => (c === 'floor' ? '' : sec(m.get(c)?.fillMs ?? NaN)))]);
    // In-process smoke trials have no per-system RSS: leave the row out then.
    if ([...m.values()].some((v) => Number.isFinite(v.rssMb))) {
      rows.push([name, 'peak RSS MB', ...cols.map((c) => (c === 'floor' ? '' : int(m.get(c)?.rssMb ?? NaN)))]);
    }
  };
  rateRows('throughput, backlog (tuned)', s.throughput, null);
  rateRows('throughput, backlog (defaults)', s.throughputDefaults, null);
  rateRows('throughput, arriving (tuned)', s.arriving, null);
  rateRows('throughput, arriving (defaults)', s.arrivingDefaults, null);
  if (s.latency.size) {
    const gv = s.latency.get('grapevine');
    for (const q of ['p50', 'p95', 'p99'] as const) {
      rows.push([
        'latency',
        `${q} ms`,
        ...cols.map((c) => cell(s.latency.get(c)?.[q] ?? NaN, gv?.[q], ms, false, c === 'grapevine' || c === 'floor')),
      ]);
    }
    if ([...s.latency.values()].some((v) => Number.isFinite(v.rssMb))) {
      rows.push(['latency', 'peak RSS MB', ...cols.map((c) => int(s.latency.get(c)?.rssMb ?? NaN))]);
    }
  }
  rateRows('cpu', s.cpu, 'drain');
  rateRows('deep queue', s.deep, 'fill');
  return table(['workload', 'metric', ...cols.map((c) => LABEL[c])], rows);
}

/** The footnote for CAPPED, or '' when no trial hit the cap. */
export function cappedNote(s: Summary, capMs: Record<Profile, number>): string {
  const maps = [s.throughput, s.throughputDefaults, s.arriving, s.arrivingDefaults];
  if (!maps.some((m) => [...m.values()].some((st) => st.capped))) return '';
  return `${CAPPED} The clock stopped at the cap (${capMs.tuned / 1000} s tuned, ${capMs.defaults / 1000} s defaults) before the last job finished, in at least one round; such a round's rate is jobs handled ÷ the cap.`;
}

/** Bulk enqueue: every path of every system against graphile-worker's addJobs (the keyed and per-row paths against its own). */
export function enqueueTable(s: Summary): string {
  const base = s.enqueue.find((e) => e.system === 'graphile' && e.path === CLIENT_PATH);
  const jobs = s.enqueue[0]?.jobs ?? 0;
  return table(
    [
      'system',
      `enqueue ${int(jobs)} jobs in bulk`,
      's (median)',
      'jobs/s',
      '× graphile-worker addJobs (keyed, per row: its own)',
      's per round',
    ],
    s.enqueue.map((e) => {
      const against =
        e.path === KEYED_PATH || e.path === SQL_PER_ROW_PATH ? s.enqueue.find((g) => g.system === 'graphile' && g.path === e.path) : base;
      return [
        LABEL[e.system],
        e.path,
        sec(e.medianMs),
        int(e.jobsPerSec),
        against ? (e.jobsPerSec / against.jobsPerSec).toFixed(2) : '—',
        e.rounds.map(sec).join(', '),
      ];
    }),
  );
}

export function scaleTable(s: Summary): string {
  if (!s.scaleout.length) return '';
  return table(
    [
      'supervisor processes',
      'jobs/s (median)',
      'rounds',
      'wasted claim attempts / job',
      'jobs claimed more than once',
      'peak RSS MB per supervisor',
    ],
    s.scaleout.map((x) => [
      String(x.supervisors),
      int(x.median),
      x.rounds.map(int).join(', '),
      x.wastedPerJob.toFixed(4),
      int(x.reclaimed),
      int(x.rssMb),
    ]),
  );
}

export function hostsTable(s: Summary): string {
  if (!s.hosts.length) return '';
  return table(
    [
      'via',
      'supervisor processes (1 thread each)',
      'jobs/s (median)',
      'rounds',
      'server connections (most)',
      'budgets’ sum',
      'empty claims / job',
    ],
    s.hosts.map((h) => [
      h.via,
      String(h.supervisors),
      int(h.median),
      h.rounds.map(int).join(', '),
      int(h.serverConnections),
      int(h.budget),
      h.emptyClaimsPerJob.toFixed(4),
    ]),
  );
}

export function recoveryTable(s: Summary): string {
  const r = s.recovery;
  if (!r) return '';
  const rows = [
    ['thread killed mid-job (process.exit in the handler) → job running again', ms(r.threadMedian), r.threadCrashMs.map(ms).join(', ')],
  ];
  if (r.bootingMs.length) {
    rows.push([
      "the same, while the last crash's replacement thread is still booting (not a target)",
      ms(r.bootingMedian),
      r.bootingMs.map(ms).join(', '),
    ]);
  }
  if (r.killMs.length) {
    rows.push([
      `supervisor SIGKILLed → its job running on another (heartbeat timeout ${r.heartbeatTimeoutMs} ms)`,
      ms(r.killMedian),
      r.killMs.map(ms).join(', '),
    ]);
  }
  return table(['grapevine recovery', 'median ms', 'all trials ms'], rows);
}

export function targetTable(ts: Target[]): string {
  return table(
    ['target', 'result', 'measured'],
    ts.map((t) => [t.name, t.verdict, t.detail]),
  );
}

export function roundsTable(s: Summary, systems: SystemName[]): string {
  const rows: string[][] = [];
  const rates = [
    ['throughput, backlog (tuned)', s.throughput],
    ['throughput, backlog (defaults)', s.throughputDefaults],
    ['throughput, arriving (tuned)', s.arriving],
    ['throughput, arriving (defaults)', s.arrivingDefaults],
    ['cpu', s.cpu],
    ['deep queue', s.deep],
  ] as const;
  for (const [name, m] of rates) {
    for (const sys of systems) {
      const st = m.get(sys);
      if (st) rows.push([name, LABEL[sys], st.rounds.map(jobsPerSec).join(', '), int(st.enqueueMs), int(st.bootMs)]);
    }
  }
  return table(['workload', 'system', 'jobs/s per round', 'bulk enqueue ms (arriving: counted)', 'worker boot ms (not counted)'], rows);
}
