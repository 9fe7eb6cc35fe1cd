/**
 * `grapevine schedule add|list|remove|pause|resume`, and the crontab file of
 * `grapevine run --crontab FILE`. Registered in cli.ts.
 */
import { readFileSync } from 'node:fs';
import { GrapevineError } from '../src/errors.ts';
import { missedOption, parseCrontab } from '../src/schedule/crontab.ts';
import type { Schedule, ScheduleSpec } from '../src/schedule/schedule.ts';
import { missedText } from '../src/schedule/stored.ts';
import { createSchedules, type Schedules } from '../src/schedules.ts';
import type { CliTools } from './cli-output.ts';

export const SCHEDULE_HELP: Record<string, string> = {
  schedule: `Usage: grapevine schedule add NAME CRON TASK [JSON] [--tz ZONE] [--queue Q] [--priority N]
                                [--max-attempts N] [--missed skip|once|backfill:N]
       grapevine schedule list [--json]
       grapevine schedule remove|pause|resume NAME

Recurring jobs, stored in the database: every running supervisor picks up a
change at once, and each tick adds exactly one job.

  add       add a schedule, or change the one named NAME (keeping its pause);
            CRON is 5 fields, 6 with seconds first, or @hourly, @daily, ...
            (quote it); JSON is the payload of every job (default {})
  list      each schedule with its next three run times
  remove    delete a schedule (the jobs it added stay)
  pause     stop adding jobs until resume
  resume    add jobs again; ticks missed while paused follow --missed

  --tz ZONE        IANA time zone the expression is read in (default UTC)
  --queue Q        queue of the jobs (default default)
  --missed POLICY  ticks missed while no supervisor ran: skip (default), once,
                   or backfill:N (the N most recent, oldest first)`,
};

export function scheduleCommands(tools: CliTools): Record<string, (command: string, argv: string[]) => Promise<number>> {
  const { parse, int, usage } = tools;
  return {
    async schedule(command, argv) {
      const { values, positionals } = parse(command, argv, {
        tz: { type: 'string' },
        queue: { type: 'string' },
        priority: { type: 'string' },
        'max-attempts': { type: 'string' },
        missed: { type: 'string' },
        json: { type: 'boolean' },
      });
      const [action, ...args] = positionals;
      if (action === 'add') {
        const [name, cron, task, payload, extra] = args;
        if (!task || extra !== undefined) throw usage('usage: grapevine schedule add NAME CRON TASK [JSON] (quote CRON: "*/5 * * * *")');
        const spec: ScheduleSpec = { name, cron, task };
        if (payload !== undefined) spec.payload = jsonArgument(payload, usage);
        if (values.tz !== undefined) spec.tz = values.tz as string;
        if (values.queue !== undefined) spec.queue = values.queue as string;
        if (values.priority !== undefined) spec.priority = int(values, 'priority');
        if (values['max-attempts'] !== undefined) spec.maxAttempts = int(values, 'max-attempts');
        if (values.missed !== undefined) spec.missed = missedArgument(values.missed as string, usage);
        return withSchedules(tools, values, async (schedules) => {
          await schedules.add(spec);
          tools.say(`schedule "${name}" stored in schema "${schedules.schema}"`);
          return 0;
        });
      }
      if (action === 'list') {
        if (args.length > 0) throw usage('usage: grapevine schedule list [--json]');
        return withSchedules(tools, values, async (schedules) => {
          const list = await schedules.list();
          if (values.json) console.log(JSON.stringify(list, null, 2));
          else console.log(formatList(list));
          return 0;
        });
      }
      if (action === 'remove' || action === 'pause' || action === 'resume') {
        const [name, extra] = args;
        if (!name || extra !== undefined) throw usage(`usage: grapevine schedule ${action} NAME`);
        return withSchedules(tools, values, async (schedules) => {
          await schedules[action](name);
          tools.say(`schedule "${name}" ${action === 'remove' ? 'removed' : action === 'pause' ? 'paused' : 'resumed'}`);
          return 0;
        });
      }
      throw usage(
        `${action === undefined ? 'missing action' : `unknown action ${JSON.stringify(action)}`}: grapevine schedule add|list|remove|pause|resume (see grapevine schedule --help)`,
      );
    },
  };
}

/** The schedules of `grapevine run --crontab FILE`; a bad line stops the start, naming the file and the line. */
export function readCrontab(file: string): Schedule[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new GrapevineError('GRAPEVINE_SCHEDULE_INVALID', `cannot read crontab ${file}: ${(err as Error).message}`);
  }
  return parseCrontab(text, file);
}

function jsonArgument(text: string, usage: (message: string) => Error): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw usage(`the payload ${text} is not JSON (${(err as Error).message}): quote it, e.g. '{"full":true}'`);
  }
}

function missedArgument(text: string, usage: (message: string) => Error) {
  try {
    return missedOption(text);
  } catch (err) {
    throw usage((err as Error).message.replace(/--missed=/g, '--missed '));
  }
}

function formatList(list: Awaited<ReturnType<Schedules['list']>>): string {
  if (list.length === 0) return '(no schedules)';
  return list
    .map((s) => {
      const head = `${s.name}  ${s.cron}  ${s.tz}  ${s.task}  queue=${s.queue}  missed=${missedText(s.missed)}${s.paused ? '  PAUSED' : ''}`;
      const next = s.paused ? '  next: (paused)' : `  next: ${s.nextRuns.map((d) => d.toISOString()).join('  ') || '(none)'}`;
      return `${head}\n${next}`;
    })
    .join('\n');
}

async function withSchedules(
  tools: CliTools,
  values: Record<string, unknown>,
  fn: (schedules: Schedules) => Promise<number>,
): Promise<number> {
  const db = await tools.database(values as Parameters<CliTools['database']>[0]);
  const schedules = createSchedules({
    connectionString: db.connectionString,
    schema: values.schema as string | undefined,
    preparedStatements: db.preparedStatements,
  });
  try {
    return await fn(schedules);
  } finally {
    await schedules.close().catch(() => {});
    await db.release();
  }
}
