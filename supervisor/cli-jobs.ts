/**
 * `grapevine jobs`, `stats`, `retry`, `reschedule`, `purge` and `cancel`:
 * finding and acting on jobs from the command line, through the control
 * object's job operations. Registered in cli.ts.
 */
import type { ParseArgsConfig } from 'node:util';
import { createClient } from '../src/client.ts';
import type { JobFilter, JobStats } from '../src/control.ts';
import { GrapevineError } from '../src/errors.ts';
import type { Job, JobState } from '../src/job.ts';
import { type CliTools, printable, table, type Values, withControl } from './cli-output.ts';

const FILTER_OPTIONS = {
  state: { type: 'string', multiple: true },
  task: { type: 'string' },
  queue: { type: 'string' },
  key: { type: 'string' },
  group: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  error: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const FILTER_HELP = `  --state S       pending, running, succeeded, failed or cancelled (repeatable)
  --task T        jobs of this task
  --queue Q       jobs of this queue
  --key K         the job holding this key (docs/keys.md)
  --group G       jobs of this group (docs/limits.md)
  --since ISO     created at or after this time, e.g. 2026-01-31T12:00:00Z
  --until ISO     created before this time
  --error TEXT    whose last error contains TEXT (case-insensitive)`;

export const JOBS_HELP: Record<string, string> = {
  jobs: `Usage: grapevine jobs [filter] [--limit N] [--after CURSOR] [--json]

Lists jobs, newest first, a page at a time.

${FILTER_HELP}
  --limit N       jobs per page (default 50, at most 1000)
  --after CURSOR  the page after this one: the cursor the previous page printed
  --json          the page as JSON: { jobs, next }`,
  stats: `Usage: grapevine stats [--json]

Jobs per queue, task and state; how long the oldest due job has waited; the
jobs that finished in the last minute.`,
  retry: `Usage: grapevine retry ID... | grapevine retry --state failed [filter]

Sends failed and cancelled jobs back to pending, due now, with their attempts
allowance again. Running, pending and succeeded jobs are left alone.

${FILTER_HELP}
  --json          the ids retried, as JSON`,
  reschedule: `Usage: grapevine reschedule ID... --run-at ISO

Makes pending jobs due at another time. Jobs that are not pending are left alone.`,
  purge: `Usage: grapevine purge --state succeeded|failed|cancelled [--before ISO] [filter]

Deletes finished jobs for good.

  --before ISO    finished before this time
${FILTER_HELP}`,
  cancel: `Usage: grapevine cancel ID... | grapevine cancel [filter]

Cancels pending jobs at once; a running one is signalled wherever it runs, and
ends as cancelled when its handler stops. With one ID, prints what it became.

${FILTER_HELP}`,
};

export function jobCommands(tools: CliTools): Record<string, (command: string, argv: string[]) => Promise<number>> {
  const { parse, int, usage } = tools;
  return {
    async jobs(command, argv) {
      const { values, positionals } = parse(command, argv, {
        ...FILTER_OPTIONS,
        limit: { type: 'string' },
        after: { type: 'string' },
        json: { type: 'boolean' },
      });
      noPositionals(positionals, command, usage);
      return withControl(values, tools, async (control) => {
        const page = await control.listJobs(filterOf(values), {
          limit: int(values, 'limit') ?? 50,
          after: (values.after as string | undefined) ?? null,
        });
        if (values.json) {
          console.log(JSON.stringify(page, null, 2));
          return 0;
        }
        console.log(formatJobs(page.jobs));
        if (page.next) console.log(`(more: --after ${page.next})`);
        return 0;
      });
    },

    async stats(command, argv) {
      const { values, positionals } = parse(command, argv, { json: { type: 'boolean' } });
      noPositionals(positionals, command, usage);
      return withControl(values, tools, async (control) => {
        const stats = await control.stats();
        console.log(values.json ? JSON.stringify(stats, null, 2) : formatStats(stats));
        return 0;
      });
    },

    async retry(command, argv) {
      const { values, positionals } = parse(command, argv, { ...FILTER_OPTIONS, json: { type: 'boolean' } });
      const target = targetOf(values, positionals, command, usage);
      return withControl(values, tools, async (control) => {
        const ids = await control.retryJobs(target);
        console.log(values.json ? JSON.stringify({ retried: ids }) : `retried ${ids.length} job${ids.length === 1 ? '' : 's'}`);
        return 0;
      });
    },

    async reschedule(command, argv) {
      const { values, positionals } = parse(command, argv, { 'run-at': { type: 'string' } });
      if (positionals.length === 0) throw usage('missing ID: grapevine reschedule ID... --run-at ISO');
      if (!values['run-at']) throw usage('--run-at is required: grapevine reschedule ID... --run-at 2026-01-31T12:00:00Z');
      return withControl(values, tools, async (control) => {
        const ids = await control.rescheduleJobs(positionals, values['run-at'] as string);
        const skipped = positionals.length - ids.length;
        console.log(
          `rescheduled ${ids.length} job${ids.length === 1 ? '' : 's'}${skipped > 0 ? ` (${skipped} not pending, left alone)` : ''}`,
        );
        return 0;
      });
    },

    async purge(command, argv) {
      const { values, positionals } = parse(command, argv, { ...FILTER_OPTIONS, before: { type: 'string' } });
      noPositionals(positionals, command, usage);
      if (!values.state) throw usage('--state is required: grapevine purge --state succeeded|failed|cancelled [--before ISO]');
      return withControl(values, tools, async (control) => {
        const n = await control.purgeJobs({ ...filterOf(values), finishedBefore: values.before as string | undefined });
        console.log(`purged ${n} job${n === 1 ? '' : 's'}`);
        return 0;
      });
    },

    async cancel(command, argv) {
      const { values, positionals } = parse(command, argv, FILTER_OPTIONS);
      const target = targetOf(values, positionals, command, usage);
      if (Array.isArray(target) && target.length === 1) return cancelOne(values, tools, target[0]);
      return withControl(values, tools, async (control) => {
        const { cancelled, cancelling } = await control.cancelJobs(target);
        console.log(
          `cancelled ${cancelled.length} pending job${cancelled.length === 1 ? '' : 's'}; asked the owners of ${cancelling.length} running job${cancelling.length === 1 ? '' : 's'} to abort them`,
        );
        return 0;
      });
    },
  };
}

/** One job: prints what it became (cancelled, cancelling, or the finished state it already had). */
async function cancelOne(values: Values, tools: CliTools, id: string): Promise<number> {
  const db = await tools.database(values);
  const client = createClient({ connectionString: db.connectionString, schema: values.schema as string | undefined });
  try {
    const { state } = await client.cancelJob(id);
    if (state === null) throw new GrapevineError('GRAPEVINE_JOB_NOT_FOUND', `job ${id} does not exist in schema "${client.schema}"`);
    console.log(state);
    return 0;
  } finally {
    await client.close().catch(() => {});
    await db.release();
  }
}

function noPositionals(positionals: string[], command: string, usage: CliTools['usage']): void {
  if (positionals.length > 0) throw usage(`unexpected argument ${JSON.stringify(positionals[0])}: see grapevine ${command} --help`);
}

function filterOf(values: Values): JobFilter {
  const states = values.state as string[] | undefined;
  return {
    state: states?.flatMap((s) => s.split(',')) as JobState[] | undefined,
    task: values.task as string | undefined,
    queue: values.queue as string | undefined,
    key: values.key as string | undefined,
    group: values.group as string | undefined,
    createdAfter: values.since as string | undefined,
    createdBefore: values.until as string | undefined,
    errorContains: values.error as string | undefined,
  };
}

/** Ids, or a filter: never both, and never neither (that would be every job). */
function targetOf(values: Values, positionals: string[], command: string, usage: CliTools['usage']): string[] | JobFilter {
  const filter = filterOf(values);
  const filtered = Object.values(filter).some((v) => v !== undefined);
  if (positionals.length > 0 && filtered) throw usage(`give job ids or a filter, not both: see grapevine ${command} --help`);
  if (positionals.length > 0) return positionals;
  if (!filtered) throw usage(`missing ID or filter: grapevine ${command} ID... or grapevine ${command} --state failed [--task T]`);
  return filter;
}

export function formatJobs(jobs: Job[]): string {
  if (jobs.length === 0) return '(no jobs match)';
  const rows = jobs.map((j) => [
    j.id,
    j.state,
    printable(j.task),
    printable(j.queue),
    `${j.attempts}/${j.maxAttempts}`,
    j.createdAt.toISOString(),
    j.lastError === null ? '' : printable(j.lastError.length > 80 ? `${j.lastError.slice(0, 79)}…` : j.lastError),
  ]);
  return table(['ID', 'STATE', 'TASK', 'QUEUE', 'ATTEMPTS', 'CREATED', 'LAST ERROR'], rows);
}

export function formatStats(stats: JobStats): string {
  const states: JobState[] = ['waiting', 'pending', 'running', 'succeeded', 'failed', 'cancelled'];
  const byPair = new Map<string, { queue: string; task: string; n: Record<string, number> }>();
  for (const c of stats.counts) {
    const key = `${c.queue}\u0000${c.task}`;
    const entry = byPair.get(key) ?? { queue: c.queue, task: c.task, n: {} };
    entry.n[c.state] = c.jobs;
    byPair.set(key, entry);
  }
  const rows = [...byPair.values()].map((e) => [printable(e.queue), printable(e.task), ...states.map((s) => String(e.n[s] ?? 0))]);
  const oldest = stats.oldestPendingSeconds === null ? 'none due' : `${stats.oldestPendingSeconds.toFixed(1)} s`;
  const m = stats.lastMinute;
  return [
    rows.length === 0 ? '(no jobs)' : table(['QUEUE', 'TASK', ...states.map((s) => s.toUpperCase())], rows),
    `oldest due job waiting: ${oldest}`,
    `last minute: ${m.succeeded} succeeded, ${m.failed} failed, ${m.cancelled} cancelled`,
  ].join('\n');
}
